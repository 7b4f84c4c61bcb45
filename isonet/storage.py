"""Reading and writing volumes: TIFF and OME-Zarr in, chunked OME-Zarr (NGFF 0.5) and TIFF out.

This is the I/O layer used by the stage functions; the pure array modules never import it.
Conventions: arrays are ``(z, y, x)``; voxel sizes are tuples ``(z, y, x)`` in micrometres;
user-facing problems raise :class:`isonet.errors.InputError` with a one-line message that names
the file and says how to fix it. Nothing here reads a whole volume into memory: TIFFs are
memory-mapped or read through tifffile's zarr store, and zarr arrays are read and written
slab by slab or block by block.

Every writer goes through :func:`atomic_path`, so an interrupted run leaves either the previous
output or nothing, never a half-written file or store under the final name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr
import zarr.codecs

from isonet.errors import InputError

logger = logging.getLogger(__name__)

NGFF_VERSION = "0.5"
SPATIAL_AXES = ("z", "y", "x")
TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)
# dtypes that ImageJ opens natively; anything else is exported as OME-TIFF
IMAGEJ_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))
# bytes of level i-1 that build_pyramid reads (and reduces) in one block
PYRAMID_BLOCK_BYTES = 256 * 2**20

# length units found in OME-XML, NGFF and ImageJ metadata, in micrometres
_UNIT_IN_UM = {
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "å": 1e-4, "angstrom": 1e-4, "ångström": 1e-4,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
}


# ----------------------------------------------------------------------------------------------
# small helpers


def _one_line(text: object) -> str:
    """Collapse whitespace (newlines included) so an error message stays on one line."""
    return " ".join(str(text).split())


def _length_in_um(value: float, unit: str | None) -> float | None:
    """``value`` expressed in ``unit`` converted to µm, or None when the unit is unknown."""
    if unit is None:
        return None
    key = unit.strip().lower().replace("\\u00b5", "µ").replace("\u03bc", "µ")
    factor = _UNIT_IN_UM.get(key)
    if factor is None:
        return None
    return float(f"{float(value) * factor:.10g}")


def _valid_voxel_size(voxel_size: Sequence[float] | None) -> tuple[float, float, float] | None:
    """``voxel_size`` as a float triple when it has three positive finite entries, else None."""
    if voxel_size is None:
        return None
    try:
        vs = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        return None
    if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
        return None
    return vs  # type: ignore[return-value]


def check_voxel_size(voxel_size: Sequence[float], source: str | os.PathLike) -> tuple[float, float, float]:
    """Validate a voxel size given by the user.

    Parameters
    ----------
    voxel_size : sequence of 3 float
        ``(z, y, x)`` in µm.
    source : str or path
        What the voxel size belongs to, named in the error message.

    Returns
    -------
    voxel_size : tuple of 3 float

    Raises
    ------
    InputError
        Unless ``voxel_size`` holds three positive finite numbers.

    Examples
    --------
    >>> check_voxel_size([2, 0.5, 0.5], "a.tif")
    (2.0, 0.5, 0.5)
    """
    vs = _valid_voxel_size(voxel_size)
    if vs is None:
        raise InputError(
            f"{source}: voxel_size {_one_line(repr(voxel_size))} is not valid; "
            "give three positive numbers [z, y, x] in µm"
        )
    return vs


def _triple(value: int | Sequence[int], what: str) -> tuple[int, int, int]:
    t = (int(value),) * 3 if np.isscalar(value) else tuple(int(v) for v in value)  # type: ignore[arg-type]
    if len(t) != 3 or min(t) < 1:
        raise ValueError(f"{what} must be a positive int or three positive ints (z, y, x), got {value!r}")
    return t  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# atomic writes


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _check_writable_directory(directory: Path, target: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise InputError(
            f"{target}: cannot write here because {directory} is a file, not a directory; "
            "choose an output path inside a directory"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"{target}: cannot create the output directory {directory} ({_one_line(err.strerror or err)}); "
            "choose an output path inside a writable directory"
        ) from err
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(
            f"{target}: the output directory {directory} is not writable; "
            "fix its permissions or choose another output location"
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file or directory (e.g. a zarr store) under a temporary name, then move it into place.

    The temporary path is a hidden sibling of ``path`` (same directory, so the final rename is
    atomic on one file system) whose name ends with the name of ``path``, so extension-sniffing
    writers behave the same. On clean exit the temporary replaces ``path``; an existing directory
    at ``path`` is first moved aside and deleted only after the new one is in place. On an
    exception (KeyboardInterrupt included) the temporary is removed and ``path`` is untouched.

    Parameters
    ----------
    path : str or path
        Final location. Missing parent directories are created.

    Yields
    ------
    tmp : Path
        Where to write. Nothing exists there yet.

    Raises
    ------
    InputError
        Before any work, when the parent of ``path`` cannot be created or is not writable.
    FileNotFoundError
        On exit, when nothing was written at ``tmp``.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (d / "a.txt").read_text(), sorted(p.name for p in d.iterdir())
    ('done', ['a.txt'])
    """
    path = Path(path)
    _check_writable_directory(path.parent, path)
    tmp = path.parent / f".tmp-{secrets.token_hex(4)}-{path.name}"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written for {path}")
        if path.is_dir() and not path.is_symlink():
            old = path.parent / f".old-{secrets.token_hex(4)}-{path.name}"
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically.

    Parameters
    ----------
    path : str or path
        Destination file.
    text : str
        Content.

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import tempfile
    >>> p = write_text(Path(tempfile.mkdtemp()) / "log.txt", "ok\\n")
    >>> p.read_text()
    'ok\\n'
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy scalars/arrays and paths are converted).

    Parameters
    ----------
    path : str or path
        Destination file.
    obj : JSON-serializable object

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import tempfile
    >>> p = write_json(Path(tempfile.mkdtemp()) / "s.json", {"shape": (2, 3), "mean": np.float32(1.5)})
    >>> json.loads(p.read_text())
    {'shape': [2, 3], 'mean': 1.5}
    """
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


# ----------------------------------------------------------------------------------------------
# OME-Zarr


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
    """Create an empty single-level OME-Zarr (Zarr v3, NGFF 0.5) image, zstd-compressed.

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
        Stored under the group attribute ``"isonet"``.
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
        compressors=zarr.codecs.ZstdCodec(level=compression_level), fill_value=0,
        dimension_names=list(SPATIAL_AXES),
    )
    write_ome_zarr_metadata(group, vs, 1, name=name, provenance=provenance)
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


def read_ome_zarr(path: str | os.PathLike, level: int = 0) -> tuple[zarr.Array, tuple[float, float, float] | None]:
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
    array : zarr.Array
        Read-only; may have more than 3 dimensions when the image has e.g. t or c axes.
    voxel_size : tuple of 3 float or None
        ``(z, y, x)`` in µm at that level; None for a plain array.

    Raises
    ------
    InputError
        When the path is missing or not a zarr store, the group has no multiscales metadata, the
        level does not exist, or the metadata lacks spatial scales.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; check the path")
    try:
        node = zarr.open(path, mode="r")
    except Exception as err:  # zarr raises several unrelated types for "not a zarr store"
        raise InputError(
            f"{path}: not a zarr store ({_one_line(err)}); give an OME-Zarr image or a TIFF file"
        ) from err
    if isinstance(node, zarr.Array):
        return node, None
    multiscale = _multiscale_of(dict(node.attrs))
    if multiscale is None or not multiscale.get("datasets"):
        raise InputError(
            f"{path}: zarr group without OME-Zarr multiscales metadata (no voxel sizes); "
            "convert the image with `isonet convert` or point to the array inside the group"
        )
    datasets = multiscale["datasets"]
    if not 0 <= level < len(datasets):
        raise InputError(f"{path}: has {len(datasets)} resolution level(s), no level {level}")
    try:
        array = node[datasets[level]["path"]]
    except (KeyError, zarr.errors.NodeNotFoundError) as err:
        raise InputError(
            f"{path}: level {level} ({datasets[level].get('path')!r}) is listed in the metadata but missing; "
            "the store is incomplete, convert the image again"
        ) from err
    voxel_size = _multiscale_voxel_size(multiscale, level)
    if voxel_size is None:
        raise InputError(
            f"{path}: OME-Zarr metadata lacks z, y, x scales in a known length unit; "
            "convert the image again with voxel_size: [z, y, x] (µm) set in the config"
        )
    return array, voxel_size


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
                  method: str = "mean", log: Callable[[str], None] | None = None) -> list[tuple[int, ...]]:
    """Add downsampled levels ``1 .. n_levels-1`` to an OME-Zarr image and update its metadata.

    Level ``i`` is level ``i-1`` reduced by ``factor`` in z, y and x (sizes rounded up; edge
    blocks of odd-sized axes average only the voxels that exist). Levels are computed block by
    block, each block whole chunks of the new level and at most ``PYRAMID_BLOCK_BYTES`` of the
    level above, never the whole array. Existing levels ``>= 1`` are replaced (and levels beyond
    ``n_levels`` removed); chunk shape and compressors follow level 0 (no sharding).

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
    src = group["0"]
    if src.ndim != 3:
        raise InputError(f"{path}: level 0 has shape {src.shape}; build_pyramid needs a 3D (z, y, x) image")
    shapes = [tuple(src.shape)]
    level0_chunks = src.chunks
    for level in range(1, n_levels):
        shape = tuple(-(-s // k) for s, k in zip(src.shape, f))
        chunks = tuple(min(c, s) for c, s in zip(level0_chunks, shape))
        dst = group.create_array(
            str(level), shape=shape, dtype=src.dtype, chunks=chunks, compressors=src.compressors,
            fill_value=0, dimension_names=list(SPATIAL_AXES), overwrite=True,
        )
        for block in _pyramid_blocks(shape, chunks, f, src.dtype.itemsize):
            source = tuple(slice(b.start * k, min(b.stop * k, s)) for b, k, s in zip(block, f, src.shape))
            if method == "nearest":
                dst[block] = src[tuple(slice(s.start, s.stop, k) for s, k in zip(source, f))]
            else:
                dst[block] = _block_mean(src[source], f, src.dtype)
        if log is not None:
            log(f"pyramid level {level} {shape}")
        shapes.append(shape)
        src = dst
    write_ome_zarr_metadata(group, voxel_size, n_levels, name=multiscale.get("name", "image"), factor=f,
                            method=method)
    return shapes


# ----------------------------------------------------------------------------------------------
# reading volumes of any supported format


class SqueezedArray:
    """Read-only view of an array-like without some length-1 axes; indexing reads lazily.

    Parameters
    ----------
    array : array-like
        Supports numpy basic indexing with integers and slices (zarr arrays do).
    drop : sequence of int
        Axes of ``array``, each of length 1, that the view hides.

    Examples
    --------
    >>> v = SqueezedArray(np.arange(24).reshape(1, 1, 2, 3, 4), (0, 1))
    >>> v.shape, v[1, :, 0].tolist()
    ((2, 3, 4), [12, 16, 20])
    """

    def __init__(self, array: Any, drop: Sequence[int]):
        self.array = array
        self.drop = tuple(sorted(drop))
        if any(array.shape[a] != 1 for a in self.drop):
            raise ValueError(f"can only drop length-1 axes, got axes {self.drop} of shape {array.shape}")
        self.keep = tuple(a for a in range(array.ndim) if a not in self.drop)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[a] for a in self.keep)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.keep)

    @property
    def chunks(self) -> tuple[int, ...] | None:
        chunks = getattr(self.array, "chunks", None)
        return None if chunks is None else tuple(chunks[a] for a in self.keep)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) != self.ndim:
            raise IndexError(f"too many indices for an array of shape {self.shape}")
        full: list[Any] = [0] * self.array.ndim
        for a, k in zip(self.keep, key):
            full[a] = k
        return np.asarray(self.array[tuple(full)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"<SqueezedArray shape={self.shape} dtype={self.dtype} of {self.array!r}>"


def _squeeze_to_zyx(array: Any, axes: str | None, path: Path) -> Any:
    """Drop length-1 axes (all but y, x) and require a single-channel 3D stack."""
    shape = tuple(int(s) for s in array.shape)
    axes = axes if axes is not None and len(axes) == len(shape) else None
    drop = [a for a in range(len(shape) - 2) if shape[a] == 1]
    kept_shape = tuple(s for a, s in enumerate(shape) if a not in drop)
    kept_axes = None if axes is None else "".join(ax for a, ax in enumerate(axes) if a not in drop)
    if kept_axes is not None and "S" in kept_axes:
        raise InputError(
            f"{path}: image is RGB/multi-sample {kept_shape} (axes {kept_axes}); "
            "isonet needs a single-channel 3D z-stack (z, y, x), save one channel as 8/16-bit grayscale"
        )
    if len(kept_shape) != 3:
        described = f" (axes {kept_axes})" if kept_axes else ""
        if len(kept_shape) < 3:
            raise InputError(
                f"{path}: image is {len(kept_shape)}D {kept_shape}{described}; isonet needs a 3D z-stack (z, y, x)"
            )
        raise InputError(
            f"{path}: image is {len(kept_shape)}D {kept_shape}{described}; isonet needs a single-channel "
            "3D z-stack (z, y, x), save one channel and one time point per file"
        )
    if kept_axes is not None and kept_axes[0] in "CT":
        logger.warning("%s: reading the %s axis (length %d) as z", path, kept_axes[0], kept_shape[0])
    if not drop:
        return array
    if isinstance(array, np.ndarray):
        return array.reshape(kept_shape)
    return SqueezedArray(array, drop)


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


def _open_tiff(path: Path) -> tuple[Any, tuple[float, float, float] | None, Callable[[], None]]:
    try:
        tif = tifffile.TiffFile(path)  # opened "rb": never modified
    except Exception as err:  # TiffFileError, struct.error, ValueError... for broken files
        raise InputError(
            f"{path}: not a readable TIFF file ({_one_line(err)}); check that the file is complete and not corrupted"
        ) from err
    stores: list[Any] = []

    def close() -> None:
        for store in stores:
            store.close()
        tif.close()

    try:
        if not tif.series:
            raise InputError(f"{path}: TIFF file holds no image; check that the file is complete")
        series = tif.series[0]
        voxel_size = _tiff_voxel_size(tif)
        if series.dataoffset is not None and series.transform is None and series.dtype is not None:
            # uncompressed and contiguous: map the file, the OS pages in only what is sliced
            dtype = np.dtype(tif.byteorder + series.dtype.char)
            array: Any = np.memmap(path, dtype=dtype, mode="r", offset=series.dataoffset, shape=series.shape)
        else:
            stores.append(series.aszarr(level=0))
            array = zarr.open_array(stores[0], mode="r")
        return _squeeze_to_zyx(array, series.axes, path), voxel_size, close
    except InputError:
        close()
        raise
    except Exception as err:
        close()
        raise InputError(
            f"{path}: cannot read the TIFF image data ({_one_line(err)}); check that the file is complete"
        ) from err


def open_volume(path: str | os.PathLike) -> tuple[Any, tuple[float, float, float] | None, Callable[[], None]]:
    """Open a 3D volume lazily and read-only: TIFF (ImageJ, OME or plain) or (OME-)Zarr.

    Uncompressed contiguous TIFFs are memory-mapped; other TIFFs are read through tifffile's
    zarr store (strip by strip / tile by tile). Length-1 axes other than y and x (e.g. T=1, C=1
    of a 5D OME-TIFF) are dropped.

    Parameters
    ----------
    path : str or path
        ``.tif``, ``.tiff``, ``.ome.tif``, ``.ome.tiff`` file, or ``.zarr`` store (an OME-Zarr
        image, level 0 is read, or a plain zarr array).

    Returns
    -------
    array : array-like
        3D ``(z, y, x)`` with ``.shape``, ``.dtype`` and numpy slicing that reads only the slice
        (``np.asarray(array[z0:z1])`` for a slab).
    voxel_size : tuple of 3 float or None
        ``(z, y, x)`` in µm from OME-XML ``PhysicalSize*`` or ImageJ ``spacing`` and
        X/YResolution, or the OME-Zarr scale; None when the file does not say.
    close : callable
        Releases the file; ``array`` must not be used afterwards.

    Raises
    ------
    InputError
        Missing, empty, corrupt or unsupported file; image not 3D after dropping length-1 axes.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; check the path")
    name = path.name.lower()
    if path.is_dir() or name.endswith(ZARR_SUFFIXES):
        array, voxel_size = read_ome_zarr(path)
        axes = None
        with contextlib.suppress(Exception):
            multiscale = _multiscale_of(dict(zarr.open_group(path, mode="r").attrs)) or {}
            names = [a["name"] if isinstance(a, dict) else a for a in multiscale.get("axes", [])]
            axes = "".join(str(n).upper()[:1] for n in names)
        return _squeeze_to_zyx(array, axes, path), voxel_size, lambda: None
    if name.endswith(TIFF_SUFFIXES):
        if path.stat().st_size == 0:
            raise InputError(f"{path}: file is empty (0 bytes); copy or export the image again")
        return _open_tiff(path)
    raise InputError(
        f"{path}: unsupported file type {path.suffix!r}; isonet reads TIFF (.tif, .tiff, .ome.tif) and OME-Zarr (.zarr)"
    )


# ----------------------------------------------------------------------------------------------
# TIFF export


def export_tiff(array: Any, path: str | os.PathLike, voxel_size: Sequence[float], chunk_planes: int = 64,
                tiff_format: str = "auto") -> Path:
    """Write a 3D volume to TIFF plane by plane, atomically, with its voxel size in µm.

    Reads ``chunk_planes`` z-planes at a time from ``array`` (e.g. a zarr array) and streams them
    as TIFF pages, so memory holds one slab.

    Parameters
    ----------
    array : array-like, shape (z, y, x)
        Numpy-sliceable (zarr array, numpy array, :class:`SqueezedArray`).
    path : str or path
        Destination ``.tif``.
    voxel_size : sequence of 3 float
        ``(z, y, x)`` in µm.
    chunk_planes : int
        z-planes read per slab.
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

    def planes() -> Iterator[np.ndarray]:
        for z0 in range(0, shape[0], chunk_planes):
            slab = np.asarray(array[z0:min(z0 + chunk_planes, shape[0])]).astype(dtype, copy=False)
            yield from slab

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
