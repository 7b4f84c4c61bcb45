"""Measurements on PSFs and kernels: FWHM, the flips a kernel commutes with."""

from __future__ import annotations

import numpy as np

from isonet.errors import InputError
from isonet.psf._checks import _check_array


def fwhm(profile_1d: np.ndarray) -> float:
    """Full width at half maximum of a 1D profile, in samples.

    The half-maximum crossings on either side of the maximum are found by linear interpolation
    between the samples that straddle them; no baseline is subtracted.

    Parameters
    ----------
    profile_1d : array_like, shape (n,)
        Non-negative profile with a single main peak.

    Returns
    -------
    width : float

    Raises
    ------
    InputError
        If the profile is not 1D and finite, has no positive maximum, or does not fall to half
        maximum on both sides (enlarge the PSF).

    Examples
    --------
    >>> round(fwhm(np.exp(-0.5 * (np.arange(-20, 21) / 3.0) ** 2)), 2)
    7.09
    """
    p = _check_array(profile_1d, 1, "profile")
    i = int(np.argmax(p))
    half = 0.5 * p[i]
    if half <= 0:
        raise InputError("profile has no positive maximum, so no FWHM")
    below_left = np.flatnonzero(p[:i] < half)
    below_right = np.flatnonzero(p[i:] < half)
    if below_left.size == 0 or below_right.size == 0:
        raise InputError(
            f"profile of length {p.size} does not fall to half maximum on both sides; enlarge it"
        )
    j = below_left[-1]  # p[j] < half <= p[j + 1]
    left = j + (half - p[j]) / (p[j + 1] - p[j])
    k = i + below_right[0]  # p[k - 1] >= half > p[k]
    right = k - 1 + (p[k - 1] - half) / (p[k - 1] - p[k])
    return float(right - left)


def psf_fwhm(psf: np.ndarray) -> tuple[float, float, float]:
    """FWHM of a 3D PSF along z, y and x through its peak voxel, in voxels.

    Parameters
    ----------
    psf : ndarray, shape (z, y, x)

    Returns
    -------
    fwhm_z, fwhm_y, fwhm_x : float

    Examples
    --------
    >>> [round(w, 1) for w in psf_fwhm(gaussian_psf(2, 8))]
    [18.8, 4.8, 4.8]
    """
    psf = _check_array(psf, 3, "psf")
    z, y, x = np.unravel_index(np.argmax(psf), psf.shape)
    return fwhm(psf[:, y, x]), fwhm(psf[z, :, x]), fwhm(psf[z, y, :])


def commuting_flips(kernel2d: np.ndarray, rtol: float = 1e-3) -> tuple[int, ...]:
    """Axes of a 2D kernel along which a flip leaves it unchanged.

    Training pairs are augmented only with transforms that commute with the degradation: a flip
    along an axis where the kernel is symmetric maps a degraded patch onto the degradation of the
    flipped patch. Rotations by 90 degrees are never candidates: they exchange y and x, and the
    degradation blurs and subsamples x only.

    Parameters
    ----------
    kernel2d : ndarray, shape (y, x)
    rtol : float
        Allowed difference between kernel and flipped kernel, relative to the kernel's maximum
        absolute value.

    Returns
    -------
    axes : tuple of int
        Subset of ``(0, 1)`` in increasing order.

    Examples
    --------
    >>> k = lateral_plane_kernel(rotate_psf_to_lateral(gaussian_psf(2, 8)))
    >>> commuting_flips(k)
    (0, 1)
    >>> commuting_flips(k * np.linspace(1, 2, k.shape[1]))
    (0,)
    """
    k = _check_array(kernel2d, 2, "kernel")
    if not (np.isfinite(rtol) and rtol >= 0):
        raise InputError(f"rtol must be a non-negative number, got {rtol}")
    scale = np.abs(k).max()
    return tuple(a for a in (0, 1) if np.abs(np.flip(k, a) - k).max() <= rtol * scale)
