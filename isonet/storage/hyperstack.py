"""Open a time-lapse and/or multi-channel image lazily as ``(t, c, z, y, x)``, with its acquisition record.

OME-TIFF (axes from the OME-XML ``DimensionOrder`` and sizes), ImageJ hyperstacks (``frames``,
``channels``, ``slices``) and OME-Zarr images with ``t``/``c`` axes (NGFF ``axes``) are read
through tifffile's series (memory-mapped or chunk-wise) or zarr: indexing one time point and
channel reads only that volume. A file whose axes cannot be told is refused unless they are
declared (``axes="TCZYX"``, the ``--axes`` option or the ``axes`` column of the sample sheet).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import zarr

from isonet.errors import InputError
from isonet.storage.acquisition import Acquisition, ChannelInfo, acquisition_from_imagej, acquisition_from_ome_xml
from isonet.storage.axes import AxesView, IndexedView
from isonet.storage.omezarr import _multiscale_of, read_ome_zarr
from isonet.storage.tiff import _open_tiff_series, _tiff_voxel_size
from isonet.storage.volumes import TIFF_SUFFIXES, ZARR_SUFFIXES

# NGFF axis names (and types) by the letter isonet uses
_NGFF_LETTER = {"t": "T", "time": "T", "c": "C", "channel": "C", "z": "Z", "y": "Y", "x": "X"}


@dataclasses.dataclass
class Hyperstack:
    """An image opened as ``(t, c, z, y, x)``.

    Attributes
    ----------
    path : Path
        The file or store.
    array : AxesView
        Lazy 5D view ``(t, c, z, y, x)``; axes the file lacks have length 1.
    axes : str
        The non-spatial axes the file has, among ``"T"`` and ``"C"`` (e.g. ``"TC"``, ``"C"``, ``""``).
    voxel_size : tuple of 3 float or None
        ``(z, y, x)`` in µm, when the file says.
    acquisition : Acquisition
        What the file's metadata say about the acquisition.
    close : callable
        Releases the file; the arrays must not be used afterwards.
    """

    path: Path
    array: AxesView
    axes: str
    voxel_size: tuple[float, float, float] | None
    acquisition: Acquisition
    close: Callable[[], None]

    @property
    def n_times(self) -> int:
        return int(self.array.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.array.shape[1])

    def volume(self, t: int = 0, c: int = 0) -> IndexedView:
        """Time point ``t`` of channel ``c``: a lazy ``(z, y, x)`` view that reads nothing else."""
        for what, i, n in (("time point", t, self.n_times), ("channel", c, self.n_channels)):
            if not 0 <= int(i) < n:
                raise InputError(f"{self.path}: no {what} {i}; the image has {n} (0 to {n - 1})")
        return IndexedView(self.array, (int(t), int(c)))


def _declared(axes: str | None, shape: tuple[int, ...], path: Path) -> str | None:
    if axes is None:
        return None
    axes = str(axes).strip().upper()
    if len(axes) != len(shape) or len(set(axes)) != len(axes) or not set(axes) <= set("TCZYX") \
            or not set("ZYX") <= set(axes):
        raise InputError(
            f"{path}: declared axes {axes!r} do not fit the image of shape {shape}; give one letter per axis "
            f"from T, C, Z, Y, X, each at most once and Z, Y, X included (e.g. {'TCZYX'[5 - len(shape):]!r})"
        )
    return axes


def _undeterminable(path: Path, shape: tuple[int, ...], axes: str | None) -> InputError:
    said = f" (read as {axes!r})" if axes else ""
    return InputError(
        f"{path}: cannot tell the axes of the image of shape {shape}{said}; declare them with "
        f"--axes (the `axes` column of the sample sheet), one letter per axis, e.g. --axes {'TCZYX'[5 - len(shape):]}"
        if 3 <= len(shape) <= 5 else
        f"{path}: cannot tell the axes of the image of shape {shape}{said}; isonet reads images with axes "
        "among T, C, Z, Y, X: export it as OME-TIFF or an ImageJ hyperstack"
    )


def _resolve_axes(file_axes: str | None, shape: tuple[int, ...], path: Path) -> str:
    """The file's axes as letters of TCZYX, with other length-1 axes renamed apart (the view drops them).

    A plain stack of planes (tifffile's ``I`` or ``Q`` axis) reads as z, as for a 3D file.
    """
    axes = (file_axes or "").upper()
    if len(axes) != len(shape):
        raise _undeterminable(path, shape, file_axes)
    if "S" in axes and shape[axes.index("S")] > 1:
        raise InputError(
            f"{path}: image has {shape[axes.index('S')]} samples per pixel (RGB, axes {axes}); isonet needs "
            "grayscale channels, save it with one channel per plane (photometric minisblack)"
        )
    known = [a for a in axes if a in "TCZYX"]
    unknown = [i for i, a in enumerate(axes) if a not in "TCZYX" and shape[i] > 1]
    if axes[-2:] != "YX" or len(set(known)) != len(known):
        raise _undeterminable(path, shape, file_axes)
    if "Z" not in axes and len(unknown) == 1:  # a plain stack of planes
        axes = axes[:unknown[0]] + "Z" + axes[unknown[0] + 1:]
        unknown = []
    if unknown or "Z" not in axes:
        raise _undeterminable(path, shape, file_axes)
    spare = (a for a in "ABDEFGHIJKLMNOPQRSUVW" if a not in axes)
    return "".join(a if a in "TCZYX" else next(spare) for a in axes)


def _open_tiff_hyperstack(path: Path, axes: str | None) -> Hyperstack:
    tif, series, raw, close = _open_tiff_series(path)
    try:
        shape = tuple(int(s) for s in raw.shape)
        declared = _declared(axes, shape, path)
        letters = declared or _resolve_axes(series.axes, shape, path)
        view = AxesView(raw, letters)
        voxel_size = _tiff_voxel_size(tif)
        if tif.is_ome and tif.ome_metadata:
            acquisition = acquisition_from_ome_xml(tif.ome_metadata)
        elif tif.is_imagej:
            acquisition = acquisition_from_imagej(tif.imagej_metadata or {}, voxel_size, view.shape[1])
        else:
            acquisition = Acquisition(voxel_size=voxel_size)
        if acquisition.voxel_size is None and voxel_size is not None:
            acquisition = dataclasses.replace(acquisition, voxel_size=voxel_size)
        file_axes = "".join(a for a in "TC" if a in letters)
        return Hyperstack(path, view, file_axes, voxel_size, acquisition, close)
    except Exception:
        close()
        raise


def _ngff_axes(path: Path) -> tuple[list[dict], dict, dict]:
    group = zarr.open_group(path, mode="r")
    attrs = dict(group.attrs)
    multiscale = _multiscale_of(attrs) or {}
    axes = [a if isinstance(a, dict) else {"name": a} for a in multiscale.get("axes", [])]
    return axes, multiscale, attrs


def _zarr_acquisition(attrs: dict, axes: list[dict], multiscale: dict, voxel_size, n_channels: int) -> Acquisition:
    provenance = attrs.get("isonet")
    stored = provenance.get("acquisition") if isinstance(provenance, dict) else None
    if isinstance(stored, dict):
        try:
            return Acquisition.from_dict(stored)
        except (TypeError, ValueError):
            pass
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs
    omero = ome.get("omero") if isinstance(ome, dict) else None
    labels = [c.get("label") for c in (omero or {}).get("channels", []) if isinstance(c, dict)]
    channels = tuple(ChannelInfo(name=labels[i] if i < len(labels) and labels[i] else None)
                     for i in range(n_channels))
    time_step = None
    names = [_NGFF_LETTER.get(str(a.get("name", "")).lower()) for a in axes]
    if "T" in names:
        datasets = multiscale.get("datasets") or [{}]
        for t in datasets[0].get("coordinateTransformations") or []:
            if isinstance(t, dict) and t.get("type") == "scale" and len(t.get("scale", [])) == len(names):
                unit = axes[names.index("T")].get("unit", "second")
                factor = {"second": 1.0, "millisecond": 1e-3, "minute": 60.0, "hour": 3600.0}.get(unit)
                value = float(t["scale"][names.index("T")])
                time_step = value * factor if factor is not None and value > 0 else None
    return Acquisition(channels=channels, voxel_size=voxel_size, time_increment_s=time_step, source="OME-Zarr")


def _open_zarr_hyperstack(path: Path, axes: str | None) -> Hyperstack:
    array, voxel_size = read_ome_zarr(path)
    shape = tuple(int(s) for s in array.shape)
    declared = _declared(axes, shape, path)
    try:
        ngff_axes, multiscale, attrs = _ngff_axes(path)
    except Exception:  # a plain zarr array: no group metadata
        ngff_axes, multiscale, attrs = [], {}, {}
    if declared is None:
        letters = [_NGFF_LETTER.get(str(a.get("name", "")).lower()) for a in ngff_axes]
        if not ngff_axes and len(shape) == 3:
            letters = list("ZYX")
        if len(letters) != len(shape) or None in letters:
            raise _undeterminable(path, shape, "".join(a or "?" for a in letters) or None)
        spatial = "".join(a for a in letters if a in "ZYX")
        if spatial != "ZYX":
            raise InputError(
                f"{path}: spatial axes are stored in the order {', '.join(spatial.lower())}; isonet reads "
                "z, y, x: transpose the image (or export it as TIFF) and convert it again"
            )
        declared = "".join(letters)  # type: ignore[arg-type]
    view = AxesView(array, declared)
    acquisition = _zarr_acquisition(attrs, ngff_axes, multiscale, voxel_size, view.shape[1])
    xml = _bioformats2raw_xml(path)
    if acquisition.source == "OME-Zarr" and xml is not None:
        from_xml = acquisition_from_ome_xml(xml.read_text(encoding="utf-8", errors="replace"))
        acquisition = dataclasses.replace(
            from_xml, voxel_size=voxel_size or from_xml.voxel_size,
            time_increment_s=acquisition.time_increment_s or from_xml.time_increment_s,
            channels=tuple(dataclasses.replace(c, name=c.name or acquisition.channel(i).name)
                           for i, c in enumerate(from_xml.channels)) or acquisition.channels,
        )
    return Hyperstack(path, view, "".join(a for a in "TC" if a in declared), voxel_size, acquisition, lambda: None)


def _bioformats2raw_xml(path: Path) -> Path | None:
    """The OME-XML that bioformats2raw writes next to the images (``OME/METADATA.ome.xml``), if any."""
    for root in (path, path.parent):
        candidate = root / "OME" / "METADATA.ome.xml"
        if candidate.is_file():
            return candidate
    return None


def open_hyperstack(path: str | os.PathLike, axes: str | None = None) -> Hyperstack:
    """Open an image lazily and read-only as ``(t, c, z, y, x)``, with its acquisition metadata.

    Parameters
    ----------
    path : str or path
        OME-TIFF, ImageJ hyperstack or plain TIFF (``.tif``, ``.tiff``), or OME-Zarr (``.zarr``)
        image with NGFF axes.
    axes : str, optional
        The file's axes, one letter per axis from T, C, Z, Y, X (e.g. ``"TCZYX"``, ``"CZYX"``);
        overrides what the file says. Needed when the file does not say (a plain TIFF of more
        than three dimensions, a plain zarr array of more than three).

    Returns
    -------
    hyperstack : Hyperstack
        ``array`` reads only what is indexed; ``volume(t, c)`` is one 3D volume.

    Raises
    ------
    InputError
        Missing, empty, damaged or unsupported file; axes that cannot be told (the message says
        how to declare them); declared axes that do not fit the image.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; check the path")
    name = path.name.lower()
    if path.is_dir() or name.endswith(ZARR_SUFFIXES):
        return _open_zarr_hyperstack(path, axes)
    if name.endswith(TIFF_SUFFIXES):
        if path.stat().st_size == 0:
            raise InputError(f"{path}: file is empty (0 bytes); copy or export the image again")
        return _open_tiff_hyperstack(path, axes)
    raise InputError(
        f"{path}: unsupported file type {path.suffix!r}; isonet reads TIFF (.tif, .tiff, .ome.tif) and OME-Zarr (.zarr)"
    )

