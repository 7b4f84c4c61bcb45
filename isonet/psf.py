"""Point spread functions on the isotropic (lateral) voxel grid, axes ``zyx``.

Every PSF here is sampled on the isotropic grid whose voxel size is the lateral pixel size of the
acquisition: a gaussian with ``sigma_z = 8`` is 8 lateral pixels wide along z, whatever the
axial sampling of the acquired volume. All PSFs are float64, non-negative, sum to 1 and have odd
shapes with the peak in the central voxel.

Besides the microscope PSF ``h`` this module builds the kernels IsoNet's degradation model needs:
``h_rot`` (:func:`rotate_psf_to_lateral`), the isotropic PSF ``h_iso`` with ``h``'s lateral
resolution (:func:`isotropic_psf`) and the split kernel ``h_split`` with
``h_rot = h_iso * h_split`` (:func:`split_psf`).

Physical models (:func:`widefield_psf`, :func:`confocal_psf`, :func:`lightsheet_psf`) use the
`psfmodels <https://pypi.org/project/psfmodels/>`_ vectorial Gibson-Lanni model when it is
installed and a scalar Born-Wolf (Debye) model written here with numpy/scipy otherwise.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage, special
from scipy.interpolate import CubicSpline
from scipy.signal import fftconvolve

from isonet.errors import InputError

__all__ = [
    "gaussian_psf",
    "widefield_psf",
    "confocal_psf",
    "lightsheet_psf",
    "psf_from_bead_stack",
    "rotate_psf_to_lateral",
    "lateral_plane_kernel",
    "isotropic_psf",
    "split_psf",
    "fwhm",
    "psf_fwhm",
    "commuting_flips",
    "make_psf",
    "PSF_KINDS",
]

BACKENDS = ("auto", "psfmodels", "born_wolf")


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _odd(n: float) -> int:
    n = int(np.ceil(n))
    return n + 1 - n % 2


def _check_shape(shape, name: str = "shape") -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in shape)
        ok = len(shape) == 3
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be three integers (z, y, x), got {shape!r}")
    if any(s < 1 or s % 2 == 0 for s in shape):
        raise InputError(
            f"{name} must be positive and odd on every axis so that it has a centre voxel, got {shape}"
        )
    return shape


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v) and v > 0):
            raise InputError(f"{name} must be a positive finite number, got {v!r}")


def _check_na(na_name: str, na: float, refractive_index: float) -> None:
    _check_positive(**{na_name: na, "refractive_index": refractive_index})
    if na >= refractive_index:
        raise InputError(f"{na_name}={na} must be smaller than refractive_index={refractive_index}")


def _check_array(a, ndim: int, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim:
        axes = {1: "(n,)", 2: "(y, x)", 3: "(z, y, x)"}[ndim]
        raise InputError(f"{name} must be {ndim}D {axes}, got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"{name} is empty (shape {a.shape})")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise InputError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or infinite values; replace or crop them first")
    return a


def _check_psf(psf, name: str = "psf") -> np.ndarray:
    psf = _check_array(psf, 3, name)
    if any(s % 2 == 0 for s in psf.shape):
        raise InputError(f"{name} shape must be odd on every axis, got {psf.shape}")
    if psf.min() < 0 or psf.max() <= 0:
        raise InputError(f"{name} must be non-negative with a positive peak")
    return psf


def _normalise(h: np.ndarray) -> np.ndarray:
    h = np.clip(h, 0, None)
    return h / h.sum()


def _fit_shape(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre-crop or zero-pad an odd-shaped array to another odd shape, keeping the centre voxel."""
    out = np.zeros(shape, dtype=a.dtype)
    src, dst = [], []
    for n_in, n_out in zip(a.shape, shape):
        n = min(n_in, n_out)
        src.append(slice(n_in // 2 - n // 2, n_in // 2 + n // 2 + 1))
        dst.append(slice(n_out // 2 - n // 2, n_out // 2 + n // 2 + 1))
    out[tuple(dst)] = a[tuple(src)]
    return out


# --------------------------------------------------------------------------------------------
# model PSFs
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# kernels of the degradation model
# --------------------------------------------------------------------------------------------


def rotate_psf_to_lateral(psf: np.ndarray) -> np.ndarray:
    """Rotate a ``zyx`` PSF so that its axial profile lies along x (``h_rot``).

    The result is ``h`` with axes z and x exchanged: ``h_rot[i, j, k] == h[k, j, i]``.
    Applied to a lateral (yx) plane it blurs x as the microscope blurs z.

    Parameters
    ----------
    psf : ndarray, shape (z, y, x)

    Returns
    -------
    psf_rot : ndarray, shape (x, y, z) of the input

    Examples
    --------
    >>> rotate_psf_to_lateral(gaussian_psf(2, 8)).shape
    (17, 17, 65)
    """
    psf = np.asarray(psf)
    if psf.ndim != 3:
        raise InputError(f"PSF must be 3D (z, y, x), got shape {psf.shape}")
    return np.ascontiguousarray(np.transpose(psf, (2, 1, 0)))


def lateral_plane_kernel(psf_rot: np.ndarray) -> np.ndarray:
    """2D kernel (y, x) that a rotated PSF applies to a lateral plane of a dense specimen.

    A yx plane of ``h_rot * f`` is, for structures extended along z at the PSF's lateral scale,
    the plane of ``f`` blurred by the projection of ``h_rot`` along z. Sums to 1.

    Parameters
    ----------
    psf_rot : ndarray, shape (z, y, x)
        Rotated PSF from :func:`rotate_psf_to_lateral`.

    Returns
    -------
    kernel : ndarray, shape (y, x), summing to 1.

    Examples
    --------
    >>> lateral_plane_kernel(rotate_psf_to_lateral(gaussian_psf(2, 8))).shape
    (17, 65)
    """
    psf_rot = np.asarray(psf_rot)
    if psf_rot.ndim != 3:
        raise InputError(f"rotated PSF must be 3D (z, y, x), got shape {psf_rot.shape}")
    k = psf_rot.sum(axis=0)
    return k / k.sum()


def isotropic_psf(psf: np.ndarray, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Isotropic PSF ``h_iso`` with the lateral resolution of ``psf``.

    The in-focus lateral plane (the yx plane through the peak) is averaged over rings of equal
    radius, the ring means are interpolated with a cubic spline in ``r^2`` (a PSF profile is even
    in r, so smooth in ``r^2``; spline overshoots below 0 are clipped) and the profile is swept
    around the centre in 3D; beyond the largest radius the plane holds it is 0. For
    ``gaussian_psf(s_xy, s_z)`` this is ``gaussian_psf(s_xy, s_xy)`` (to 3e-5 of the peak for
    ``s_xy = 2``, 2e-3 for ``s_xy = 1``).

    Parameters
    ----------
    psf : ndarray, shape (z, y, x)
        Non-negative PSF with odd shape.
    shape : tuple of int, optional
        Odd output shape; default ``psf.shape``.

    Returns
    -------
    psf_iso : ndarray, float64, shape ``shape``, summing to 1, peak in the central voxel.

    Examples
    --------
    >>> h_iso = isotropic_psf(gaussian_psf(2, 8))
    >>> bool(np.allclose(h_iso, gaussian_psf(2, 2, shape=(65, 17, 17)), rtol=0, atol=1e-6))
    True
    """
    psf = _check_psf(psf)
    shape = psf.shape if shape is None else _check_shape(shape)
    zp, yp, xp = np.unravel_index(np.argmax(psf), psf.shape)
    plane = psf[zp]
    dy, dx = np.meshgrid(np.arange(plane.shape[0]) - yp, np.arange(plane.shape[1]) - xp, indexing="ij")
    r2 = (dy**2 + dx**2).ravel()
    ring_sum = np.bincount(r2, weights=plane.ravel())
    ring_n = np.bincount(r2)
    r2_rings = np.flatnonzero(ring_n)
    profile = ring_sum[r2_rings] / ring_n[r2_rings]
    if len(r2_rings) < 3:
        raise InputError(f"psf lateral plane {plane.shape} is too small for a radial profile")
    spline = CubicSpline(r2_rings, profile, extrapolate=False)
    grids = np.meshgrid(*[np.arange(s) - s // 2 for s in shape], indexing="ij")
    h = np.nan_to_num(spline(sum(g**2 for g in grids).astype(np.float64)), nan=0.0)
    return _normalise(h)


def _same_conv_operator(kernel: np.ndarray, shape: tuple[int, ...]):
    """Linear ("same"-size, zero-padded) convolution with ``kernel`` and its adjoint via FFT."""
    fshape = [sp_fft.next_fast_len(s + k - 1, real=True) for s, k in zip(shape, kernel.shape)]
    k_hat = sp_fft.rfftn(kernel, fshape)
    out = tuple(slice(k // 2, k // 2 + s) for s, k in zip(shape, kernel.shape))
    inner = tuple(slice(0, s) for s in shape)

    def forward(u):
        return sp_fft.irfftn(sp_fft.rfftn(u, fshape) * k_hat, fshape)[out]

    def adjoint(r):
        padded = np.zeros(fshape)
        padded[out] = r
        return sp_fft.irfftn(sp_fft.rfftn(padded) * np.conj(k_hat), fshape)[inner]

    return forward, adjoint


def _trim(kernel: np.ndarray, rel: float = 1e-9) -> np.ndarray:
    """Smallest centred odd box holding every value above ``rel`` times the maximum."""
    keep = np.argwhere(kernel > rel * kernel.max())
    centre = np.array(kernel.shape) // 2
    half = np.abs(keep - centre).max(axis=0)
    return kernel[tuple(slice(c - h, c + h + 1) for c, h in zip(centre, half))]


def split_psf(
    psf_rot: np.ndarray,
    psf_iso: np.ndarray,
    iterations: int = 300,
    tol: float = 2e-3,
    patience: int = 20,
) -> np.ndarray:
    """Split kernel ``h_split`` with ``h_rot = h_iso * h_split`` (accelerated Richardson-Lucy).

    ``h_rot`` is deconvolved by ``h_iso`` with Richardson-Lucy iterations started from ``h_rot``
    and accelerated by Biggs-Andrews vector extrapolation (Appl. Opt. 36, 1766, 1997). Every
    iterate is non-negative with the right mass, and stopping early is the regularisation.
    Tikhonov-regularised Fourier division was rejected: ``h_split`` is a delta across the two
    axes where ``h_rot`` is as sharp as ``h_iso``, which the division turns into ringing and
    negative lobes (10 % of the peak for gaussians), and it amplifies any mismatch between
    ``h_rot`` and ``h_iso`` where ``h_iso``'s spectrum is small; both left a 2-3 % residual.
    The convolution is linear (zero padded), so nothing wraps around the box.

    Returned is the iterate whose ``conv(h_iso, h_split)`` is closest to ``h_rot`` (relative
    L2); iterations stop when that residual falls below ``tol`` or stops improving by 1 % for
    ``patience`` iterations. For ``gaussian_psf(s_xy, s_z)`` the factorisation is exact and
    ``h_split`` tends to a 1D gaussian along x with ``s_split^2 = s_z^2 - s_xy^2``. For optical
    PSFs it is only approximate, because ``h_iso``'s out-of-focus planes are broader than its
    in-focus plane: the residual is about 1 % for a confocal PSF and far larger (about 18 %) for
    a widefield-detected light sheet, whose in-focus plane is much sharper than its axial extent.

    Parameters
    ----------
    psf_rot : ndarray, shape (z, y, x)
        Rotated PSF (:func:`rotate_psf_to_lateral`), non-negative, odd shape.
    psf_iso : ndarray, shape (z, y, x)
        Isotropic PSF (:func:`isotropic_psf`), non-negative, odd shape (any size).
    iterations : int
        Maximum number of Richardson-Lucy iterations.
    tol : float
        Relative L2 residual ``|conv(h_iso, h_split) - h_rot| / |h_rot|`` that is good enough.
    patience : int
        Iterations without a 1 % improvement of the residual before giving up.

    Returns
    -------
    psf_split : ndarray, float64, shape of ``psf_rot``, non-negative, summing to 1.

    Examples
    --------
    >>> h = gaussian_psf(2, 8)
    >>> h_split = split_psf(rotate_psf_to_lateral(h), isotropic_psf(h))
    >>> z, y, x = psf_fwhm(h_split)
    >>> bool(abs(x / (2.3548 * 60 ** 0.5) - 1) < 0.03)
    True
    """
    psf_rot = _normalise(_check_psf(psf_rot, "psf_rot"))
    psf_iso = _normalise(_trim(_check_psf(psf_iso, "psf_iso")))
    for name, value in (("iterations", iterations), ("patience", patience)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if not (np.isfinite(tol) and tol >= 0):
        raise InputError(f"tol must be a non-negative number, got {tol!r}")
    forward, adjoint = _same_conv_operator(psf_iso, psf_rot.shape)
    eps = 1e-12 * psf_rot.max()
    # sums of squares, not np.linalg.norm: BLAS threads contend badly on a busy machine
    norm = np.sqrt(np.sum(psf_rot**2))
    # boundary-aware RL: divide by the adjoint of ones so that mass near the box edge is not lost
    weight = np.clip(adjoint(np.ones_like(psf_rot)), eps, None)
    x = x_prev = psf_rot
    step = step_prev = None
    best, best_residual, stalled = psf_rot, np.inf, 0
    for _ in range(iterations):
        alpha = 0.0
        if step_prev is not None:
            alpha = float(np.clip(np.sum(step * step_prev) / max(np.sum(step_prev**2), 1e-300), 0.0, 1.0))
        y = np.clip(x + alpha * (x - x_prev), 0, None)
        blurred = forward(y)
        residual = np.sqrt(np.sum((blurred - psf_rot) ** 2)) / norm
        stalled = 0 if residual < 0.99 * best_residual else stalled + 1
        if residual < best_residual:
            best, best_residual = y, residual
        if residual <= tol or stalled >= patience:
            break
        x_new = y * np.clip(adjoint(psf_rot / np.maximum(blurred, eps)), 0, None) / weight
        step_prev, step = step, x_new - y
        x_prev, x = x, x_new
    return _normalise(best)


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

PSF_KINDS = {
    "gaussian": gaussian_psf,
    "confocal": confocal_psf,
    "lightsheet": lightsheet_psf,
    "measured": psf_from_bead_stack,
}


def make_psf(kind: str, **params) -> np.ndarray:
    """PSF of a kind named in the configuration, built from its parameters.

    Parameters
    ----------
    kind : {"gaussian", "confocal", "lightsheet", "measured"}
        ``"gaussian"`` -> :func:`gaussian_psf`, ``"confocal"`` -> :func:`confocal_psf`,
        ``"lightsheet"`` -> :func:`lightsheet_psf`, ``"measured"`` -> :func:`psf_from_bead_stack`
        (pass the bead array as ``stack=``; reading it from a file happens in the stage layer).
    **params
        Keyword arguments of that function.

    Returns
    -------
    psf : ndarray, float64, odd shape, summing to 1.

    Raises
    ------
    InputError
        For an unknown kind, or parameters the kind does not take or lacks.

    Examples
    --------
    >>> make_psf("gaussian", sigma_xy=2, sigma_z=8).shape
    (65, 17, 17)
    >>> make_psf("airy")
    Traceback (most recent call last):
    ...
    isonet.errors.InputError: unknown PSF kind 'airy'; valid kinds: gaussian, confocal, lightsheet, measured
    """
    if kind not in PSF_KINDS:
        raise InputError(f"unknown PSF kind {kind!r}; valid kinds: {', '.join(PSF_KINDS)}")
    func = PSF_KINDS[kind]
    signature = inspect.signature(func)
    valid = ", ".join(signature.parameters)
    unknown = [name for name in params if name not in signature.parameters]
    if unknown:
        raise InputError(
            f"PSF kind {kind!r} takes no parameter {', '.join(unknown)}; its parameters are: {valid}"
        )
    try:
        signature.bind(**params)
    except TypeError as e:
        raise InputError(f"PSF kind {kind!r}: {e}; its parameters are: {valid}") from None
    return func(**params)
