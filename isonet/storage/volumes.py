"""Open a 3D volume of any supported format lazily and read-only."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.codecs

from isonet.errors import InputError
from isonet.storage.axes import _squeeze_to_zyx
from isonet.storage.voxels import _one_line
from isonet.storage.omezarr import _multiscale_of, read_ome_zarr
from isonet.storage.tiff import _open_tiff, read_mapped

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)


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
        spatial = "".join(a for a in axes or "" if a in "ZYX")
        if sorted(spatial) == ["X", "Y", "Z"] and spatial != "ZYX":
            raise InputError(
                f"{path}: spatial axes are stored in the order {', '.join(spatial.lower())}; isonet reads "
                "z, y, x: transpose the image (or export it as TIFF) and convert it again"
            )
        return _squeeze_to_zyx(array, axes, path), voxel_size, lambda: None
    if name.endswith(TIFF_SUFFIXES):
        if path.stat().st_size == 0:
            raise InputError(f"{path}: file is empty (0 bytes); copy or export the image again")
        return _open_tiff(path)
    raise InputError(
        f"{path}: unsupported file type {path.suffix!r}; isonet reads TIFF (.tif, .tiff, .ome.tif) and OME-Zarr (.zarr)"
    )


def read_planes(array: Any, z0: int, z1: int, path: str | os.PathLike,
                rows: tuple[int, int] | None = None) -> np.ndarray:
    """Planes ``z0:z1`` (rows ``y0:y1`` of them, when given) of a volume opened by :func:`open_volume`
    or :func:`read_ome_zarr`, in memory.

    Parameters
    ----------
    array : array-like
        The volume (numpy slicing reads only the slab).
    z0, z1 : int
        First plane and one past the last.
    path : str or path
        The file the volume comes from, named in the error message.
    rows : (int, int), optional
        ``(y0, y1)``: read only these rows of the planes.

    Returns
    -------
    slab : ndarray

    Raises
    ------
    InputError
        When the planes cannot be read or decoded: a truncated TIFF strip or tile, a damaged
        or missing zarr chunk, an I/O error.

    Examples
    --------
    >>> read_planes(np.arange(24).reshape(2, 3, 4), 1, 2, "a.tif").shape
    (1, 3, 4)
    """
    try:
        # a memory-mapped TIFF is copied plane by plane and its pages let go (read_mapped)
        return read_mapped(array, np.s_[z0:z1] if rows is None else np.s_[z0:z1, rows[0]:rows[1]])
    except (InputError, MemoryError):
        raise
    except Exception as err:  # decoders and stores raise many unrelated types for damaged data
        raise InputError(
            f"{path}: cannot read planes z={z0}..{z1 - 1}{'' if rows is None else f' rows y={rows[0]}..{rows[1] - 1}'} "
            f"({type(err).__name__}: {_one_line(err)}); "
            "the file is damaged or incomplete, copy or export it again"
        ) from err
