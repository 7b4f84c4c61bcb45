"""Microscope PSF models (gaussian, widefield, confocal, light-sheet) and the PSF measured from a bead.

Physical models use the `psfmodels <https://pypi.org/project/psfmodels/>`_ vectorial
Gibson-Lanni model when it is installed and a scalar Born-Wolf (Debye) model written here with
numpy/scipy otherwise.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, special
from scipy.signal import fftconvolve

from isonet.errors import InputError
from isonet.psf._checks import _check_array, _check_na, _check_positive, _check_shape, _fit_shape, _normalise, _odd

BACKENDS = ("auto", "psfmodels", "born_wolf")


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

    Raises
    ------
    InputError
        If a sigma is not positive or ``shape`` is not three odd positive integers.

    Examples
    --------
    >>> h = gaussian_psf(2, 8)
    >>> h.shape, round(float(h.sum()), 6)
    ((65, 17, 17), 1.0)
    """
    _check_positive(sigma_xy=sigma_xy, sigma_z=sigma_z)
    if shape is None:
        shape = (_odd(8 * sigma_z + 1), _odd(8 * sigma_xy + 1), _odd(8 * sigma_xy + 1))
    shape = _check_shape(shape)
    grids = np.meshgrid(*[np.arange(s) - s // 2 for s in shape], indexing="ij")
    sig = (sigma_z, sigma_xy, sigma_xy)
    h = np.exp(-0.5 * sum((g / s) ** 2 for g, s in zip(grids, sig)))
    return h / h.sum()


def _born_wolf_psf(shape, voxel_size_um, na, wavelength_um, refractive_index) -> np.ndarray:
    """Scalar Born-Wolf (Debye) widefield intensity PSF, peak 1, focus in the centre voxel.

    ``I(r, z) = |int_0^1 J0(k NA r rho) exp(i k z sqrt(n^2 - NA^2 rho^2)) rho d rho|^2`` with
    ``k = 2 pi / wavelength``: a uniformly filled circular pupil, no aberrations, point sampling.
    For small NA the defocus phase reduces to Born & Wolf's paraxial ``u = k NA^2 z / n``; the
    square root keeps the axial extent right at high NA (NA/n = 0.83 for NA 1.1 in water).
    """
    nz, ny, nx = shape
    k = 2 * np.pi / wavelength_um
    z = (np.arange(nz) - nz // 2) * voxel_size_um
    dy, dx = np.meshgrid(np.arange(ny) - ny // 2, np.arange(nx) - nx // 2, indexing="ij")
    r2 = dy**2 + dx**2
    r2_unique, inverse = np.unique(r2, return_inverse=True)
    r = np.sqrt(r2_unique) * voxel_size_um
    # enough Gauss-Legendre nodes for the fastest oscillation of either factor over the pupil
    span = k * na * r.max() + k * abs(z).max() * (refractive_index - np.sqrt(refractive_index**2 - na**2))
    rho, w = np.polynomial.legendre.leggauss(int(64 + 2 * span))
    rho, w = 0.5 * (rho + 1), 0.5 * w
    bessel = special.j0(k * na * np.outer(r, rho)) * (rho * w)  # (n_r, n_rho)
    defocus = np.exp(1j * k * np.outer(z, np.sqrt(refractive_index**2 - (na * rho) ** 2)))  # (nz, n_rho)
    field = defocus @ bessel.T  # (nz, n_r)
    intensity = np.abs(field) ** 2
    h = intensity[:, inverse.reshape(ny, nx)]
    return h / h.max()


def _psfmodels_psf(shape, voxel_size_um, na, wavelength_um, refractive_index) -> np.ndarray:
    """Vectorial Gibson-Lanni PSF from psfmodels, index-matched (no coverslip, no aberration)."""
    import psfmodels

    nz, ny, nx = shape
    n = refractive_index
    h = psfmodels.make_psf(
        nz,
        max(ny, nx),
        dxy=voxel_size_um,
        dz=voxel_size_um,
        NA=na,
        wvl=wavelength_um,
        ns=n,
        ni=n,
        ni0=n,
        tg=0,
        tg0=0,
        model="vectorial",
    )
    return _fit_shape(np.asarray(h, dtype=np.float64), shape)


def _have_psfmodels() -> bool:
    try:
        import psfmodels  # noqa: F401
    except ImportError:
        return False
    return True


def _detection_psf(shape, voxel_size_um, na, wavelength_um, refractive_index, backend) -> np.ndarray:
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        backend = "psfmodels" if _have_psfmodels() else "born_wolf"
    if backend == "psfmodels":
        if not _have_psfmodels():
            raise InputError("backend='psfmodels' needs the psfmodels package: pip install psfmodels")
        h = _psfmodels_psf(shape, voxel_size_um, na, wavelength_um, refractive_index)
    else:
        h = _born_wolf_psf(shape, voxel_size_um, na, wavelength_um, refractive_index)
    return np.clip(h, 0, None)


def widefield_psf(
    shape: tuple[int, int, int],
    voxel_size_um: float,
    na: float = 0.8,
    wavelength_um: float = 0.52,
    refractive_index: float = 1.33,
    *,
    backend: str = "auto",
) -> np.ndarray:
    """Widefield (single-lens detection) intensity PSF on the isotropic grid.

    Parameters
    ----------
    shape : tuple of int
        Odd output shape ``(z, y, x)``.
    voxel_size_um : float
        Isotropic voxel size in micrometres (the lateral pixel size in sample space).
    na : float
        Numerical aperture of the objective, below ``refractive_index``.
    wavelength_um : float
        Vacuum wavelength of the detected light, micrometres.
    refractive_index : float
        Refractive index of sample and immersion (index-matched, aberration free).
    backend : {"auto", "psfmodels", "born_wolf"}
        ``"psfmodels"``: vectorial Gibson-Lanni model (Aguet et al. 2009) from the psfmodels
        package; ``"born_wolf"``: the scalar Born-Wolf/Debye model implemented here; ``"auto"``:
        psfmodels when importable, else Born-Wolf.

    Returns
    -------
    psf : ndarray, float64, shape ``shape``, summing to 1, peak in the central voxel.

    Examples
    --------
    >>> h = widefield_psf((33, 17, 17), 0.1, na=0.8, backend="born_wolf")
    >>> h.shape, round(float(h.sum()), 6), np.unravel_index(h.argmax(), h.shape) == (16, 8, 8)
    ((33, 17, 17), 1.0, True)
    """
    shape = _check_shape(shape)
    _check_positive(voxel_size_um=voxel_size_um, wavelength_um=wavelength_um)
    _check_na("na", na, refractive_index)
    return _normalise(_detection_psf(shape, voxel_size_um, na, wavelength_um, refractive_index, backend))


def _pinhole_disk(diameter_um: float, voxel_size_um: float, supersample: int = 8) -> np.ndarray:
    """Area fraction of each voxel covered by a centred disk (2D, odd shape, sums to 1)."""
    radius = 0.5 * diameter_um / voxel_size_um
    half = int(np.ceil(radius + 0.5))
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    c = (np.arange(-half, half + 1)[:, None] + sub[None, :]).ravel()
    inside = (c[:, None] ** 2 + c[None, :] ** 2) <= radius**2
    n = 2 * half + 1
    disk = inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))
    if disk.sum() == 0:  # pinhole far below one voxel: a point
        disk[half, half] = 1.0
    return disk / disk.sum()


def confocal_psf(
    shape: tuple[int, int, int],
    voxel_size_um: float,
    na: float = 1.1,
    wavelength_excitation_um: float = 0.488,
    wavelength_emission_um: float = 0.52,
    refractive_index: float = 1.33,
    pinhole_au: float | None = None,
    *,
    backend: str = "auto",
) -> np.ndarray:
    """Point-scanning confocal intensity PSF: excitation PSF times pinhole-filtered emission PSF.

    ``h = h_ex * (h_em conv_xy pinhole)``, where ``h_ex`` and ``h_em`` are widefield PSFs
    (:func:`widefield_psf`) at the excitation and emission wavelengths through the same lens and
    the pinhole is a disk of diameter ``pinhole_au * 1.22 * wavelength_emission_um / na`` in
    sample space, convolved plane by plane within the computed field.

    Parameters
    ----------
    shape : tuple of int
        Odd output shape ``(z, y, x)``.
    voxel_size_um : float
        Isotropic voxel size in micrometres (the lateral pixel size in sample space).
    na : float
        Numerical aperture of the objective, below ``refractive_index``.
    wavelength_excitation_um, wavelength_emission_um : float
        Vacuum wavelengths, micrometres.
    refractive_index : float
        Refractive index of sample and immersion (index-matched, aberration free).
    pinhole_au : float, optional
        Pinhole diameter in Airy units; None or 0 is the ideal point pinhole
        (``h = h_ex * h_em``), whose lateral FWHM is about ``0.37 lambda / NA``.
    backend : {"auto", "psfmodels", "born_wolf"}
        Model for ``h_ex`` and ``h_em``, see :func:`widefield_psf`.

    Returns
    -------
    psf : ndarray, float64, shape ``shape``, summing to 1, peak in the central voxel.

    Examples
    --------
    >>> h = confocal_psf((33, 17, 17), 0.05, backend="born_wolf")
    >>> z, y, x = psf_fwhm(h)
    >>> bool(z > 2 * x), round(float(h.sum()), 6)
    (True, 1.0)
    """
    shape = _check_shape(shape)
    _check_positive(
        voxel_size_um=voxel_size_um,
        wavelength_excitation_um=wavelength_excitation_um,
        wavelength_emission_um=wavelength_emission_um,
    )
    _check_na("na", na, refractive_index)
    if pinhole_au is not None and not (np.isfinite(pinhole_au) and pinhole_au >= 0):
        raise InputError(
            f"pinhole_au must be None or a non-negative number of Airy units, got {pinhole_au!r}"
        )
    h_ex = _detection_psf(shape, voxel_size_um, na, wavelength_excitation_um, refractive_index, backend)
    h_em = _detection_psf(shape, voxel_size_um, na, wavelength_emission_um, refractive_index, backend)
    if pinhole_au:
        disk = _pinhole_disk(pinhole_au * 1.22 * wavelength_emission_um / na, voxel_size_um)
        h_em = fftconvolve(h_em, disk[None], mode="same", axes=(1, 2))
    return _normalise(h_ex * h_em)


def lightsheet_psf(
    shape: tuple[int, int, int],
    voxel_size_um: float,
    na_detection: float = 0.8,
    na_illumination: float = 0.1,
    wavelength_detection_um: float = 0.52,
    wavelength_illumination_um: float = 0.488,
    refractive_index: float = 1.33,
    *,
    backend: str = "auto",
) -> np.ndarray:
    """Light-sheet PSF: widefield detection PSF times the sheet's axial intensity profile.

    The sheet is a gaussian beam propagating along x, focused by ``na_illumination``, with waist
    ``w0 = lambda_ill / (pi n theta)``, ``theta = asin(NA_ill / n)``, and intensity
    ``exp(-2 z^2 / w0^2)`` (FWHM ``w0 sqrt(2 ln 2)``). Its divergence along x is ignored: the
    Rayleigh range ``pi w0^2 n / lambda_ill`` (about 21 um for the defaults, w0 = 1.55 um) is far
    larger than a PSF's field, so the profile depends on z only.

    Parameters
    ----------
    shape : tuple of int
        Odd output shape ``(z, y, x)``.
    voxel_size_um : float
        Isotropic voxel size in micrometres (the lateral pixel size in sample space).
    na_detection, na_illumination : float
        Numerical apertures of detection objective and illumination beam, below
        ``refractive_index``.
    wavelength_detection_um, wavelength_illumination_um : float
        Vacuum wavelengths, micrometres.
    refractive_index : float
        Refractive index of the sample and immersion medium.
    backend : {"auto", "psfmodels", "born_wolf"}
        Model for the detection PSF, see :func:`widefield_psf`.

    Returns
    -------
    psf : ndarray, float64, shape ``shape``, summing to 1, peak in the central voxel.

    Examples
    --------
    >>> h = lightsheet_psf((65, 17, 17), 0.1, backend="born_wolf")
    >>> w = widefield_psf((65, 17, 17), 0.1, backend="born_wolf")
    >>> bool(psf_fwhm(h)[0] < psf_fwhm(w)[0])
    True
    """
    shape = _check_shape(shape)
    _check_positive(
        voxel_size_um=voxel_size_um,
        wavelength_detection_um=wavelength_detection_um,
        wavelength_illumination_um=wavelength_illumination_um,
    )
    _check_na("na_detection", na_detection, refractive_index)
    _check_na("na_illumination", na_illumination, refractive_index)
    h_det = _detection_psf(
        shape, voxel_size_um, na_detection, wavelength_detection_um, refractive_index, backend
    )
    theta = math.asin(na_illumination / refractive_index)
    w0 = wavelength_illumination_um / (math.pi * refractive_index * theta)
    z = (np.arange(shape[0]) - shape[0] // 2) * voxel_size_um
    sheet = np.exp(-2 * z**2 / w0**2)
    return _normalise(h_det * sheet[:, None, None])


def psf_from_bead_stack(
    stack: np.ndarray,
    shape: tuple[int, int, int] | None = None,
    background_percentile: float = 50.0,
    noise_threshold: float = 3.0,
) -> np.ndarray:
    """PSF from a measured stack of one sub-resolution bead.

    The stack must already be on the isotropic grid (z resampled to the lateral pixel size); the
    file-reading wrapper does that with the acquisition's voxel sizes. Steps: subtract the
    background (a percentile of the stack), shift the bead's intensity centroid (over its
    half-maximum region) onto a voxel centre with a cubic-spline sub-voxel shift, zero the
    voxels below ``noise_threshold`` robust noise sigmas (so that the noise floor adds no mass),
    crop to an odd shape around the bead and normalise to sum 1.

    Parameters
    ----------
    stack : ndarray, shape (z, y, x)
        Bead image with a single bead, finite values.
    shape : tuple of int, optional
        Odd output shape; default the largest odd box centred on the bead that fits the stack.
    background_percentile : float
        Percentile of the stack taken as background (0-100). The median suits a stack that is
        mostly background; use a lower one for tight crops.
    noise_threshold : float
        Voxels below this many noise sigmas (1.4826 x median absolute deviation of the stack)
        above background are set to 0; 0 keeps them.

    Returns
    -------
    psf : ndarray, float64, shape ``shape``, summing to 1, bead centred.

    Raises
    ------
    InputError
        If the stack is not 3D, holds NaN/inf, has no signal above background, or ``shape`` does
        not fit around the bead.

    Examples
    --------
    >>> g = gaussian_psf(2, 4, shape=(41, 21, 21))
    >>> bead = 100 + 1000 * g / g.max()
    >>> h = psf_from_bead_stack(bead, shape=(31, 15, 15))
    >>> h.shape, np.unravel_index(h.argmax(), h.shape) == (15, 7, 7)
    ((31, 15, 15), True)
    """
    stack = _check_array(stack, 3, "bead stack")
    if not 0 <= background_percentile <= 100:
        raise InputError(f"background_percentile must be within 0-100, got {background_percentile}")
    if not (np.isfinite(noise_threshold) and noise_threshold >= 0):
        raise InputError(f"noise_threshold must be a non-negative number, got {noise_threshold}")
    if shape is not None:
        shape = _check_shape(shape)

    signal = stack - np.percentile(stack, background_percentile)
    positive = np.clip(signal, 0, None)
    smooth = ndimage.gaussian_filter(positive, 1.0)
    if smooth.max() <= 0:
        raise InputError(
            "bead stack has no signal above background; check the file and background_percentile"
        )
    # centroid over the connected half-maximum region around the peak: robust to noise elsewhere
    peak = np.unravel_index(np.argmax(smooth), smooth.shape)
    labels, _ = ndimage.label(smooth >= 0.5 * smooth.max())
    region = labels == labels[peak]
    centroid = np.array(ndimage.center_of_mass(positive * region))
    centre = np.round(centroid).astype(int)
    shifted = ndimage.shift(signal, centre - centroid, order=3, mode="nearest")

    noise = 1.4826 * np.median(np.abs(stack - np.median(stack)))
    shifted[shifted < max(noise_threshold * noise, 0.0)] = 0.0

    fits = np.minimum(centre, np.array(stack.shape) - 1 - centre)
    if shape is None:
        shape = tuple(int(2 * f + 1) for f in fits)
    half = np.array(shape) // 2
    if np.any(half > fits):
        largest = tuple(int(2 * f + 1) for f in fits)
        raise InputError(
            f"PSF shape {shape} does not fit around the bead at voxel {tuple(int(c) for c in centre)} "
            f"of a {stack.shape} stack; largest centred shape is {largest}"
        )
    crop = shifted[tuple(slice(c - h, c + h + 1) for c, h in zip(centre, half))]
    if crop.sum() <= 0:
        raise InputError("bead stack has no signal above the noise threshold; lower noise_threshold")
    return crop / crop.sum()
