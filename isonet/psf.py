"""Point spread functions on the isotropic (lateral) voxel grid, axes ``zyx``.

Every PSF here is sampled on the isotropic grid whose voxel size is the lateral pixel size of the
acquisition: a gaussian with ``sigma_z = 8`` is 8 lateral pixels wide along z, whatever the
axial sampling of the acquired volume. All PSFs are float64, non-negative, sum to 1 and have odd
shapes with the peak in the central voxel.
"""

from __future__ import annotations

import numpy as np


def _odd(n: float) -> int:
    n = int(np.ceil(n))
    return n + 1 - n % 2


def gaussian_psf(sigma_xy: float, sigma_z: float, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Anisotropic 3D gaussian PSF.

    Parameters
    ----------
    sigma_xy, sigma_z : float
        Standard deviations in isotropic voxels (lateral pixels), laterally and axially.
    shape : tuple of int, optional
        Odd output shape ``(z, y, x)``; default covers +-4 sigma on each axis.

    Returns
    -------
    psf : ndarray, float64, shape ``shape``, summing to 1, peak in the central voxel.

    Examples
    --------
    >>> h = gaussian_psf(2, 8)
    >>> h.shape, round(float(h.sum()), 6)
    ((65, 17, 17), 1.0)
    """
    if sigma_xy <= 0 or sigma_z <= 0:
        raise ValueError(f"gaussian PSF needs positive sigmas, got sigma_xy={sigma_xy}, sigma_z={sigma_z}")
    if shape is None:
        shape = (_odd(8 * sigma_z + 1), _odd(8 * sigma_xy + 1), _odd(8 * sigma_xy + 1))
    if any(s % 2 == 0 for s in shape):
        raise ValueError(f"PSF shape must be odd on every axis so that it has a centre voxel, got {shape}")
    grids = np.meshgrid(*[np.arange(s) - s // 2 for s in shape], indexing="ij")
    sig = (sigma_z, sigma_xy, sigma_xy)
    h = np.exp(-0.5 * sum((g / s) ** 2 for g, s in zip(grids, sig)))
    return h / h.sum()


def rotate_psf_to_lateral(psf: np.ndarray) -> np.ndarray:
    """Rotate a ``zyx`` PSF so that its axial profile lies along x (``h_rot``).

    The result is ``h`` with axes z and x exchanged: ``h_rot[i, j, k] == h[k, j, i]``.
    Applied to a lateral (yx) plane it blurs x as the microscope blurs z.
    """
    if psf.ndim != 3:
        raise ValueError(f"PSF must be 3D (z, y, x), got shape {psf.shape}")
    return np.ascontiguousarray(np.transpose(psf, (2, 1, 0)))


def lateral_plane_kernel(psf_rot: np.ndarray) -> np.ndarray:
    """2D kernel (y, x) that a rotated PSF applies to a lateral plane of a dense specimen.

    A yx plane of ``h_rot * f`` is, for structures extended along z at the PSF's lateral scale,
    the plane of ``f`` blurred by the projection of ``h_rot`` along z. Sums to 1.
    """
    if psf_rot.ndim != 3:
        raise ValueError(f"rotated PSF must be 3D (z, y, x), got shape {psf_rot.shape}")
    k = psf_rot.sum(axis=0)
    return k / k.sum()
