"""OME-Zarr (NGFF 0.5, Zarr v3) images: create, write metadata, read, build the pyramid.

Every array written here is zstd-compressed with a crc32c checksum per chunk and stores every
chunk; reads go through :class:`~isonet.storage.integrity.CheckedArray`, so a damaged chunk ends
a stage with one line naming the store, the array and the chunk key.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.codecs

from isonet.errors import InputError
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

# bytes of level i-1 that build_pyramid reads (and reduces) in one block
PYRAMID_BLOCK_BYTES = 32 * 2**20



def _level_transforms(voxel_size: Sequence[float], level: int, factor: tuple[int, int, int],
                      method: str) -> list[dict]:
    scale = [float(f"{v * f**level:.10g}") for v, f in zip(voxel_size, factor)]
    transforms: list[dict] = [{"type": "scale", "scale": scale}]
    if level > 0 and method == "mean":
        # a block mean sits at the centre of its block, half a block minus half a voxel in
        translation = [float(f"{v * (f**level - 1) / 2:.10g}") for v, f in zip(voxel_size, factor)]
        transforms.append({"type": "translation", "translation": translation})
    return transforms


def write_ome_zarr_metadata(group: zarr.Group, voxel_size: Sequence[float], n_levels: int,
                            name: str = "image", factor: int | Sequence[int] = 2, method: str = "mean",
                            provenance: dict | None = None) -> dict:
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

    Returns
    -------
    ome : dict
        The ``"ome"`` attribute written.
    """
    factor = _triple(factor, "factor")
    vs = [float(v) for v in voxel_size]
    multiscale: dict[str, Any] = {
        "name": name,
        "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in SPATIAL_AXES],
        "datasets": [
            {"path": str(i), "coordinateTransformations": _level_transforms(vs, i, factor, method)}
            for i in range(n_levels)
        ],
    }
    if n_levels > 1:
        multiscale["type"] = method
    ome = {"version": NGFF_VERSION, "multiscales": [multiscale]}
    attrs: dict[str, Any] = {"ome": ome}
    if provenance is not None:
        attrs["isonet"] = dict(provenance)
    group.update_attributes(attrs)
    return ome


def create_ome_zarr(path: str | os.PathLike, shape: Sequence[int], dtype: Any, chunks: Sequence[int],
                    voxel_size: Sequence[float], name: str = "image", compression_level: int = 3,
                    shards: Sequence[int] | None = None, provenance: dict | None = None,
                    overwrite: bool = False) -> tuple[zarr.Group, zarr.Array]:
    """Create an empty single-level OME-Zarr (Zarr v3, NGFF 0.5) image, zstd-compressed and checksummed.

    Each chunk is compressed with zstd and followed by its crc32c checksum (the Zarr v3
    ``crc32c`` codec); every chunk is stored, empty ones included, so that an absent chunk file
    is detectable damage (:class:`isonet.storage.integrity.CheckedArray`, ``isonet verify``).

    Parameters
    ----------
    path : str or path
        Store to create (a directory). Write it inside :func:`atomic_path` for atomicity.
    shape : sequence of 3 int
        ``(z, y, x)``.
    dtype : numpy dtype-like
        Stored in native byte order.
    chunks : sequence of 3 int
        Chunk shape; clipped to ``shape``.
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
    chunks = tuple(max(1, min(int(c), s)) for c, s in zip(chunks, shape))
    dtype = np.dtype(dtype).newbyteorder("=")
    group = zarr.open_group(path, mode="w", zarr_format=3)
    level0 = group.create_array(
        "0", shape=shape, dtype=dtype, chunks=chunks, shards=None if shards is None else tuple(shards),
        compressors=checksummed_compressors(compression_level), fill_value=0,
        dimension_names=list(SPATIAL_AXES), config=WRITE_CONFIG,
    )
    write_ome_zarr_metadata(group, vs, 1, name=name, provenance=dict(provenance or {}))
    return group, level0


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


def read_ome_zarr(path: str | os.PathLike, level: int = 0) -> tuple[CheckedArray, tuple[float, float, float] | None]:
    """Open one resolution level of an OME-Zarr image (NGFF 0.4 or 0.5) read-only.

    A plain zarr v2/v3 array is accepted too; its voxel size is then None. Spatial axes without
    a ``unit`` are taken to be in micrometres; other units are converted.

    Parameters
    ----------
    path : str or path
        OME-Zarr group, or zarr array.
    level : int
        Resolution level (dataset index in the multiscales metadata).

    Returns
    -------
    array : CheckedArray
        A read-only zarr array (same attributes and indexing); may have more than 3 dimensions
        when the image has e.g. t or c axes. Reading a damaged chunk raises :class:`InputError`
        naming the store, the array and the chunk key.
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
    return checked(array, path, dict(node.attrs)), voxel_size


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
    if src.ndim != 3:
        raise InputError(f"{path}: level 0 has shape {src.shape}; build_pyramid needs a 3D (z, y, x) image")
    shapes = [tuple(src.shape)]
    level0_chunks = src.chunks
    for level in range(1, n_levels):
        shape = tuple(-(-s // k) for s, k in zip(src.shape, f))
        chunks = tuple(min(c, s) for c, s in zip(level0_chunks, shape))
        compressors = [c for c in src.compressors if not isinstance(c, zarr.codecs.Crc32cCodec)]
        dst = group.create_array(
            str(level), shape=shape, dtype=src.dtype, chunks=chunks,
            compressors=compressors + [zarr.codecs.Crc32cCodec()],
            fill_value=0, dimension_names=list(SPATIAL_AXES), overwrite=True, config=WRITE_CONFIG,
        )
        for block in _pyramid_blocks(shape, chunks, f, src.dtype.itemsize):
            source = tuple(slice(b.start * k, min(b.stop * k, s)) for b, k, s in zip(block, f, src.shape))
            if method == "nearest":
                dst[block] = src[tuple(slice(s.start, s.stop, k) for s, k in zip(source, f))]
            else:
                dst[block] = _block_mean(_read_chunkwise(src, source), f, src.dtype)
        if log is not None:
            log(f"pyramid level {level} {shape}")
        shapes.append(shape)
        src = checked(dst, path, attrs, name)
    write_ome_zarr_metadata(group, voxel_size, n_levels, name=multiscale.get("name", "image"), factor=f,
                            method=method)
    return shapes
