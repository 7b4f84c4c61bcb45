"""Baselines IsoNet is compared with: cubic upsampling, Richardson-Lucy, and SRCNN's training kernel.

* :func:`cubic_upsample` -- the acquired volume upsampled along z with the exact-grid Keys cubic
  of :mod:`isonet.degrade` (acquired plane ``k`` at ``z = k * factor`` lateral pixels, on an
  isotropic plane whenever that is an integer); what every other method starts from.
* :func:`richardson_lucy` -- Richardson-Lucy deconvolution of that volume with the acquisition
  PSF ``h`` (FFT convolutions, mirrored edges, float32, a known constant background such as the
  camera offset). Non-negative by construction; the iteration count is the regularisation.
* :func:`subsampling_kernel` -- the 2D training kernel of the SRCNN baseline: a delta. IsoNet-1
  trained with it learns to undo the axial subsampling alone and disregards the PSF.

All functions are pure: arrays and parameters in, arrays out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import fft as sp_fft

from isonet.degrade import exact_factor, upsample_axis
from isonet.errors import InputError

__all__ = ["cubic_upsample", "richardson_lucy", "subsampling_kernel"]


def cubic_upsample(acquired: np.ndarray, factor) -> np.ndarray:
    """Cubic upsampling of an anisotropic ``zyx`` volume along z onto the isotropic grid.

    Parameters
    ----------
    acquired : ndarray, shape (Z, Y, X)
        The acquired volume, z sampled every ``factor`` lateral pixels.
    factor : int or float
        Axial subsampling factor σ >= 1, not necessarily an integer.

    Returns
    -------
    volume : ndarray, float32, shape ``(floor((Z - 1) * factor) + 1, Y, X)``; plane ``k * factor``
        is acquired plane ``k`` exactly wherever ``k * factor`` is an integer.

    Examples
    --------
    >>> a = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)
    >>> u = cubic_upsample(a, 4)
    >>> u.shape, bool(np.array_equal(u[::4], a))
    ((9, 2, 2), True)
    >>> u = cubic_upsample(a, 4.5)  # planes 0 and 2 on isotropic planes 0 and 9, plane 1 at 4.5
    >>> u.shape, bool(np.array_equal(u[::9], a[::2]))
    ((10, 2, 2), True)
    """
    acquired = np.asarray(acquired)
    if acquired.ndim != 3:
        raise InputError(f"acquired volume must be 3D (z, y, x), got shape {acquired.shape}")
    if acquired.shape[0] < 2:
        raise InputError(f"acquired volume needs at least 2 z planes to upsample, got {acquired.shape[0]}")
    try:
        factor = exact_factor(factor)
    except ValueError:
        raise InputError(f"factor must be a number >= 1, got {factor!r}") from None
    return upsample_axis(acquired, factor, axis=0)


def subsampling_kernel() -> np.ndarray:
    """Training kernel of the SRCNN baseline: a 1x1 delta (subsampling only, no blur).

    Examples
    --------
    >>> subsampling_kernel()
    array([[1.]])
    """
    return np.ones((1, 1))


def richardson_lucy(
    volume: np.ndarray,
    psf: np.ndarray,
    iterations: int = 10,
    background: float = 0.0,
    *,
    workers: int = 1,
    callback: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Richardson-Lucy deconvolution of a 3D volume with a known constant background.

    Model: ``volume ~ Poisson(psf * x + background)`` with ``x >= 0``. Each iteration is
    ``x <- x * psf^T * (volume / (psf * x + background))``, started from
    ``max(volume - background, 0)``. The volume is padded by mirroring (``numpy.pad`` mode
    ``reflect``) by at least half the PSF on every side, so the circular FFT convolutions never
    wrap real data into the result; the padded border is cropped at the end. Computed in float32.
    Because ``psf`` sums to 1 the iterations keep ``sum(psf * x + background)`` close to
    ``sum(volume)`` (exactly so on the padded, periodic domain).

    Parameters
    ----------
    volume : ndarray, shape (z, y, x)
        Image on the PSF's (isotropic) grid, e.g. :func:`cubic_upsample` of the acquisition.
        Negative values (read noise, interpolation overshoot) are clipped to 0.
    psf : ndarray, 3D
        Non-negative PSF on the same grid; odd shape, normalised to sum 1 here.
    iterations : int
        Number of iterations, >= 0 (0 returns ``max(volume - background, 0)``).
    background : float
        Constant background in the units of ``volume`` (the camera offset), >= 0.
    workers : int
        Threads for scipy.fft.
    callback : callable, optional
        Called as ``callback(i, x_i)`` after iteration ``i`` (1-based) with a view of the current
        estimate (cropped, do not modify): iteration-count curves in one run.

    Returns
    -------
    x : ndarray, float32, shape of ``volume``, non-negative; background removed.

    Examples
    --------
    >>> from isonet.psf import gaussian_psf
    >>> from scipy.ndimage import gaussian_filter
    >>> x = np.zeros((24, 24, 24), np.float32); x[12, 12, 12] = 1000
    >>> y = gaussian_filter(x, (3, 1, 1))
    >>> d = richardson_lucy(y, gaussian_psf(1, 3), iterations=30)
    >>> bool(d[12, 12, 12] > 3 * y[12, 12, 12]), bool(d.min() >= 0)
    (True, True)
    """
    volume = np.asarray(volume)
    psf = np.asarray(psf, dtype=np.float64)
    if volume.ndim != 3 or psf.ndim != 3:
        raise InputError(f"volume and psf must both be 3D (z, y, x), got {volume.shape} and {psf.shape}")
    if any(s % 2 == 0 for s in psf.shape):
        raise InputError(f"psf shape must be odd on every axis, got {psf.shape}")
    if not np.all(np.isfinite(psf)) or psf.min() < 0 or psf.sum() <= 0:
        raise InputError("psf must be finite and non-negative with a positive sum")
    if not (isinstance(iterations, (int, np.integer)) and iterations >= 0):
        raise InputError(f"iterations must be a non-negative integer, got {iterations!r}")
    if not (np.isfinite(background) and background >= 0):
        raise InputError(f"background must be a non-negative number, got {background!r}")

    y = np.clip(np.asarray(volume, dtype=np.float32), 0, None)
    b = np.float32(background)
    half = [k // 2 for k in psf.shape]
    # pad to at least half the PSF, then up to a fast FFT length; all of it mirrored
    fshape = [sp_fft.next_fast_len(n + 2 * h, real=True) for n, h in zip(y.shape, half)]
    pads = [(h, f - n - h) for n, h, f in zip(y.shape, half, fshape)]
    y = np.pad(y, pads, mode="reflect" if min(volume.shape) > 1 else "edge")
    inner = tuple(slice(p[0], p[0] + n) for p, n in zip(pads, volume.shape))

    # PSF centred on voxel 0 of the periodic domain
    kernel = np.zeros(fshape, np.float32)
    kernel[tuple(slice(0, k) for k in psf.shape)] = (psf / psf.sum()).astype(np.float32)
    kernel = np.roll(kernel, [-h for h in half], axis=(0, 1, 2))
    k_hat = sp_fft.rfftn(kernel, workers=workers)
    k_hat_conj = np.conj(k_hat)

    def convolve(u, k):
        return sp_fft.irfftn(sp_fft.rfftn(u, workers=workers) * k, fshape, workers=workers).astype(np.float32)

    eps = np.float32(1e-6 * max(float(y.max()), 1e-12))
    x = np.clip(y - b, eps, None)
    for i in range(int(iterations)):
        ratio = y / np.maximum(convolve(x, k_hat) + b, eps)
        x *= np.clip(convolve(ratio, k_hat_conj), 0, None)
        if callback is not None:
            callback(i + 1, x[inner])
    if not iterations:
        return np.clip(np.asarray(volume, np.float32) - b, 0, None)
    return np.ascontiguousarray(x[inner])
