"""Resampling and blurring used both to build training pairs and to upsample volumes along z.

Grid convention (used everywhere in isonet). The axial factor σ = voxel z / voxel x need not be an
integer (z 0.9 µm over xy 0.2 µm is σ = 4.5). Acquired plane ``k`` lies at ``z = k·σ`` lateral
pixels and output sample ``m`` at ``z = m`` pixels, i.e. at ``m / σ`` in input-sample units; an
axis of ``n`` samples becomes ``floor((n - 1)·σ) + 1`` samples and nothing is extrapolated past
the last input sample. For an integer σ every input sample ``k`` is output sample ``k·σ`` and the
length is ``(n - 1)·σ + 1``; for σ = 4.5 every other acquired plane is an output sample and the
others fall half-way between two. (``scipy.ndimage.zoom`` instead stretches corner to corner,
which moves input samples off the grid by up to σ - 1 at the far end; CSBDeep rounds a
non-integer factor, which moves them further with every plane.)

σ is kept as an exact ratio of integers ``num / den`` (:func:`factor_fraction`, denominators up
to 10⁶), so the position ``m / σ = m·den / num`` of an output sample splits into its tap
``k = m·den // num`` and offset ``t = (m·den mod num) / num`` in integer arithmetic. An output
sample on an acquired plane gets ``t = 0`` exactly and is that plane bit for bit, and positions
do not drift along a long axis. (A float ``m / σ`` with a guarded floor would be nearly as good;
the integers make "exactly on the plane" a property instead of a tolerance.) Factors travel as
plain numbers, an int when integral and otherwise the float of the ratio, which
:func:`factor_fraction` turns back into the same ratio; :func:`exact_factor` gives that form.
With an integer σ every result is bit-identical to the integer-only code this replaced.

Upsampling is cubic convolution (Keys, a = -0.5, the kernel of "bicubic" image resizing): output
sample ``m`` depends on the four input samples ``k-1 .. k+2`` at distances ``1+t, t, 1-t, 2-t``
only, so a block-wise computation with a halo of two input samples is exact. Edges are mirrored
(``numpy.pad`` mode ``reflect``).

Acquiring at a non-integer step (:func:`subsample_axis`): training pairs and simulated
acquisitions need a blurred signal at ``phase + k·σ``, between its samples. A signal blurred by
the axial PSF is nearly band-limited; it is sampled there with an interpolating quintic B-spline
(not-a-knot ends, float64; a matrix built once per axis length and phase, about 0.2 s for a
1024² plane), far more accurate on such a signal than the cubic. Measured at
σ = 4.5, 10/3 and 2.5: on a cosine of period 16 samples its largest error is 7e-6 of the
amplitude (3e-7 away from the ends), the Keys cubic's 8e-4
(``tests/test_degrade.py::test_subsample_axis_is_accurate_on_a_smooth_signal``); on white noise
blurred by a gaussian of σ 2 pixels it is 9e-5 of the signal's standard deviation (cubic 1e-2),
at σ 1.5 pixels 1e-3 (cubic 3e-2), at 1 pixel 3e-2 (cubic 0.15); ``benchmarks/noninteger_sampling.py``
prints these figures. An axial PSF narrower than that is sampled far below Nyquist by a step of
several pixels. Positions that are whole samples are copied, not interpolated.
"""

from __future__ import annotations

import functools
import math
import numbers
from fractions import Fraction

import numpy as np
from scipy.interpolate import make_interp_spline
from scipy.fft import irfft2, next_fast_len, rfft2

from isonet.errors import InputError

KEYS_A = -0.5
MAX_DENOMINATOR = 10**6


def factor_fraction(factor) -> Fraction:
    """The axial factor σ as an exact ratio of integers.

    A float is read as the ratio with the smallest denominator (at most ``MAX_DENOMINATOR``) that
    is nearest to it: ``4.5 -> 9/2``, ``1 / 0.3 = 3.3333333333333335 -> 10/3``.

    Raises
    ------
    ValueError
        ``factor`` is not a finite number >= 1.

    Examples
    --------
    >>> factor_fraction(4), factor_fraction(4.5), factor_fraction(1.0 / 0.3)
    (Fraction(4, 1), Fraction(9, 2), Fraction(10, 3))
    """
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not math.isfinite(factor) or factor < 1:
        raise ValueError(f"upsampling factor must be a finite number >= 1, got {factor!r}")
    if float(factor).is_integer():
        return Fraction(int(factor))
    return Fraction(float(factor)).limit_denominator(MAX_DENOMINATOR)


def exact_factor(factor) -> int | float:
    """σ as isonet passes it around: an int when integral, else the float of its exact ratio.

    Examples
    --------
    >>> exact_factor(4.0), exact_factor(9 / 2), exact_factor(1.3 / 0.325)
    (4, 4.5, 4)
    """
    f = factor_fraction(factor)
    return int(f) if f.denominator == 1 else float(f)


def keys_cubic_kernel(t) -> np.ndarray:
    """Weights of the four taps ``k-1, k, k+1, k+2`` for output samples at offset ``t`` past tap ``k``.

    Parameters
    ----------
    t : array of float in ``[0, 1)``

    Returns
    -------
    weights : ndarray, shape ``t.shape + (4,)``, float64; each row sums to 1, ``t = 0`` gives ``[0, 1, 0, 0]``.

    Examples
    --------
    >>> keys_cubic_kernel([0.0, 0.5])
    array([[ 0.    ,  1.    ,  0.    ,  0.    ],
           [-0.0625,  0.5625,  0.5625, -0.0625]])
    """
    t = np.asarray(t, dtype=np.float64)
    dist = np.stack([1 + t, t, 1 - t, 2 - t], axis=-1)
    a = KEYS_A
    near = (a + 2) * dist**3 - (a + 3) * dist**2 + 1
    far = a * dist**3 - 5 * a * dist**2 + 8 * a * dist - 4 * a
    return np.where(dist <= 1, near, far)


def keys_cubic_weights(factor) -> np.ndarray:
    """Weights of the four taps ``k-1, k, k+1, k+2`` for every offset an output sample can have.

    With σ = ``num / den`` (:func:`factor_fraction`), row ``r`` is for output samples ``r / num``
    past a tap (for an integer σ: output phase ``r / σ``).

    Returns
    -------
    weights : ndarray, shape ``(num, 4)``, float64; each row sums to 1 and row 0 is ``[0, 1, 0, 0]``.

    Examples
    --------
    >>> keys_cubic_weights(2)
    array([[ 0.    ,  1.    ,  0.    ,  0.    ],
           [-0.0625,  0.5625,  0.5625, -0.0625]])
    """
    num = factor_fraction(factor).numerator
    return keys_cubic_kernel(np.arange(num) / num)


def upsampled_length(n: int, factor) -> int:
    """Number of samples after upsampling ``n`` samples by ``factor``: ``floor((n - 1)·σ) + 1``.

    Examples
    --------
    >>> upsampled_length(10, 4), upsampled_length(10, 4.5), upsampled_length(10, 1 / 0.3)
    (37, 41, 31)
    """
    f = factor_fraction(factor)
    return (int(n) - 1) * f.numerator // f.denominator + 1


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


def cubic_positions(out_indices, factor) -> tuple[np.ndarray, np.ndarray]:
    """Tap ``k = floor(m / σ)`` and tap weights of output samples ``m``, on an unbounded axis.

    Output sample ``m`` is interpolated from input samples ``k-1 .. k+2`` with the returned
    weights; unlike :func:`cubic_taps` nothing is mirrored or range-checked, for callers that
    hold the input samples around ``k`` themselves.

    Returns
    -------
    k : ndarray of int64, shape of ``out_indices``.
    weights : ndarray of float64, shape ``out_indices.shape + (4,)``.

    Examples
    --------
    >>> k, w = cubic_positions([0, 9, 11], 4.5)
    >>> k.tolist(), w[:, 1].round(4).tolist()
    ([0, 2, 2], [1.0, 1.0, 0.6379])
    """
    f = factor_fraction(factor)
    out_indices = np.asarray(out_indices, dtype=np.int64)
    k, r = np.divmod(out_indices * f.denominator, f.numerator)
    return k, keys_cubic_kernel(r / f.numerator)


def cubic_taps(out_indices: np.ndarray, n: int, factor) -> tuple[np.ndarray, np.ndarray]:
    """Input tap indices and weights for arbitrary output samples of an upsampled axis.

    Parameters
    ----------
    out_indices : array of int
        Output sample indices, each in ``[0, upsampled_length(n, factor))``.
    n : int
        Number of input samples.
    factor : int or float
        Upsampling factor σ >= 1 (see :func:`factor_fraction`).

    Returns
    -------
    taps : ndarray of int, shape ``(len(out_indices), 4)``, mirrored into ``[0, n)``.
    weights : ndarray of float64, same shape.
    """
    out_indices = np.asarray(out_indices, dtype=np.int64)
    length = upsampled_length(n, factor)
    if out_indices.size and (out_indices.min() < 0 or out_indices.max() >= length):
        raise ValueError(f"output indices must lie in [0, {length}) for n={n}, factor={factor}")
    k, weights = cubic_positions(out_indices, factor)
    taps = reflect_indices(k[:, None] + np.arange(-1, 3)[None, :], n)
    return taps, weights


def upsample_axis(x: np.ndarray, factor, axis: int = 0, out_indices: np.ndarray | None = None) -> np.ndarray:
    """Cubic upsampling of ``x`` along ``axis`` by the factor σ (grid convention above).

    Parameters
    ----------
    x : ndarray
        Input array, any number of dimensions.
    factor : int or float
        Upsampling factor σ >= 1, not necessarily an integer (1 returns a float32 copy).
    axis : int
        Axis to upsample.
    out_indices : array of int, optional
        Compute only these output samples (default: all ``floor((n - 1)·σ) + 1``).

    Returns
    -------
    ndarray, float32.

    Examples
    --------
    >>> y = upsample_axis(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), 2)
    >>> y.shape, y[::2].tolist(), float(y[3])
    ((9,), [0.0, 1.0, 2.0, 3.0, 4.0], 1.5)
    >>> y = upsample_axis(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), 2.5)
    >>> y.shape, y[::5].tolist(), round(float(y[3]), 4)
    ((11,), [0.0, 2.0, 4.0], 1.2)
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


def upsample_planes(x, factor, start: int, stop: int, lateral: tuple = ()) -> np.ndarray:
    """Planes ``start:stop`` of :func:`upsample_axis` ``(x, factor, axis=0)``, reading only the planes they need.

    The same float32 operations in the same order as :func:`upsample_axis`, so the planes are
    bit-identical to those of the whole upsampled volume; only the input planes under the
    cubic taps (and the ``lateral`` part of them) are read, so ``x`` may be a lazy array
    (a zarr array) far larger than memory.

    Parameters
    ----------
    x : array-like, shape (n, ...)
        Input with numpy slicing along its first axis.
    factor : int or float
        σ, as for :func:`upsample_axis`.
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
    >>> bool((upsample_planes(x, 2.5, 3, 7) == upsample_axis(x, 2.5)[3:7]).all())
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


def subsampled_length(n: int, factor, phase: int = 0) -> int:
    """Number of positions ``phase + k·σ`` (k = 0, 1, ...) within ``n`` samples, i.e. at most ``n - 1``.

    Examples
    --------
    >>> subsampled_length(61, 4, 2), subsampled_length(10, 4.5), subsampled_length(9, 4.5, 1)
    (15, 3, 2)
    """
    f = factor_fraction(factor)
    if int(n) - 1 < phase:
        return 0
    return (int(n) - 1 - int(phase)) * f.denominator // f.numerator + 1


def subsample_axis(x: np.ndarray, factor, axis: int = 0, phase: int = 0) -> np.ndarray:
    """The samples of ``x`` at positions ``phase + k·σ`` along ``axis``: what a step of σ acquires.

    Positions that are whole samples are copied (for an integer σ, ``x[phase::σ]``); positions
    between samples are interpolated with a quintic B-spline through the samples along ``axis``
    (not-a-knot ends; cubic or linear for axes shorter than 6 or 4 samples), which is accurate
    for a signal blurred along ``axis`` (module docstring) and meaningless for a sharp one.

    Parameters
    ----------
    x : ndarray
        The signal, any number of dimensions.
    factor : int or float
        Sampling step σ >= 1, in samples of ``x``.
    axis : int
    phase : int
        Position of the first sample, an integer in ``[0, σ)``.

    Returns
    -------
    ndarray, dtype of ``x`` for an integer σ, else float32; ``subsampled_length(n, σ, phase)`` samples along ``axis``.

    Examples
    --------
    >>> x = np.arange(10.0) ** 2
    >>> subsample_axis(x, 4.5).tolist(), subsample_axis(x, 3, phase=1).tolist()
    ([0.0, 20.25, 81.0], [1.0, 16.0, 49.0])
    """
    f = factor_fraction(factor)
    x = np.asarray(x)
    axis = axis % x.ndim
    n = x.shape[axis]
    if int(phase) != phase or not 0 <= phase < f:
        raise ValueError(f"phase must be an integer in [0, {factor}), got {phase}")
    count = subsampled_length(n, f, int(phase))
    # positions phase + k·num/den, as integer numerators over den
    numerators = int(phase) * f.denominator + np.arange(count, dtype=np.int64) * f.numerator
    whole = numerators % f.denominator == 0
    if f.denominator == 1:
        return np.take(x, numerators, axis=axis)
    xm = np.moveaxis(x, axis, 0)
    out = np.empty((count,) + xm.shape[1:], np.float32)
    out[whole] = xm[numerators[whole] // f.denominator]
    between = ~whole
    if between.any():
        weights = _spline_weights(n, f.numerator, f.denominator, int(phase))
        flat = xm.reshape(n, -1)
        inner = out.reshape(count, -1)
        step = max(1, (1 << 22) // n)  # columns at a time: a few tens of MB of float64
        for c in range(0, flat.shape[1], step):
            inner[between, c : c + step] = weights @ flat[:, c : c + step].astype(np.float64)
    return np.moveaxis(out, 0, axis)


@functools.lru_cache(maxsize=16)
def _spline_weights(n: int, numerator: int, denominator: int, phase: int) -> np.ndarray:
    """Weights ``(m, n)`` of the interpolating spline through ``n`` samples at the positions between them.

    The spline is linear in the samples, so sampling it is a matrix; built once per axis length,
    factor and phase (every plane of a volume shares it), it turns each plane's spline fit into
    one matrix product.
    """
    count = subsampled_length(n, Fraction(numerator, denominator), phase)
    numerators = phase * denominator + np.arange(count, dtype=np.int64) * numerator
    positions = numerators[numerators % denominator != 0] / denominator
    order = 5 if n >= 6 else 3 if n >= 4 else 1
    weights = np.empty((len(positions), n))
    # impulses of at most 2^19 samples (4 MiB) at a time: the spline's working memory (about 5x
    # that) stays ~20 MiB for planes of any width, and the fit is no slower than in larger pieces
    step = max(1, (1 << 19) // n)
    for j in range(0, n, step):  # the spline through unit impulses j .. j + step
        width = min(step, n - j)
        impulses = np.zeros((n, width))
        impulses[j + np.arange(width), np.arange(width)] = 1.0
        weights[:, j : j + width] = make_interp_spline(np.arange(n), impulses, k=order, axis=0)(positions)
    weights.flags.writeable = False
    return weights


def subsample_upsample(x: np.ndarray, factor, axis: int = 0, phase: int = 0) -> tuple[np.ndarray, int]:
    """Sample ``x`` every σ samples along ``axis`` from ``phase`` on (:func:`subsample_axis`), then upsample back.

    Returns
    -------
    y : ndarray, float32
        The degraded signal; sample ``i`` of ``y`` lies at position ``phase + i`` of ``x``.
    start : int
        ``phase``; the comparable part of ``x`` is ``x[start : start + y.shape[axis]]`` along ``axis``.
    """
    sub = subsample_axis(x, factor, axis=axis, phase=phase)
    if sub.shape[axis % np.ndim(x)] < 2:
        raise ValueError(f"axis of length {np.shape(x)[axis]} is too short to subsample by {factor}")
    return upsample_axis(sub, factor, axis=axis), int(phase)


#: samples a side of one tile's FFT in :func:`blur2d_bands` (2^9: a fast FFT size; larger for a
#: kernel wider than a quarter of it). Each tile computes this less the kernel's size plus one
#: output samples a side; the working memory of a tile is a few MiB whatever the image's size.
BLUR_FFT_SIZE = 512


def blur2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve a 2D image with a 2D kernel, mirroring the image at its edges; float32 output.

    The image is mirrored (``numpy.pad`` mode ``reflect``; ``edge`` for an image one sample
    thick) by half the kernel's size on every side and convolved with the kernel where it fits
    (``valid``), tile by tile (:func:`blur2d_bands`), so that the working memory beyond the
    result follows the tile size, not the image's.

    Examples
    --------
    >>> image = np.arange(12.0).reshape(3, 4)
    >>> blur2d(image, np.ones((1, 3)) / 3).astype(float).round(3).tolist()
    [[0.667, 1.0, 2.0, 2.333], [4.667, 5.0, 6.0, 6.333], [8.667, 9.0, 10.0, 10.333]]
    """
    _check_blur_arguments(image, kernel)
    out = np.empty(blurred_shape(np.shape(image), np.shape(kernel)), np.float32)
    for start, stop, rows in blur2d_bands(image, kernel):
        out[start:stop] = rows
    return out


def blur2d_bands(image: np.ndarray, kernel: np.ndarray):
    """:func:`blur2d` of ``image`` as bands of whole rows, top to bottom, each computed in tiles.

    A band's rows are computed by FFT in tiles of at most ``BLUR_FFT_SIZE`` samples a side
    (overlap-save: each tile reads the image with the kernel's margin, mirrored only at the
    image's own edges), so a band and one tile's transforms are all the memory it needs. The
    result equals one FFT convolution of the whole mirrored image up to float32 rounding
    (about 1e-7 relative). A caller that reduces the rows band by band (:func:`isonet.patches.acquire_plane`)
    never holds the whole blurred image.

    Parameters
    ----------
    image : ndarray (H, W)
        Any real dtype (read as float32).
    kernel : ndarray (kh, kw)

    Yields
    ------
    start, stop : int
        The band's rows of the blurred image (``H`` rows for an odd ``kh``).
    rows : ndarray (stop - start, W), float32

    Examples
    --------
    >>> image = np.random.default_rng(0).random((1200, 700))
    >>> kernel = np.ones((17, 65)) / (17 * 65)
    >>> bands = [(start, stop) for start, stop, rows in blur2d_bands(image, kernel)]
    >>> bands
    [(0, 400), (400, 800), (800, 1200)]
    """
    image, kernel = np.asarray(image), np.asarray(kernel)
    _check_blur_arguments(image, kernel)
    out_shape = blurred_shape(image.shape, kernel.shape)
    (rows_per_tile, fft_rows), (cols_per_tile, fft_cols) = (
        _blur_tiling(n, k) for n, k in zip(out_shape, kernel.shape))
    spectrum = rfft2(np.asarray(kernel, np.float32), s=(fft_rows, fft_cols))
    # input sample of the mirrored image under output sample 0 - half the kernel, per axis
    index = [_mirrored_indices(n, k, image.shape) for n, k in zip(image.shape, kernel.shape)]
    kh, kw = kernel.shape
    for r0 in range(0, out_shape[0], rows_per_tile):
        r1 = min(r0 + rows_per_tile, out_shape[0])
        band = np.empty((r1 - r0, out_shape[1]), np.float32)
        for c0 in range(0, out_shape[1], cols_per_tile):
            c1 = min(c0 + cols_per_tile, out_shape[1])
            tile = np.asarray(image[np.ix_(index[0][r0 : r1 + kh - 1], index[1][c0 : c1 + kw - 1])], np.float32)
            full = irfft2(rfft2(tile, s=(fft_rows, fft_cols)) * spectrum, s=(fft_rows, fft_cols))
            band[:, c0:c1] = full[kh - 1 : kh - 1 + r1 - r0, kw - 1 : kw - 1 + c1 - c0]
        yield r0, r1, band


def _check_blur_arguments(image, kernel) -> None:
    if np.ndim(image) != 2 or np.ndim(kernel) != 2:
        raise ValueError(f"blur2d needs 2D image and kernel, got {np.shape(image)} and {np.shape(kernel)}")


def blurred_shape(image_shape, kernel_shape) -> tuple[int, int]:
    """Shape of :func:`blur2d`'s result: the image's for an odd kernel (one more per even axis).

    Examples
    --------
    >>> blurred_shape((40, 50), (17, 65)), blurred_shape((40, 50), (4, 5))
    ((40, 50), (41, 50))
    """
    return tuple(n + 2 * (k // 2) - k + 1 for n, k in zip(image_shape, kernel_shape))


def _blur_tiling(n_out: int, k: int) -> tuple[int, int]:
    """Output samples per tile and FFT size along one axis of ``n_out`` outputs and a kernel of ``k``.

    Tiles of nearly equal size, as few as FFTs of ``BLUR_FFT_SIZE`` (or of four kernels) allow;
    the FFT size is the fast size at or above a tile and its margin, so every tile shares one
    kernel spectrum. Overlap-save needs no more: the ``valid`` outputs of a circular
    convolution at least as long as the tile are free of wrap-around.
    """
    largest = max(BLUR_FFT_SIZE, next_fast_len(4 * (k - 1) + 1, real=True))
    tiles = -(-n_out // (largest - k + 1))
    per_tile = -(-n_out // tiles)
    return per_tile, next_fast_len(per_tile + k - 1, real=True)


def _mirrored_indices(n: int, k: int, shape) -> np.ndarray:
    """Indices into an axis of ``n`` samples of that axis padded by ``k // 2`` a side as :func:`blur2d` pads it."""
    positions = np.arange(-(k // 2), n + k // 2)
    if min(shape) > 1:
        return reflect_indices(positions, n)
    return np.clip(positions, 0, n - 1)


# relative tolerance between two axial factors, and between a voxel-size ratio and the simple
# fraction it stands for: voxel sizes in metadata carry rounding noise far below it, and a
# position error of 1e-6 of a plane per plane is far below anything an image shows
FACTOR_RTOL = 1e-6


def axial_factor(voxel_size, subsample=None, source="input") -> int | float:
    """Axial factor σ = voxel z / voxel x, or ``subsample`` when given; an int when integral.

    isonet keeps factors exact rather than rounding them: z 0.9 µm over xy 0.2 µm is σ = 4.5,
    1.3 / 0.325 is 4 and 1.0 / 0.3 is 10/3 (passed on as the float nearest to it, see
    :func:`isonet.degrade.factor_fraction`). A ratio within ``FACTOR_RTOL`` of a fraction with a
    denominator up to 1000 is that fraction (metadata stores 0.2 µm as 0.19999999 often enough).

    Raises
    ------
    InputError
        ``subsample`` is not a number >= 1, the lateral voxel sizes differ, or z / x is below 1.

    Examples
    --------
    >>> axial_factor((0.8, 0.2, 0.2)), axial_factor((0.9, 0.2, 0.2)), axial_factor((1.3, 0.325, 0.325))
    (4, 4.5, 4)
    >>> axial_factor((1.0, 0.3, 0.3)) == 10 / 3, axial_factor((0.8, 0.19999999, 0.19999999))
    (True, 4)
    """
    if subsample is not None:
        if isinstance(subsample, bool) or not isinstance(subsample, numbers.Real) or not subsample >= 1 \
                or not math.isfinite(subsample):
            raise InputError(f"{source}: subsample must be a number >= 1 (the z step in pixels), got {subsample}")
        return exact_factor(_simple_fraction(subsample))
    vz, vy, vx = voxel_size
    if abs(vy - vx) > 1e-3 * vx:
        raise InputError(f"{source}: lateral voxel sizes differ (y {vy} µm, x {vx} µm); resample to square pixels first")
    ratio = _simple_fraction(vz / vx)
    if ratio < 1:
        raise InputError(
            f"{source}: voxel size ratio z/x = {vz}/{vx} = {float(ratio):.4g} is below 1, so z is sampled more finely "
            "than x and there is nothing to restore; check the voxel sizes (z y x) or set subsample: for this sample"
        )
    return exact_factor(ratio)


def _simple_fraction(value) -> Fraction | float:
    """``value``, or the fraction with a denominator up to 1000 within ``FACTOR_RTOL`` of it."""
    near = Fraction(float(value)).limit_denominator(1000)
    return near if abs(near - Fraction(float(value))) <= FACTOR_RTOL * abs(value) else float(value)


def same_factor(a, b) -> bool:
    """Whether two axial factors agree within ``FACTOR_RTOL`` (relative)."""
    return abs(float(a) - float(b)) <= FACTOR_RTOL * max(abs(float(a)), abs(float(b)))


def isotropic_voxel_size(voxel_size, factor) -> tuple[float, float, float]:
    """Voxel size of a volume upsampled along z by σ: ``(dz / σ, dy, dx)``.

    When ``dz / σ`` is ``dx`` (within ``FACTOR_RTOL``), as it is whenever σ came from the voxel
    sizes, the z size is written as ``dx`` itself, not as a rounded quotient.

    Examples
    --------
    >>> isotropic_voxel_size((0.9, 0.2, 0.2), 4.5), isotropic_voxel_size((1.0, 0.3, 0.3), 10 / 3)
    ((0.2, 0.2, 0.2), (0.3, 0.3, 0.3))
    """
    vz, vy, vx = (float(v) for v in voxel_size)
    z = vz / float(factor)
    return (vx if abs(z - vx) <= FACTOR_RTOL * vx else z, vy, vx)
