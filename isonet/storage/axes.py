"""Views that drop length-1 axes, so that any supported file reads as a (z, y, x) stack."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isonet.errors import InputError

logger = logging.getLogger(__name__)


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
    if 0 in shape:
        raise InputError(
            f"{path}: image of shape {shape} holds no pixels; the file is empty or incomplete, export the image again"
        )
    axes = axes if axes is not None and len(axes) == len(shape) else None
    drop = [a for a in range(len(shape) - 2) if shape[a] == 1]
    kept_shape = tuple(s for a, s in enumerate(shape) if a not in drop)
    kept_axes = None if axes is None else "".join(ax for a, ax in enumerate(axes) if a not in drop)
    if kept_axes is not None and "S" in kept_axes:
        samples = kept_shape[kept_axes.index("S")]
        raise InputError(
            f"{path}: image has {samples} samples per pixel (RGB or multi-sample, shape {kept_shape}, axes "
            f"{kept_axes}); isonet needs a single-channel 3D z-stack (z, y, x), save it as grayscale "
            "(photometric minisblack), one channel per file"
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
