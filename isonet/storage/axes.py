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
            "3D z-stack (z, y, x): convert a time-lapse or multi-channel image with `isonet convert` (declare "
            f"its axes with --axes, e.g. --axes {'TCZYX'[5 - min(len(kept_shape), 5):]}, or the `axes` column of "
            "the sample sheet when the file does not say them)"
        )
    if kept_axes is not None and kept_axes[0] in "CT":
        logger.warning("%s: reading the %s axis (length %d) as z", path, kept_axes[0], kept_shape[0])
    if not drop:
        return array
    if isinstance(array, np.ndarray):
        return array.reshape(kept_shape)
    return SqueezedArray(array, drop)


class IndexedView:
    """View of an array with its leading axes fixed at given indices; reads (and writes) lazily.

    ``IndexedView(a, (t, c))[key]`` reads ``a[t, c][key]`` without reading any other ``(t, c)``:
    one volume of a ``(t, c, z, y, x)`` time-lapse, as a 3D array. Assigning to the view writes
    into ``a[t, c]`` when ``a`` is writable (a label image filled one time point at a time).
    Attributes the view does not define (``attrs``, ``store``, ...) are the array's.

    Parameters
    ----------
    array : array-like
        Supports numpy basic indexing (zarr arrays, :class:`~isonet.storage.CheckedArray`).
    lead : sequence of int
        Indices of the first ``len(lead)`` axes.

    Examples
    --------
    >>> v = IndexedView(np.arange(2 * 3 * 4).reshape(2, 3, 4), (1,))
    >>> v.shape, v[2].tolist(), v[..., 0].tolist()
    ((3, 4), [20, 21, 22, 23], [12, 16, 20])
    >>> v[0, :2] = -1
    >>> v.array[1, 0].tolist()
    [-1, -1, 14, 15]
    """

    def __init__(self, array: Any, lead: Sequence[int]):
        self.array = array
        self.lead = tuple(int(i) for i in lead)
        shape = tuple(int(s) for s in array.shape)
        if len(self.lead) > len(shape) or any(not 0 <= i < s for i, s in zip(self.lead, shape)):
            raise IndexError(f"indices {self.lead} out of range for an array of shape {shape}")

    def __getattr__(self, name: str) -> Any:
        if name == "array":  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.array, name)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[len(self.lead):])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def chunks(self) -> tuple[int, ...] | None:
        chunks = getattr(self.array, "chunks", None)
        return None if chunks is None else tuple(chunks[len(self.lead):])

    @property
    def shards(self) -> tuple[int, ...] | None:
        shards = getattr(self.array, "shards", None)
        return None if shards is None else tuple(shards[len(self.lead):])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if len([k for k in key if k is not Ellipsis and k is not None]) > self.ndim:
            raise IndexError(f"too many indices for an array of shape {self.shape}")
        return np.asarray(self.array[self.lead + key])

    def __setitem__(self, key: Any, value: Any) -> None:
        key = key if isinstance(key, tuple) else (key,)
        if len([k for k in key if k is not Ellipsis and k is not None]) > self.ndim:
            raise IndexError(f"too many indices for an array of shape {self.shape}")
        self.array[self.lead + key] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"<IndexedView {self.lead} shape={self.shape} dtype={self.dtype} of {self.array!r}>"


class AxesView:
    """Read-only view of an array with axes ``axes`` (any order) as a ``(t, c, z, y, x)`` array.

    Axes the array lacks among T and C are presented as length 1; other length-1 axes of the
    array are dropped. Indexing reads only what it selects (a time point, a channel, a slab).

    Parameters
    ----------
    array : array-like
        Supports numpy basic indexing with integers and slices.
    axes : str
        One letter per axis of ``array``: Z, Y, X, optionally T and C, and any other letter for
        a length-1 axis.

    Examples
    --------
    >>> a = np.arange(2 * 3 * 4 * 5 * 6).reshape(2, 4, 3, 5, 6)  # ImageJ order: t, z, c, y, x
    >>> v = AxesView(a, "TZCYX")
    >>> v.shape, bool((v[1, 2] == a[1, :, 2]).all())
    ((2, 3, 4, 5, 6), True)
    """

    TARGET = "TCZYX"

    def __init__(self, array: Any, axes: str):
        axes = axes.upper()
        shape = tuple(int(s) for s in array.shape)
        if len(axes) != len(shape) or len(set(axes)) != len(axes) or not set("ZYX") <= set(axes):
            raise ValueError(f"axes {axes!r} do not describe an array of shape {shape} with z, y and x")
        extra = [a for a in axes if a not in self.TARGET and shape[axes.index(a)] != 1]
        if extra:
            raise ValueError(f"axis {extra[0]!r} of length {shape[axes.index(extra[0])]} is not one of T, C, Z, Y, X")
        self.array, self.axes = array, axes
        self._shape = tuple(shape[axes.index(a)] if a in axes else 1 for a in self.TARGET)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        return 5

    def __len__(self) -> int:
        return self._shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (5 - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (5 - len(key))
        if len(key) != 5 or not all(isinstance(k, (int, np.integer, slice)) for k in key):
            raise IndexError(f"AxesView takes up to 5 integers or slices, got {key!r}")
        by_axis = dict(zip(self.TARGET, key))
        for a, k in by_axis.items():
            n = self._shape[self.TARGET.index(a)]
            if isinstance(k, (int, np.integer)) and not -n <= k < n:
                raise IndexError(f"index {k} out of range for axis {a} of length {n}")
        source_key = tuple(by_axis.get(a, 0) for a in self.axes)
        data = np.asarray(self.array[source_key])
        kept = [a for a in self.axes if a in self.TARGET and not isinstance(by_axis[a], (int, np.integer))]
        order = [a for a in self.TARGET if a in kept]
        data = np.transpose(data, [kept.index(a) for a in order])
        for i, a in enumerate(self.TARGET):
            k = by_axis[a]
            if a not in self.axes and isinstance(k, slice):
                position = [b for b in self.TARGET[:i] if b in order or (b not in self.axes and
                                                                       isinstance(by_axis[b], slice))]
                data = np.expand_dims(data, len(position))[(slice(None),) * len(position) + (k,)]
        return data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"<AxesView {self.axes}->TCZYX shape={self.shape} dtype={self.dtype} of {self.array!r}>"
