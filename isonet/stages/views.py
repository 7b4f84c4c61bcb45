"""Lazy, read-only views of stored volumes that the stages read block by block.

Each view has ``shape``, ``dtype`` and basic slicing (slices only) that reads just the slice
from the array below it, so a metric or the block-wise segmentation can go through a volume far
larger than memory: a cast, a crop to the first planes, a cubic upsampling along z.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from isonet.degrade import upsample_planes, upsampled_length
from isonet.storage.tiff import read_mapped


def _slices(selection: Any, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """A selection of slices (or Ellipsis) as one explicit slice per axis, within ``shape``."""
    key = selection if isinstance(selection, tuple) else (selection,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    key = key + (slice(None),) * (len(shape) - len(key))
    if len(key) != len(shape) or not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
        raise TypeError(f"views take contiguous slices only, got {selection!r}")
    return tuple(slice(*k.indices(n)[:2]) for k, n in zip(key, shape))


class PlanesView:
    """The first ``n_planes`` planes of a 3D array, read as ``dtype``.

    Slices of a memory-mapped TIFF are copied out one plane at a time and the mapping's pages let
    go after each plane (:func:`isonet.storage.tiff.read_mapped`), so going through a volume
    leaves none of the file resident, and a read holds at most one plane's pages of it.

    Examples
    --------
    >>> v = PlanesView(np.arange(24).reshape(4, 2, 3), np.float32, n_planes=2)
    >>> v.shape, v.dtype, v[1:, :, 1:2].ravel().tolist()
    ((2, 2, 3), dtype('float32'), [7.0, 10.0])
    """

    def __init__(self, array: Any, dtype: Any, n_planes: int | None = None):
        self.array = array
        n = int(array.shape[0]) if n_planes is None else int(n_planes)
        self.shape = (n, *(int(s) for s in array.shape[1:]))
        self.dtype = np.dtype(dtype)

    def __getitem__(self, selection: Any) -> np.ndarray:
        # a memory-mapped TIFF: copied out plane by plane, letting the pages read go, else the
        # whole file ends up resident as a metric or the segmentation goes through it
        return read_mapped(self.array, _slices(selection, self.shape), self.dtype)


class CubicUpsampledView:
    """A volume upsampled along z by cubic interpolation (:func:`isonet.degrade.upsample_axis`), computed on read.

    Planes read are bit-identical to those of the whole upsampled volume.

    Examples
    --------
    >>> from isonet.degrade import upsample_axis
    >>> x = np.random.default_rng(0).random((5, 3, 4))
    >>> v = CubicUpsampledView(x, 3)
    >>> v.shape, bool((v[4:9, 1:, :2] == upsample_axis(x, 3)[4:9, 1:, :2]).all())
    ((13, 3, 4), True)
    """

    def __init__(self, array: Any, factor: int):
        self.array = array
        self.factor = factor
        self.shape = (upsampled_length(int(array.shape[0]), self.factor), *(int(s) for s in array.shape[1:]))
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, selection: Any) -> np.ndarray:
        z, *lateral = _slices(selection, self.shape)
        return upsample_planes(self.array, self.factor, z.start, z.stop, tuple(lateral))
