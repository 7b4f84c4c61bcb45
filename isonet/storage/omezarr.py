"""OME-Zarr (NGFF 0.5, Zarr v3) images: create, write metadata, read, build the pyramid.

Every array written here is zstd-compressed with a crc32c checksum per chunk and stores every
chunk; reads go through :class:`~isonet.storage.integrity.CheckedArray`, so a damaged chunk ends
a stage with one line naming the store, the array and the chunk key.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.codecs

from isonet.errors import InputError
from isonet.storage.atomic import atomic_path, write_json
from isonet.storage.axes import IndexedView
from isonet.storage.integrity import (
    WRITE_CONFIG,
    CheckedArray,
    checksummed_compressors,
    has_checksums,
    rewrite_hint,
)
from isonet.storage.voxels import (
    _length_in_um,
    _one_line,
    _triple,
    _valid_voxel_size,
    check_voxel_size,
)

NGFF_VERSION = "0.5"
SPATIAL_AXES = ("z", "y", "x")

LABEL_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a label image's name: a path segment of the labels group

# bytes of level i-1 that build_pyramid reads (and reduces) in one block
PYRAMID_BLOCK_BYTES = 32 * 2**20



def _level_transforms(voxel_size: Sequence[float], level: int, factor: tuple[int, int, int],
                      method: str, leading_scale: Sequence[float] = ()) -> list[dict]:
    scale = [float(f"{v * f**level:.10g}") for v, f in zip(voxel_size, factor)]
    transforms: list[dict] = [{"type": "scale", "scale": [float(s) for s in leading_scale] + scale}]
    if level > 0 and method == "mean":
        # a block mean sits at the centre of its block, half a block minus half a voxel in
        translation = [float(f"{v * (f**level - 1) / 2:.10g}") for v, f in zip(voxel_size, factor)]
        transforms.append({"type": "translation", "translation": [0.0] * len(leading_scale) + translation})
    return transforms


def time_axis(step_s: float | None = None) -> dict:
    """NGFF description of a time axis: ``scale`` is the time step in seconds; unitless 1 when unknown.

    Examples
    --------
    >>> time_axis(30.0)
    {'name': 't', 'type': 'time', 'unit': 'second', 'scale': 30.0}
    >>> time_axis()
    {'name': 't', 'type': 'time', 'scale': 1.0}
    """
    if not step_s:
        return {"name": "t", "type": "time", "scale": 1.0}
    return {"name": "t", "type": "time", "unit": "second", "scale": float(step_s)}


def channel_axis() -> dict:
    """NGFF description of a channel axis."""
    return {"name": "c", "type": "channel", "scale": 1.0}


_COLORS = ("00FF00", "FF00FF", "00FFFF", "FFFF00", "FF0000", "0000FF", "FFFFFF")


def omero_channels(names: Sequence[str], ranges: Sequence[tuple[float, float]]) -> dict:
    """NGFF ``omero`` metadata naming the channels, each with a display window over its data range.

    Examples
    --------
    >>> omero_channels(["GFP"], [(0, 100)])["channels"][0]["label"]
    'GFP'
    """
    channels = []
    for i, (name, (low, high)) in enumerate(zip(names, ranges)):
        channels.append({
            "label": name, "color": _COLORS[i % len(_COLORS)], "active": True,
            "window": {"min": float(low), "max": float(high), "start": float(low), "end": float(high)},
        })
    return {"channels": channels}


def _axis_entry(axis: dict) -> dict:
    return {k: v for k, v in axis.items() if k in ("name", "type", "unit")}


def write_ome_zarr_metadata(group: zarr.Group, voxel_size: Sequence[float], n_levels: int,
                            name: str = "image", factor: int | Sequence[int] = 2, method: str = "mean",
                            provenance: dict | None = None, leading_axes: Sequence[dict] = (),
                            omero: dict | None = None) -> dict:
    """Write NGFF 0.5 multiscales metadata (and optional provenance) into a group's attributes.

    Parameters
    ----------
    group : zarr.Group
        Zarr v3 group holding levels ``"0"``, ``"1"``, ...
    voxel_size : sequence of 3 float
        Level-0 voxel size ``(z, y, x)`` in µm.
    n_levels : int
        Number of resolution levels described.
    name : str
        Name of the multiscale image.
    factor : int or sequence of 3 int
        Downsampling factor between consecutive levels, per axis.
    method : {"mean", "nearest"}
        How lower levels were computed. Levels of a block mean get a translation of half a block
        minus half a voxel, so that they overlay level 0 exactly; ``"nearest"`` levels do not.
    provenance : dict, optional
        Free-form JSON-serializable record stored under the ``"isonet"`` attribute; left as it
        is when None.
    leading_axes : sequence of dict
        Axes before z, y, x (:func:`time_axis`, :func:`channel_axis`): ``name``, ``type``,
        optional ``unit`` and ``scale`` (same at every level).
    omero : dict, optional
        Channel rendering metadata (``{"channels": [{"label": ..., "color": ..., "window": ...}]}``),
        written as ``ome["omero"]`` (channel names in napari and other viewers).

    Returns
    -------
    ome : dict
        The ``"ome"`` attribute written.
    """
    factor = _triple(factor, "factor")
    vs = [float(v) for v in voxel_size]
    leading_scale = [float(a.get("scale", 1.0)) for a in leading_axes]
    multiscale: dict[str, Any] = {
        "name": name,
        "axes": [_axis_entry(a) for a in leading_axes]
        + [{"name": a, "type": "space", "unit": "micrometer"} for a in SPATIAL_AXES],
        "datasets": [
            {"path": str(i), "coordinateTransformations": _level_transforms(vs, i, factor, method, leading_scale)}
            for i in range(n_levels)
        ],
    }
    if n_levels > 1:
        multiscale["type"] = method
    ome: dict[str, Any] = {"version": NGFF_VERSION, "multiscales": [multiscale]}
    if omero is not None:
        ome["omero"] = omero
    attrs: dict[str, Any] = {"ome": ome}
    if provenance is not None:
        attrs["isonet"] = dict(provenance)
    group.update_attributes(attrs)
    return ome


def create_ome_zarr(path: str | os.PathLike, shape: Sequence[int], dtype: Any, chunks: Sequence[int],
                    voxel_size: Sequence[float], name: str = "image", compression_level: int = 3,
                    shards: Sequence[int] | None = None, provenance: dict | None = None,
                    overwrite: bool = False, leading_axes: Sequence[dict] = (),
                    omero: dict | None = None) -> tuple[zarr.Group, zarr.Array]:
    """Create an empty single-level OME-Zarr (Zarr v3, NGFF 0.5) image, zstd-compressed and checksummed.

    Each chunk is compressed with zstd and followed by its crc32c checksum (the Zarr v3
    ``crc32c`` codec); every chunk is stored, empty ones included, so that an absent chunk file
    is detectable damage (:class:`isonet.storage.integrity.CheckedArray`, ``isonet verify``).

    Parameters
    ----------
    path : str or path
        Store to create (a directory). Write it inside :func:`atomic_path` for atomicity.
    shape : sequence of int
        ``(z, y, x)``, preceded by the lengths of ``leading_axes``.
    dtype : numpy dtype-like
        Stored in native byte order.
    chunks : sequence of int
        Chunk shape, as ``shape``; clipped to ``shape``.
    voxel_size : sequence of 3 float
        ``(z, y, x)`` in µm.
    name : str
        Name of the multiscale image.
    compression_level : int
        zstd level (1-22).
    shards : sequence of 3 int, optional
        Shard shape (a multiple of ``chunks``); one writer per shard.
    provenance : dict, optional
        Stored under the group attribute ``"isonet"`` (an empty dict when None: the attribute
        marks the store as written by isonet).
    overwrite : bool
        Replace an existing store at ``path`` instead of raising.
    leading_axes : sequence of dict
        Axes before z, y, x, e.g. ``[time_axis(30.0), channel_axis()]`` for a ``(t, c, z, y, x)``
        image (see :func:`write_ome_zarr_metadata`).
    omero : dict, optional
        Channel names and rendering, see :func:`write_ome_zarr_metadata`.

    Returns
    -------
    group : zarr.Group
    level0 : zarr.Array
        The full-resolution array, at ``group["0"]``.

    Raises
    ------
    InputError
        When ``path`` exists and ``overwrite`` is False, or ``voxel_size`` is not valid.

    Examples
    --------
    >>> import tempfile
    >>> g, a = create_ome_zarr(Path(tempfile.mkdtemp()) / "a.zarr", (4, 8, 8), "uint16", (2, 8, 8),
    ...                        (2.0, 0.5, 0.5))
    >>> a.shape, a.chunks, g.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    ((4, 8, 8), (2, 8, 8), [{'type': 'scale', 'scale': [2.0, 0.5, 0.5]}])
    """
    path = Path(path)
    vs = check_voxel_size(voxel_size, path)
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; remove it or choose another output path")
    shape = tuple(int(s) for s in shape)
    names = [a["name"] for a in leading_axes] + list(SPATIAL_AXES)
    if len(shape) != len(names) or len(tuple(chunks)) != len(names):
        raise ValueError(f"shape {shape} and chunks {tuple(chunks)} must have one entry per axis {names}")
    chunks = tuple(max(1, min(int(c), s)) for c, s in zip(chunks, shape))
    dtype = np.dtype(dtype).newbyteorder("=")
    group = zarr.open_group(path, mode="w", zarr_format=3)
    level0 = group.create_array(
        "0", shape=shape, dtype=dtype, chunks=chunks, shards=None if shards is None else tuple(shards),
        compressors=checksummed_compressors(compression_level), fill_value=0,
        dimension_names=names, config=WRITE_CONFIG,
    )
    write_ome_zarr_metadata(group, vs, 1, name=name, provenance=dict(provenance or {}),
                            leading_axes=leading_axes, omero=omero)
    return group, level0


@contextlib.contextmanager
def create_labels(image_path: str | os.PathLike, name: str, shape: Sequence[int], chunks: Sequence[int],
                  voxel_size: Sequence[float], dtype: Any = np.int32, compression_level: int = 3,
                  provenance: dict | None = None) -> Iterator[zarr.Array]:
    """Write a label image of an OME-Zarr image as NGFF labels: ``<image_path>/labels/<name>``.

    The label image is an OME-Zarr image of its own (checksummed like :func:`create_ome_zarr`)
    with the image's axes, as many resolution levels as the image (nearest-neighbour
    downsampling, factor 2), ``image-label`` metadata pointing at the image, and is listed in the
    image's ``labels`` group (NGFF 0.5), so viewers (napari-ome-zarr, ome-zarr-py) overlay it on
    the image as a labels layer. An image with axes before z, y, x (``t``, ``c``) gets labels
    with the same axes (and the image's time step); each of their lengths is the image's, or 1
    where the labels do not vary along it, as NGFF asks: the labels of one channel of a
    ``(t, c, z, y, x)`` time-lapse have shape ``(t, 1, z, y, x)`` (napari-ome-zarr drops that
    channel axis and overlays them on every channel). It is written under a temporary name and
    moved into place when the ``with`` block ends cleanly (an existing label image of that name
    is replaced); the listing is updated after. The image is not changed: its arrays and attributes stay, and so does the
    modification time of its directory (make-like tools such as Snakemake would otherwise take
    the image for newer than what was made from it).

    Parameters
    ----------
    image_path : str or path
        The OME-Zarr image the labels annotate.
    name : str
        Name of the label image, e.g. ``"nuclei"``.
    shape, chunks, voxel_size, dtype, compression_level, provenance
        As for :func:`create_ome_zarr`; ``voxel_size`` is that of the image's level 0, and
        ``shape`` has one entry per axis of the image: the image's length, or 1.

    Yields
    ------
    level0 : zarr.Array
        The full-resolution label array, to fill inside the ``with`` block.

    Examples
    --------
    >>> import tempfile
    >>> image = Path(tempfile.mkdtemp()) / "image.ome.zarr"
    >>> _ = create_ome_zarr(image, (2, 4, 4), "uint16", (2, 4, 4), (1.0, 0.5, 0.5))
    >>> with create_labels(image, "cells", (2, 4, 4), (2, 4, 4), (1.0, 0.5, 0.5)) as labels:
    ...     labels[:] = 1
    >>> zarr.open_group(image / "labels").attrs["ome"]["labels"]
    ['cells']
    >>> zarr.open_group(image / "labels" / "cells").attrs["ome"]["image-label"]
    {'source': {'image': '../../'}}
    """
    image_path = Path(image_path)
    multiscale = None
    if (image_path / "zarr.json").is_file():
        multiscale = _multiscale_of(dict(zarr.open_group(image_path, mode="r").attrs))
    if multiscale is None:
        raise InputError(f"{image_path}: not an OME-Zarr image (no multiscales); labels annotate an image store")
    if not re.fullmatch(LABEL_NAME, name):
        raise ValueError(f"label name {name!r}: letters, digits, _ . - only")
    leading = _leading_axes(multiscale)
    image_shape = tuple(zarr.open_array(image_path / multiscale["datasets"][0]["path"], mode="r").shape)
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(image_shape) or any(s not in (i, 1) for s, i in zip(shape, image_shape)):
        raise ValueError(f"labels of shape {shape} do not fit the image of shape {image_shape}: "
                         "each length must be the image's or 1")
    image_times = os.stat(image_path)
    labels_dir = image_path / "labels"
    if not labels_dir.is_dir():  # the only change to the image's directory: undo its mtime at once
        labels_dir.mkdir()
        os.utime(image_path, ns=(image_times.st_atime_ns, image_times.st_mtime_ns))
    try:
        with atomic_path(labels_dir / name) as tmp:
            _, level0 = create_ome_zarr(tmp, shape, dtype, chunks, voxel_size, name=name,
                                        compression_level=compression_level, provenance=provenance,
                                        leading_axes=leading)
            yield level0
            build_pyramid(tmp, n_levels=len(multiscale["datasets"]), method="nearest")
            group = zarr.open_group(tmp, mode="r+", zarr_format=3)
            group.update_attributes({"ome": {**group.attrs["ome"], "image-label": {"source": {"image": "../../"}}}})
        names = []
        if (labels_dir / "zarr.json").is_file():
            names = list(zarr.open_group(labels_dir, mode="r").attrs.get("ome", {}).get("labels", []))
        names += [name] if name not in names else []
        write_json(labels_dir / "zarr.json", {"zarr_format": 3, "node_type": "group", "attributes": {
            "ome": {"version": NGFF_VERSION, "labels": names}}})
    finally:
        os.utime(image_path, ns=(image_times.st_atime_ns, image_times.st_mtime_ns))


def label_name(text: str, fallback: str) -> str:
    """``text`` as the name of a label image (letters, digits, ``_ . -``; others become ``_``), or ``fallback``.

    Examples
    --------
    >>> label_name("Alexa 488", "c0"), label_name("GFP", "c0"), label_name("  ", "c1")
    ('Alexa_488', 'GFP', 'c1')
    """
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(text).strip()).lstrip("_.-")
    return name if re.fullmatch(LABEL_NAME, name) else fallback


def _multiscale_of(attrs: dict) -> dict | None:
    """The first multiscales entry of NGFF 0.5 (``attrs["ome"]``) or 0.4 (top-level) attributes."""
    ome = attrs.get("ome")
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else attrs.get("multiscales")
    if isinstance(multiscales, list) and multiscales and isinstance(multiscales[0], dict):
        return multiscales[0]
    return None


def _scale_of(transforms: Any) -> list[float] | None:
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale" and isinstance(t.get("scale"), list):
            return [float(s) for s in t["scale"]]
    return None


def _multiscale_voxel_size(multiscale: dict, level: int) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in µm of ``level``, from its scale and any multiscale-wide scale."""
    axes = multiscale.get("axes") or [{"name": a} for a in SPATIAL_AXES]
    axes = [a if isinstance(a, dict) else {"name": a} for a in axes]  # NGFF 0.3 used bare names
    scale = _scale_of(multiscale["datasets"][level].get("coordinateTransformations"))
    if scale is None or len(scale) != len(axes):
        return None
    outer = _scale_of(multiscale.get("coordinateTransformations"))
    if outer is not None and len(outer) == len(scale):
        scale = [s * o for s, o in zip(scale, outer)]
    by_name = {a.get("name"): (s, a.get("unit")) for a, s in zip(axes, scale)}
    out = []
    for ax in SPATIAL_AXES:
        if ax not in by_name:
            return None
        value, unit = by_name[ax]
        um = _length_in_um(value, unit or "micrometer")
        if um is None:
            return None
        out.append(um)
    return _valid_voxel_size(out)


def read_ome_zarr(path: str | os.PathLike, level: int = 0, t: int | None = None,
                  c: int | None = None) -> tuple[Any, tuple[float, float, float] | None]:
    """Open one resolution level of an OME-Zarr image (NGFF 0.4 or 0.5) read-only.

    A plain zarr v2/v3 array is accepted too; its voxel size is then None. Spatial axes without
    a ``unit`` are taken to be in micrometres; other units are converted.

    Parameters
    ----------
    path : str or path
        OME-Zarr group, or zarr array.
    level : int
        Resolution level (dataset index in the multiscales metadata).
    t, c : int, optional
        Time point and channel: when either is given, the result is the 3D ``(z, y, x)``
        volume at that time point and channel (an axis the image lacks takes only 0, an
        axis not given must have length 1), a view that reads nothing else.

    Returns
    -------
    array : CheckedArray or IndexedView
        A read-only zarr array (same attributes and indexing); may have more than 3 dimensions
        when the image has e.g. t or c axes and neither ``t`` nor ``c`` is given. Reading a
        damaged chunk raises :class:`InputError` naming the store, the array and the chunk key.
    voxel_size : tuple of 3 float or None
        ``(z, y, x)`` in µm at that level; None for a plain array.

    Raises
    ------
    InputError
        When the path is missing or not a zarr store, its metadata is damaged, the group has no
        multiscales metadata, the level does not exist, or the metadata lacks spatial scales.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; check the path")
    try:
        node = zarr.open(path, mode="r")
    except Exception as err:  # zarr raises several unrelated types for "not a zarr store"
        metadata = _metadata_file(path)
        if metadata is not None:
            raise InputError(
                f"{metadata}: zarr metadata is damaged ({_one_line(err)}); write the store again "
                "(e.g. `isonet convert` on the original image)"
            ) from err
        raise InputError(
            f"{path}: not a zarr store ({_one_line(err)}); give an OME-Zarr image or a TIFF file"
        ) from err
    if isinstance(node, zarr.Array):
        return CheckedArray(node, path), None
    multiscale = _multiscale_of(dict(node.attrs))
    if multiscale is None or not multiscale.get("datasets"):
        raise InputError(
            f"{path}: zarr group without OME-Zarr multiscales metadata (no voxel sizes); "
            "convert the image with `isonet convert` or point to the array inside the group"
        )
    datasets = multiscale["datasets"]
    if not isinstance(datasets, list) or not all(isinstance(d, dict) and isinstance(d.get("path"), str)
                                                 for d in datasets):
        raise InputError(
            f"{path}: OME-Zarr multiscales 'datasets' is not a list of {{'path': ...}} entries; "
            "the metadata is damaged, convert the image again"
        )
    if not 0 <= level < len(datasets):
        raise InputError(f"{path}: has {len(datasets)} resolution level(s), no level {level}")
    try:
        array = node[datasets[level]["path"]]
    except (KeyError, zarr.errors.NodeNotFoundError) as err:
        raise InputError(
            f"{path}: level {level} ({datasets[level].get('path')!r}) is listed in the metadata but missing; "
            "the store is incomplete, convert the image again"
        ) from err
    except Exception as err:  # damaged array metadata: JSON, or fields zarr cannot parse
        level_path = path / str(datasets[level]["path"])
        raise InputError(
            f"{_metadata_file(level_path) or level_path}: zarr metadata of level {level} is damaged "
            f"({_one_line(err)}); {rewrite_hint(path, writer_stage(dict(node.attrs)))}"
        ) from err
    if not isinstance(array, zarr.Array):
        raise InputError(
            f"{path}: level {level} ({datasets[level]['path']!r}) is a group, not an array; "
            "the metadata is damaged, convert the image again"
        )
    try:
        voxel_size = _multiscale_voxel_size(multiscale, level)
    except (TypeError, ValueError, AttributeError):  # scales or axes of the wrong JSON type
        voxel_size = None
    if voxel_size is None:
        raise InputError(
            f"{path}: OME-Zarr metadata lacks valid (positive, finite) z, y, x scales in a known length unit; "
            "convert the image again with voxel_size: [z, y, x] (µm) set in the config"
        )
    array = checked(array, path, dict(node.attrs))
    if t is None and c is None:
        return array, voxel_size
    return IndexedView(array, _volume_index(multiscale, array.shape, t, c, path)), voxel_size


def image_axes(path: str | os.PathLike) -> list[str]:
    """Axis names of an OME-Zarr image (``["t", "c", "z", "y", "x"]``); ``["z", "y", "x"]`` for a 3D array.

    Raises
    ------
    InputError
        As :func:`read_ome_zarr`, or when the metadata do not name one axis per dimension.
    """
    array, _ = read_ome_zarr(path)
    try:
        attrs = dict(zarr.open_group(path, mode="r").attrs)
    except Exception:  # a plain array
        attrs = {}
    axes = (_multiscale_of(attrs) or {}).get("axes") or ([{"name": a} for a in SPATIAL_AXES] if array.ndim == 3 else [])
    names = [str(a.get("name") if isinstance(a, dict) else a).lower() for a in axes]
    if len(names) != array.ndim:
        raise InputError(f"{path}: metadata name {len(names)} axes for an image of {array.ndim} dimensions; "
                         "convert the image again with `isonet convert`")
    return names


def channel_labels(path: str | os.PathLike) -> list[str | None]:
    """The channel names an OME-Zarr image's ``omero`` metadata give (None where a channel has none); [] without."""
    omero = (zarr.open_group(path, mode="r").attrs.get("ome") or {}).get("omero") or {}
    return [str(ch["label"]) if isinstance(ch, dict) and ch.get("label") else None
            for ch in omero.get("channels") or []]


def _volume_index(multiscale: dict, shape: Sequence[int], t: int | None, c: int | None,
                  path: Path) -> tuple[int, ...]:
    """Indices of the axes before z, y, x that select time point ``t`` and channel ``c``."""
    names = [str(a.get("name") if isinstance(a, dict) else a).lower() for a in multiscale.get("axes") or []]
    if len(names) != len(shape) or names[-3:] != list(SPATIAL_AXES):
        raise InputError(f"{path}: axes {names} do not end in z, y, x; convert the image again with `isonet convert`")
    wanted = {"t": t, "c": c}
    what = {"t": ("time point", "--time"), "c": ("channel", "--channel")}
    for name, index in wanted.items():
        if index is not None and name not in names and index != 0:
            raise InputError(f"{path}: has no {what[name][0]} axis, so no {what[name][0]} {index}; leave out {what[name][1]}")
    lead = []
    for name, n in zip(names[:-3], shape[:-3]):
        index = wanted.get(name)
        if index is None:
            if n != 1:
                label, option = what.get(name, (f"'{name}' axis position", "--time/--channel"))
                raise InputError(f"{path}: has {n} along axis '{name}'; choose one {label} with {option}")
            index = 0
        if not 0 <= index < n:
            raise InputError(f"{path}: no {what.get(name, (name,))[0]} {index}; there are {n} (0 to {n - 1})")
        lead.append(int(index))
    return tuple(lead)


def checked(array: zarr.Array, store: str | os.PathLike, group_attrs: dict,
            name: str | os.PathLike | None = None) -> CheckedArray:
    """``array`` (of the OME-Zarr image at ``store``) with reads that name a damaged chunk.

    An array isonet wrote (group attribute ``"isonet"``, chunks checksummed) stores every
    chunk, so an absent chunk file is reported too. ``name`` is the store named in errors
    (default ``store``).
    """
    isonet_written = isinstance(group_attrs.get("isonet"), dict)
    return CheckedArray(array, store, stage=writer_stage(group_attrs),
                        complete=isonet_written and has_checksums(array), name=name)


def writer_stage(group_attrs: dict) -> str | None:
    """The isonet stage that wrote an image (its ``"isonet"`` attribute), if known."""
    provenance = group_attrs.get("isonet")
    stage = provenance.get("stage") if isinstance(provenance, dict) else None
    return stage if isinstance(stage, str) else None


def _metadata_file(path: Path) -> Path | None:
    """The root metadata file of a zarr store (v3 or v2), when there is one."""
    for name in ("zarr.json", ".zgroup", ".zarray"):
        if (path / name).is_file():
            return path / name
    return None


def _block_mean(block: np.ndarray, factor: tuple[int, int, int], dtype: np.dtype) -> np.ndarray:
    """Mean over factor-sized blocks; edge blocks average only the voxels that exist."""
    out_shape = tuple(-(-s // f) for s, f in zip(block.shape, factor))
    pad = [(0, o * f - s) for o, f, s in zip(out_shape, factor, block.shape)]
    split = tuple(x for o, f in zip(out_shape, factor) for x in (o, f))
    padded = np.pad(block, pad) if any(p for _, p in pad) else block
    # summing with dtype=float64 casts in small buffers, no float64 copy of the block
    mean = padded.reshape(split).sum(axis=(1, 3, 5), dtype=np.float64)
    if padded is block:
        mean /= factor[0] * factor[1] * factor[2]
    else:
        counts = [np.bincount(np.arange(s) // f, minlength=o) for s, f, o in zip(block.shape, factor, out_shape)]
        mean /= counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        np.rint(mean, out=mean)
    return mean.astype(dtype)


def _read_chunkwise(array: Any, region: tuple[slice, ...]) -> np.ndarray:
    """``array[region]``, read one chunk at a time into one buffer (zarr decodes every chunk of a
    read at once, holding them all besides the result)."""
    out = np.empty(tuple(r.stop - r.start for r in region), array.dtype)
    starts = [range(r.start, r.stop, c) for r, c in zip(region, array.chunks)]
    for corner in itertools.product(*starts):
        piece = tuple(slice(c, min(c + k, r.stop)) for c, k, r in zip(corner, array.chunks, region))
        out[tuple(slice(p.start - r.start, p.stop - r.start) for p, r in zip(piece, region))] = array[piece]
    return out


def _pyramid_blocks(shape: Sequence[int], chunks: Sequence[int], src_factor: tuple[int, int, int],
                    itemsize: int) -> Iterator[tuple[slice, slice, slice]]:
    """Blocks of whole chunks (z-slab of one chunk, y/x halved until the source fits the budget)."""
    cz, cy, cx = chunks
    by = -(-shape[1] // cy) * cy
    bx = -(-shape[2] // cx) * cx
    cost = src_factor[0] * src_factor[1] * src_factor[2] * itemsize * cz

    def too_big(y: int, x: int) -> bool:
        return cost * y * x > PYRAMID_BLOCK_BYTES

    while too_big(by, bx) and (by > cy or bx > cx):
        if by > cy and (by // cy >= bx // cx or bx == cx):
            by = (by // cy + 1) // 2 * cy
        else:
            bx = (bx // cx + 1) // 2 * cx
    for z0 in range(0, shape[0], cz):
        for y0 in range(0, shape[1], by):
            for x0 in range(0, shape[2], bx):
                yield (slice(z0, min(z0 + cz, shape[0])), slice(y0, min(y0 + by, shape[1])),
                       slice(x0, min(x0 + bx, shape[2])))


def build_pyramid(path: str | os.PathLike, n_levels: int = 2, factor: int | Sequence[int] = 2,
                  method: str = "mean", log: Callable[[str], None] | None = None,
                  name: str | os.PathLike | None = None) -> list[tuple[int, ...]]:
    """Add downsampled levels ``1 .. n_levels-1`` to an OME-Zarr image and update its metadata.

    Level ``i`` is level ``i-1`` reduced by ``factor`` in z, y and x (sizes rounded up; edge
    blocks of odd-sized axes average only the voxels that exist). Levels are computed block by
    block, each block whole chunks of the new level and at most ``PYRAMID_BLOCK_BYTES`` of the
    level above, never the whole array. Existing levels ``>= 1`` are replaced (and levels beyond
    ``n_levels`` removed); chunk shape and compressor follow level 0 (no sharding), each chunk
    with its crc32c checksum. A damaged chunk of a level read raises :class:`InputError`.

    Parameters
    ----------
    path : str or path
        OME-Zarr image written by :func:`create_ome_zarr`, opened read-write.
    n_levels : int
        Total number of levels afterwards, level 0 included.
    factor : int or sequence of 3 int
        Downsampling factor per level, per axis ``(z, y, x)``.
    method : {"mean", "nearest"}
        ``"mean"`` for intensities (integers are rounded); ``"nearest"`` takes every
        ``factor``-th voxel and keeps label images as labels.
    log : callable, optional
        Receives one progress line per level.
    name : str or path, optional
        Store named in errors about damaged chunks, when ``path`` is a temporary copy of it.

    Returns
    -------
    shapes : list of tuple
        Shape of every level, level 0 first.

    Raises
    ------
    InputError
        When ``path`` is not an OME-Zarr image with voxel sizes.
    """
    if method not in ("mean", "nearest"):
        raise ValueError(f"method must be 'mean' or 'nearest', got {method!r}")
    if n_levels < 1:
        raise ValueError(f"n_levels must be at least 1, got {n_levels}")
    f = _triple(factor, "factor")
    path = Path(path)
    _, voxel_size = read_ome_zarr(path)  # validates the store and its metadata
    if voxel_size is None:
        raise InputError(f"{path}: plain zarr array without voxel sizes; build_pyramid needs an OME-Zarr image")
    group = zarr.open_group(path, mode="r+")
    multiscale = _multiscale_of(dict(group.attrs)) or {}
    for dataset in multiscale.get("datasets", [])[n_levels:]:
        if dataset.get("path") not in (None, "0") and dataset["path"] in group:
            del group[dataset["path"]]
    attrs = dict(group.attrs)
    src = checked(group["0"], path, attrs, name)
    leading_axes = _leading_axes(multiscale)
    n_lead = len(leading_axes)
    if src.ndim != 3 + n_lead:
        raise InputError(f"{path}: level 0 has shape {src.shape}; build_pyramid needs a (..., z, y, x) image "
                         "whose metadata names every axis")
    shapes = [tuple(src.shape)]
    level0_chunks = src.chunks
    lead_shape = tuple(src.shape[:n_lead])
    for level in range(1, n_levels):
        shape = lead_shape + tuple(-(-s // k) for s, k in zip(src.shape[n_lead:], f))
        chunks = tuple(min(c, s) for c, s in zip(level0_chunks, shape))
        compressors = [c for c in src.compressors if not isinstance(c, zarr.codecs.Crc32cCodec)]
        dst = group.create_array(
            str(level), shape=shape, dtype=src.dtype, chunks=chunks,
            compressors=compressors + [zarr.codecs.Crc32cCodec()],
            fill_value=0, dimension_names=[a["name"] for a in leading_axes] + list(SPATIAL_AXES),
            overwrite=True, config=WRITE_CONFIG,
        )
        for lead in np.ndindex(*lead_shape):
            for block in _pyramid_blocks(shape[n_lead:], chunks[n_lead:], f, src.dtype.itemsize):
                source = tuple(slice(b.start * k, min(b.stop * k, s))
                               for b, k, s in zip(block, f, src.shape[n_lead:]))
                if method == "nearest":
                    dst[lead + block] = src[lead + tuple(slice(s.start, s.stop, k) for s, k in zip(source, f))]
                else:
                    region = tuple(slice(i, i + 1) for i in lead) + source
                    dst[lead + block] = _block_mean(_read_chunkwise(src, region)[(0,) * n_lead], f, src.dtype)
        if log is not None:
            log(f"pyramid level {level} {shape}")
        shapes.append(shape)
        src = checked(dst, path, attrs, name)
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else {}
    write_ome_zarr_metadata(group, voxel_size, n_levels, name=multiscale.get("name", "image"), factor=f,
                            method=method, leading_axes=leading_axes, omero=ome.get("omero"))
    return shapes


def _leading_axes(multiscale: dict) -> list[dict]:
    """The axes before z, y, x of a multiscale, each with its level-0 scale."""
    axes = [a if isinstance(a, dict) else {"name": a} for a in multiscale.get("axes") or []][:-3]
    datasets = multiscale.get("datasets") or [{}]
    scale = _scale_of(datasets[0].get("coordinateTransformations")) or []
    return [dict(a, scale=scale[i] if i < len(scale) else 1.0) for i, a in enumerate(axes)]
