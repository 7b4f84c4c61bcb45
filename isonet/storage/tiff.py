"""TIFF: open (ImageJ, OME or plain; memory-mapped or chunk-wise) and export plane by plane."""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr
import zarr.codecs

from isonet.errors import InputError
from isonet.storage.atomic import atomic_path
from isonet.storage.axes import AxesView, _squeeze_to_zyx
from isonet.storage.voxels import (
    _length_in_um,
    _one_line,
    _valid_voxel_size,
    check_voxel_size,
)

logger = logging.getLogger(__name__)

# dtypes that ImageJ opens natively; anything else is exported as OME-TIFF
IMAGEJ_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))

# bytes of z-planes export_tiff reads at once (one plane when a plane is larger)
EXPORT_SLAB_BYTES = 64 * 2**20


def _ome_voxel_size(ome_xml: str) -> tuple[float, float, float] | None:
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes = []
    for ax in "ZYX":
        value = pixels.get(f"PhysicalSize{ax}")
        if value is None:
            return None
        try:
            sizes.append(_length_in_um(float(value), pixels.get(f"PhysicalSize{ax}Unit", "µm")))
        except ValueError:
            return None
    return _valid_voxel_size(sizes) if None not in sizes else None


def _imagej_voxel_size(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    meta = tif.imagej_metadata or {}
    unit = meta.get("unit")
    spacing = meta.get("spacing")
    if unit is None or spacing is None:
        return None
    tags = tif.pages.first.tags
    sizes = []
    for name in ("YResolution", "XResolution"):
        tag = tags.get(name)
        if tag is None:
            return None
        num, den = tag.value
        if not num or not den:
            return None
        sizes.append(den / num)  # resolution is pixels per unit
    out = [_length_in_um(v, str(unit)) for v in (float(spacing), *sizes)]
    return _valid_voxel_size(out) if None not in out else None


def _tiff_voxel_size(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    if tif.is_ome and tif.ome_metadata:
        vs = _ome_voxel_size(tif.ome_metadata)
        if vs is not None:
            return vs
    if tif.is_imagej:
        return _imagej_voxel_size(tif)
    return None


class _TiffComplaints(logging.Handler):
    """Collects what tifffile logs while it parses a file (it logs, rather than raises, many defects)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_complaints() -> Iterator[_TiffComplaints]:
    log = logging.getLogger("tifffile")
    handler, propagate = _TiffComplaints(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def _check_complete(tif: tifffile.TiffFile, series: Any, complaints: list[str], path: Path) -> None:
    """Refuse a file whose structure points past its end or holds fewer images than its metadata says."""
    # offsets at or past the end of the file: the file was cut short (or its IFDs are damaged)
    broken = [m for m in complaints if "offset" in m]
    if broken:
        detail = _one_line(broken[0].split("> ", 1)[-1])
        raise InputError(
            f"{path}: TIFF structure is damaged ({detail}); the file is probably truncated, copy or export it again"
        )
    if tif.is_imagej:
        images = (tif.imagej_metadata or {}).get("images")
        shape = tuple(series.shape)
        planes = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        if isinstance(images, int) and series.kind != "imagej" and images > planes:
            raise InputError(
                f"{path}: ImageJ metadata lists {images} images but the file holds {planes}; "
                "the file is probably truncated, copy or export it again"
            )


def _open_tiff_series(path: Path) -> tuple[tifffile.TiffFile, Any, Any, Callable[[], None]]:
    """The file, its first series and that series' pixels as a lazy array in the series' axes."""
    tif = None
    with _tifffile_complaints() as complaints:
        try:
            tif = tifffile.TiffFile(path)  # opened "rb": never modified
            series = tif.series[0] if tif.series else None
        except Exception as err:  # TiffFileError, struct.error, ValueError... for broken files
            if tif is not None:
                tif.close()
            raise InputError(
                f"{path}: not a readable TIFF file ({_one_line(err)}); check that the file is complete and not corrupted"
            ) from err
    stores: list[Any] = []

    def close() -> None:
        for store in stores:
            store.close()
        tif.close()

    try:
        if series is None:
            raise InputError(f"{path}: TIFF file holds no image; check that the file is complete")
        _check_complete(tif, series, complaints.messages, path)
        for message in complaints.messages:
            logger.warning("%s: tifffile: %s", path, message)
        if series.dataoffset is not None and series.transform is None and series.dtype is not None:
            # uncompressed and contiguous: map the file, the OS pages in only what is sliced
            dtype = np.dtype(tif.byteorder + series.dtype.char)
            array: Any = np.memmap(path, dtype=dtype, mode="r", offset=series.dataoffset, shape=series.shape)
        else:
            stores.append(series.aszarr(level=0))
            array = zarr.open_array(stores[0], mode="r")
        return tif, series, array, close
    except InputError:
        close()
        raise
    except Exception as err:
        close()
        raise InputError(
            f"{path}: cannot read the TIFF image data ({_one_line(err)}); check that the file is complete"
        ) from err


def _open_tiff(path: Path) -> tuple[Any, tuple[float, float, float] | None, Callable[[], None]]:
    tif, series, array, close = _open_tiff_series(path)
    try:
        return _squeeze_to_zyx(array, series.axes, path), _tiff_voxel_size(tif), close
    except Exception:
        close()
        raise


def _slab_planes(shape: Sequence[int], itemsize: int, chunks: Sequence[int] | None) -> int:
    """z-planes per slab of an export: within ``EXPORT_SLAB_BYTES``, whole z chunks when they fit."""
    planes = max(1, EXPORT_SLAB_BYTES // (int(shape[1]) * int(shape[2]) * itemsize))
    cz = int(chunks[0]) if chunks else 1
    return planes // cz * cz if planes >= cz else planes


def drop_mapped_pages(array: Any) -> None:
    """Let the OS drop the pages of a memory-mapped TIFF read so far (a no-op for other arrays).

    The pages of a file mapping stay in the process's resident memory once read, so streaming a
    whole mapped file would end with all of it resident; after this, later reads map them again.
    """
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def read_mapped(array: Any, selection: Any, dtype: Any = None) -> np.ndarray:
    """``array[selection]`` in memory; from a memory-mapped TIFF copied one plane at a time, its pages let go after each.

    The kernel maps a file's cached pages in whole folios (up to 2 MiB), not in the bytes
    touched: a block of many planes read through the mapping in one go keeps every plane's
    rows, rounded up to whole folios, resident until the pages are dropped (a row of 32 planes x
    256 rows x 2048 uint16, 32 MiB: 88 MiB mapped), so the peak would follow the planes' width.
    Copied plane by plane (along the first axis), at most one plane's folios are mapped at a
    time. Other arrays are read as they are.

    Examples
    --------
    >>> read_mapped(np.arange(24).reshape(2, 3, 4), (slice(1, 2), slice(0, 2)), np.float32).tolist()
    [[[12.0, 13.0, 14.0, 15.0], [16.0, 17.0, 18.0, 19.0]]]
    """
    view = array[selection]
    dtype = np.dtype(view.dtype if dtype is None else dtype)
    if getattr(array, "_mmap", None) is None:
        return np.asarray(view).astype(dtype, copy=False)
    out = np.empty(view.shape, dtype)
    for i in range(view.shape[0]) if view.ndim else [Ellipsis]:
        out[i] = view[i]
        drop_mapped_pages(array)
    return out


def export_tiff(array: Any, path: str | os.PathLike, voxel_size: Sequence[float], chunk_planes: int | None = None,
                tiff_format: str = "auto") -> Path:
    """Write a 3D volume to TIFF plane by plane, atomically, with its voxel size in µm.

    Reads ``chunk_planes`` z-planes at a time from ``array`` (e.g. a zarr array) and streams them
    as TIFF pages, so memory holds one slab of at most ``EXPORT_SLAB_BYTES`` (one plane when a
    plane is larger), whatever the depth of the volume.

    Parameters
    ----------
    array : array-like, shape (z, y, x)
        Numpy-sliceable (zarr array, numpy array, :class:`SqueezedArray`).
    path : str or path
        Destination ``.tif``.
    voxel_size : sequence of 3 float
        ``(z, y, x)`` in µm.
    chunk_planes : int, optional
        z-planes read per slab; default: as many as fit ``EXPORT_SLAB_BYTES``, a multiple of the
        array's z chunk when more than one chunk fits (no chunk is then decoded twice).
    tiff_format : {"auto", "imagej", "ome"}
        ``"imagej"``: ImageJ hyperstack that Fiji opens natively with µm calibration (uint8,
        uint16, float32 only; data above 4 GB are stored contiguously after one IFD, the way
        ImageJ itself writes them). ``"ome"``: OME-TIFF as BigTIFF with ``PhysicalSize*`` in µm
        (any dtype; Fiji opens it through Bio-Formats). ``"auto"``: ImageJ when the dtype allows,
        else OME.

    Returns
    -------
    path : Path

    Raises
    ------
    InputError
        ``"imagej"`` asked for a dtype ImageJ cannot hold, or the destination is not writable.
    """
    path = Path(path)
    vz, vy, vx = check_voxel_size(voxel_size, path)
    shape = tuple(int(s) for s in array.shape)
    if len(shape) != 3:
        raise ValueError(f"export_tiff needs a 3D (z, y, x) array, got shape {shape}")
    dtype = np.dtype(array.dtype).newbyteorder("<")
    if tiff_format not in ("auto", "imagej", "ome"):
        raise ValueError(f"tiff_format must be 'auto', 'imagej' or 'ome', got {tiff_format!r}")
    imagej = np.dtype(dtype.newbyteorder("=")) in IMAGEJ_DTYPES
    if tiff_format == "imagej" and not imagej:
        raise InputError(f"{path}: ImageJ TIFF cannot hold {dtype.name} data; export as OME-TIFF (tiff_format='ome')")
    imagej = imagej and tiff_format != "ome"

    if chunk_planes is None:
        chunk_planes = _slab_planes(shape, dtype.itemsize, getattr(array, "chunks", None))

    chunks = getattr(array, "chunks", None) or shape
    cy, cx = int(chunks[1]), int(chunks[2])

    def planes() -> Iterator[np.ndarray]:
        for z0 in range(0, shape[0], chunk_planes):
            z1 = min(z0 + chunk_planes, shape[0])
            slab = np.empty((z1 - z0, *shape[1:]), dtype)
            # one lateral chunk at a time: a zarr read decodes only those chunks, not a whole row of them
            for y0 in range(0, shape[1], cy):
                for x0 in range(0, shape[2], cx):
                    tile = (slice(z0, z1), slice(y0, y0 + cy), slice(x0, x0 + cx))
                    slab[(slice(None), *tile[1:])] = np.asarray(array[tile])
            # copies: tifffile keeps the first plane it is given, and a view would keep its slab alive
            for plane in slab:
                yield plane.copy()
            del slab, plane  # the last plane is a view of the slab too

    if imagej:
        options: dict[str, Any] = dict(
            imagej=True, bigtiff=False,
            write=dict(resolution=(1.0 / vx, 1.0 / vy),
                       metadata={"axes": "ZYX", "spacing": vz, "unit": "um"}),
        )
    else:
        metadata = {"axes": "ZYX"}
        for ax, v in zip("ZYX", (vz, vy, vx)):
            metadata[f"PhysicalSize{ax}"] = v
            metadata[f"PhysicalSize{ax}Unit"] = "µm"
        options = dict(ome=True, bigtiff=True, write=dict(metadata=metadata))
    write_options = options.pop("write")
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, byteorder="<", **options) as writer:
            writer.write(planes(), shape=shape, dtype=dtype, photometric="minisblack", **write_options)
    return path


def export_hyperstack_tiff(array: Any, axes: Sequence[str], path: str | os.PathLike, voxel_size: Sequence[float],
                           time_step_s: float | None = None, chunk_planes: int = 64) -> Path:
    """Write an image with t and/or c axes as an ImageJ hyperstack TIFF, slab by slab, atomically.

    Fiji opens the file as one multi-channel time-lapse (``TZCYX``) with its µm calibration and
    frame interval. Memory holds ``chunk_planes`` planes of every channel of one time point.

    Parameters
    ----------
    array : array-like
        Numpy-sliceable, axes ``axes`` (e.g. ``(t, c, z, y, x)``).
    axes : sequence of str
        Axis names of ``array`` among ``t``, ``c``, ``z``, ``y``, ``x`` (z, y, x last).
    path : str or path
        Destination ``.tif``.
    voxel_size : sequence of 3 float
        ``(z, y, x)`` in µm.
    time_step_s : float, optional
        Seconds between time points (ImageJ ``finterval``).
    chunk_planes : int
        z-planes read per slab.

    Returns
    -------
    path : Path

    Raises
    ------
    InputError
        A dtype ImageJ cannot hold (uint8, uint16, float32 only).
    """
    path = Path(path)
    vz, vy, vx = check_voxel_size(voxel_size, path)
    names = [str(a).lower() for a in axes]
    if names[-3:] != ["z", "y", "x"] or not set(names[:-3]) <= {"t", "c"} or len(names) != array.ndim:
        raise ValueError(f"axes {names} must be some of t, c followed by z, y, x, one per axis of {array.shape}")
    letters = "".join(names).upper()
    view = AxesView(array, letters)
    n_t, n_c, n_z = view.shape[:3]
    dtype = np.dtype(array.dtype).newbyteorder("<")
    if np.dtype(dtype.newbyteorder("=")) not in IMAGEJ_DTYPES:
        raise InputError(f"{path}: ImageJ hyperstacks cannot hold {dtype.name} data; convert to float32 first")

    def planes() -> Iterator[np.ndarray]:  # ImageJ order: t, z, c
        for t in range(n_t):
            for z0 in range(0, n_z, chunk_planes):
                slab = np.asarray(view[t, :, z0:min(z0 + chunk_planes, n_z)]).astype(dtype, copy=False)
                for z in range(slab.shape[1]):
                    yield from slab[:, z]

    metadata: dict[str, Any] = {"axes": "TZCYX", "spacing": vz, "unit": "um"}
    if time_step_s:
        metadata.update(finterval=float(time_step_s), tunit="sec")
    shape = (n_t, n_z, n_c) + tuple(view.shape[3:])
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, byteorder="<", imagej=True, bigtiff=False) as writer:
            writer.write(planes(), shape=shape, dtype=dtype, photometric="minisblack", resolution=(1.0 / vx, 1.0 / vy),
                         metadata=metadata)
    return path
