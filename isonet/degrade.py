"""Resampling and blurring used both to build training pairs and to upsample volumes along z.

Grid convention (used everywhere in isonet): upsampling by an integer ``factor`` puts input sample
``k`` exactly on output sample ``k * factor``; an axis of ``n`` samples becomes
``(n - 1) * factor + 1`` samples and nothing is extrapolated past the last input sample.
(``scipy.ndimage.zoom`` instead stretches corner to corner, which moves input samples off the
output grid by up to ``factor - 1`` at the far end.) Interpolation is cubic convolution
(Keys, a = -0.5, the kernel of "bicubic" image resizing): each output sample depends on the four
nearest input samples only, so a block-wise computation with a halo of two input samples is exact.
Edges are mirrored (``numpy.pad`` mode ``reflect``).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

KEYS_A = -0.5


def keys_cubic_weights(factor: int) -> np.ndarray:
    """Weights of the four taps ``k-1, k, k+1, k+2`` for output phases ``j / factor``.

    Returns
    -------
    weights : ndarray, shape ``(factor, 4)``, float64; each row sums to 1 and row 0 is ``[0, 1, 0, 0]``.

    Examples
    --------
    >>> keys_cubic_weights(2)
    array([[ 0.    ,  1.    ,  0.    ,  0.    ],
           [-0.0625,  0.5625,  0.5625, -0.0625]])
    """
    factor = _check_factor(factor)
    t = np.arange(factor) / factor
    dist = np.stack([1 + t, t, 1 - t, 2 - t], axis=1)
    a = KEYS_A
    near = (a + 2) * dist**3 - (a + 3) * dist**2 + 1
    far = a * dist**3 - 5 * a * dist**2 + 8 * a * dist - 4 * a
    return np.where(dist <= 1, near, far)


def upsampled_length(n: int, factor: int) -> int:
    """Number of samples after upsampling ``n`` samples by ``factor`` (grid convention above)."""
    return (int(n) - 1) * int(factor) + 1


def reflect_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """Map arbitrary integer indices into ``[0, n)`` by mirroring about the edge samples.

    Same convention as ``numpy.pad(mode="reflect")``: ``-1 -> 1``, ``n -> n - 2``.

    Examples
    --------
    >>> reflect_indices(np.arange(-3, 6), 4)
    array([3, 2, 1, 0, 1, 2, 3, 2, 1])
    """
    indices = np.asarray(indices)
    if n == 1:
        return np.zeros_like(indices)
    period = 2 * (n - 1)
    m = np.mod(indices, period)
    return np.where(m < n, m, period - m)


def cubic_taps(out_indices: np.ndarray, n: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Input tap indices and weights for arbitrary output samples of an upsampled axis.

    Parameters
    ----------
    out_indices : array of int
        Output sample indices, each in ``[0, upsampled_length(n, factor))``.
    n : int
        Number of input samples.
    factor : int
        Upsampling factor.

    Returns
    -------
    taps : ndarray of int, shape ``(len(out_indices), 4)``, mirrored into ``[0, n)``.
    weights : ndarray of float64, same shape.
    """
    factor = _check_factor(factor)
    out_indices = np.asarray(out_indices, dtype=np.int64)
    if out_indices.size and (out_indices.min() < 0 or out_indices.max() >= upsampled_length(n, factor)):
        raise ValueError(f"output indices must lie in [0, {upsampled_length(n, factor)}) for n={n}, factor={factor}")
    k, j = np.divmod(out_indices, factor)
    taps = reflect_indices(k[:, None] + np.arange(-1, 3)[None, :], n)
    return taps, keys_cubic_weights(factor)[j]


def upsample_axis(x: np.ndarray, factor: int, axis: int = 0, out_indices: np.ndarray | None = None) -> np.ndarray:
    """Cubic upsampling of ``x`` along ``axis`` by an integer factor (grid convention above).

    Parameters
    ----------
    x : ndarray
        Input array, any number of dimensions.
    factor : int
        Integer upsampling factor (1 returns a float32 copy).
    axis : int
        Axis to upsample.
    out_indices : array of int, optional
        Compute only these output samples (default: all ``(n - 1) * factor + 1``).

    Returns
    -------
    ndarray, float32.

    Examples
    --------
    >>> y = upsample_axis(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), 2)
    >>> y.shape, y[::2].tolist(), float(y[3])
    ((9,), [0.0, 1.0, 2.0, 3.0, 4.0], 1.5)
    """
    x = np.asarray(x)
    axis = axis % x.ndim
    n = x.shape[axis]
    if out_indices is None:
        out_indices = np.arange(upsampled_length(n, factor))
    taps, weights = cubic_taps(out_indices, n, factor)
    xm = np.moveaxis(x, axis, 0)
    out = np.zeros((len(taps),) + xm.shape[1:], dtype=np.float32)
    bshape = (len(taps),) + (1,) * (xm.ndim - 1)
    for t in range(4):
        w = weights[:, t]
        if np.any(w != 0):
            out += w.astype(np.float32).reshape(bshape) * xm[taps[:, t]].astype(np.float32, copy=False)
    return np.moveaxis(out, 0, axis)


def upsample_planes(x, factor: int, start: int, stop: int, lateral: tuple = ()) -> np.ndarray:
    """Planes ``start:stop`` of :func:`upsample_axis` ``(x, factor, axis=0)``, reading only the planes they need.

    The same float32 operations in the same order as :func:`upsample_axis`, so the planes are
    bit-identical to those of the whole upsampled volume; only the input planes under the
    cubic taps (and the ``lateral`` part of them) are read, so ``x`` may be a lazy array
    (a zarr array) far larger than memory.

    Parameters
    ----------
    x : array-like, shape (n, ...)
        Input with numpy slicing along its first axis.
    factor : int
    start, stop : int
        Output planes, ``0 <= start <= stop <= upsampled_length(n, factor)``.
    lateral : tuple of slices
        Part of the remaining axes to compute (default all of them).

    Returns
    -------
    ndarray, float32, shape ``(stop - start, ...)``.

    Examples
    --------
    >>> x = np.arange(5.0)[:, None] * [1.0, 2.0]
    >>> bool((upsample_planes(x, 2, 3, 7) == upsample_axis(x, 2)[3:7]).all())
    True
    """
    n = int(x.shape[0])
    taps, weights = cubic_taps(np.arange(start, stop), n, factor)
    if taps.size == 0:
        lo = hi = 0
    else:
        lo, hi = int(taps.min()), int(taps.max()) + 1
    xm = np.asarray(x[(slice(lo, hi), *lateral)])
    out = np.zeros((len(taps),) + xm.shape[1:], dtype=np.float32)
    bshape = (len(taps),) + (1,) * (xm.ndim - 1)
    for t in range(4):
        w = weights[:, t]
        if np.any(w != 0):
            out += w.astype(np.float32).reshape(bshape) * xm[taps[:, t] - lo].astype(np.float32, copy=False)
    return out


def subsample_upsample(x: np.ndarray, factor: int, axis: int = 0, phase: int = 0) -> tuple[np.ndarray, int]:
    """Keep every ``factor``-th sample along ``axis`` from ``phase`` on, then upsample back.

    Returns
    -------
    y : ndarray, float32
        The degraded signal; sample ``i`` of ``y`` lies at position ``phase + i`` of ``x``.
    start : int
        ``phase``; the comparable part of ``x`` is ``x[start : start + y.shape[axis]]`` along ``axis``.
    """
    factor = _check_factor(factor)
    if not 0 <= phase < factor:
        raise ValueError(f"phase must be in [0, {factor}), got {phase}")
    sub = np.take(x, np.arange(phase, x.shape[axis], factor), axis=axis)
    if sub.shape[axis] < 2:
        raise ValueError(f"axis of length {x.shape[axis]} is too short to subsample by {factor}")
    return upsample_axis(sub, factor, axis=axis), phase


def blur2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve a 2D image with a 2D kernel, mirroring the image at its edges; float32 output."""
    if image.ndim != 2 or kernel.ndim != 2:
        raise ValueError(f"blur2d needs 2D image and kernel, got {image.shape} and {kernel.shape}")
    py, px = kernel.shape[0] // 2, kernel.shape[1] // 2
    mode = "reflect" if min(image.shape) > 1 else "edge"
    padded = np.pad(image.astype(np.float32, copy=False), ((py, py), (px, px)), mode=mode)
    return fftconvolve(padded, kernel.astype(np.float32), mode="valid").astype(np.float32)


def _check_factor(factor) -> int:
    if int(factor) != factor or factor < 1:
        raise ValueError(f"upsampling factor must be a positive integer, got {factor}")
    return int(factor)
