"""Evidence without ground truth: resolution per axis, re-acquisition check, disagreement summary.

Resolution (:func:`resolution_per_axis`)
    The 3D power spectrum of a bounded sample of blocks (mean removed, Hann window) is read
    along each frequency axis (``fz`` with ``fy, fx`` near 0, and so on). By the projection-slice
    theorem that is the spectrum of the block projected onto the axis, and it depends on the
    blur along that axis only. Above the noise floor it is modelled as
    ``A f^-4 exp(-4 pi^2 s^2 f^2)``: a specimen of sharp-edged objects (whose 3D power falls as
    ``|f|^-4``) seen through a gaussian blur of standard deviation ``s`` voxels. ``s`` comes from
    a straight-line fit of ``log(f^4 (P - N))`` against ``f^2`` over the contiguous band, from
    the lowest frequencies on, where the spectrum exceeds twice the noise floor ``N``. The
    reported resolution is the FWHM of that gaussian, ``2 sqrt(2 ln 2) s``, in µm. The
    definition was chosen over Fourier ring/shell correlation (needs two independent
    acquisitions, which a user rarely has) and decorrelation analysis (its cutoff depends on the
    signal-to-noise ratio as much as on the blur, so a gaussian of known sigma maps to no fixed
    value): the fit maps a gaussian blur to its FWHM whatever the noise level, as long as some
    band rises above the noise. The isotropy ratio is the lateral FWHM (mean of y and x) over
    the axial one: 1 for an isotropic volume. Specimens with fine texture rather than edges
    have flatter spectra and read sharper than they are; the ratio is less affected.

    The ``f^-4`` law holds only well above the inverse size of the objects; below it a
    specimen's spectrum is flatter. A strong axial blur leaves signal only at such low
    frequencies, and the fit there read sigma_z = 8 voxels as 6.6 (-17 %). So z is measured
    relative to the lateral axes (:func:`fit_relative_blur`): over z's band the ratio of the z
    spectrum to the mean lateral one is ``exp(-4 pi^2 (s_z^2 - s_xy^2) f^2)`` for a specimen
    without a preferred direction (what the method assumes anyway), so its own spectrum
    cancels, and ``s_z^2 = s_xy^2 + (s_z^2 - s_xy^2)``. This is done only where z's band ends
    below half the lateral one's: a finite sample of a specimen is never quite isotropic, and
    that error of the relative fit (about 0.7 voxel² on the validation phantom) matters for a
    mild axial blur (sigma_z = 2 read -19 %), where the absolute fit has a wide band and
    needs no help. The absolute fit of z is kept when a lateral axis has no estimate.

    The noise floor is the median spectrum between 0.375 and 0.5 cycles/voxel along x (never
    interpolated, so its noise is white), and at least 1e-8 of the spectrum's peak (a
    noise-free simulation has no floor; below that, round-off and voxel-sharp edges rule). Along a z axis upsampled from acquired planes
    ``factor`` apart, the noise is interpolated too: its power below the acquired Nyquist
    frequency is ``factor`` times the lateral floor and there is no signal above it, so pass
    ``upsampled_factor`` for an input on the isotropic grid.

Re-acquisition (:func:`reacquisition_scores`)
    The restored volume ``r`` estimates ``h_iso * f``; the microscope recorded ``h * f`` at
    isotropic planes ``k * factor``. With ``h = h_iso * h_split`` (:func:`isonet.psf.split_psf`),
    blurring ``r`` along z with the axial profile of ``h_split`` and keeping planes
    ``k * factor`` predicts the acquired planes; one affine intensity fit over all planes maps
    the prediction to camera counts. Two things decide what the comparison rewards:

    * Only acquired planes whose forward blur lies inside the restored volume are scored. Near
      the ends of the stack the microscope saw specimen (or, in a simulation, zeros) that the
      restoration does not hold, so any boundary rule is a guess. On the demo the guess was
      most of the gap it opened: over all planes iso-GT scored 1.7 dB below the restoration,
      over the 48 of 64 planes inside, 0.01 dB above it.
    * The measured planes carry camera noise the restoration may have partly copied (its
      planes at acquired positions come from the acquired planes), so ``psnr_db`` against
      them rewards reproducing noise. The headline ``fresh_psnr_db`` is instead the PSNR the
      prediction is expected to reach against a *fresh* acquisition, whose noise nothing could
      copy: ``noise + structural``, where ``noise`` is the variance the camera model
      (:class:`isonet.camera.Camera`, Poisson-Gaussian) predicts for the measured planes and
      ``structural`` the discrepancy within the band the optics pass: both sides are low-passed
      laterally by the PSF's in-focus plane (:func:`lateral_kernel`), which keeps the signal
      (already blurred by it) and passes only ``sum(kernel^2)`` of the white noise (1/50 for
      sigma_xy = 2); that share is subtracted. Copying noise can lower the low-passed residual
      by at most that share, so a noise-copying restoration cannot score above a perfect one.
      ``chi_square`` (measured MSE over the predicted noise variance) says how to read the
      residual: about 1 is consistent with the noise, well above 1 a mismatch, below 1 a
      prediction that follows the noise.

    Rejected alternatives: judging only the chi-square (its noise-copying and mismatch parts
    cancel, and the variance estimate itself is uncertain by a few percent, as large as the
    differences between good restorations), and comparing planes midway between acquired ones
    with the acquisition's interpolation (for a strong axial blur that interpolation is nearly
    exact, but it carries the neighbours' noise, which a restoration can copy as well). Fine
    lateral detail beyond the PSF's band is not judged: the check catches structure that is
    misplaced, lost or invented at the scale of the acquisition. Per-plane scores show where.
"""

from __future__ import annotations

import math

import numpy as np

from isonet.degrade import blur2d, cubic_taps, upsampled_length
from isonet.errors import InputError
from isonet.psf import isotropic_psf, rotate_psf_to_lateral, split_psf

__all__ = [
    "FWHM_PER_SIGMA",
    "sample_blocks",
    "axis_spectra",
    "fit_gaussian_blur",
    "fit_relative_blur",
    "resolution_per_axis",
    "axial_forward_kernel",
    "lateral_kernel",
    "reacquisition_scores",
    "disagreement_summary",
    "CubicUpsampledView",
]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_NOISE_BAND = (0.375, 0.5)  # cycles per voxel
_AXIS_WIDTH = 3  # bins on either side of a frequency axis averaged with it
_DYNAMIC_RANGE = 1e-8  # lowest trusted power, relative to the spectrum's peak
_SIGNAL_OVER_NOISE = 1.0
_LOW_BAND = 0.5  # z's band ending below this share of the lateral one's is measured relative to them  # band: spectrum - floor above this many floors (i.e. spectrum > 2 floors)


def sample_blocks(shape, block: int = 128, n_blocks: int = 16, seed: int = 0) -> list[tuple[slice, slice, slice]]:
    """Corners of up to ``n_blocks`` cubic blocks drawn uniformly inside a volume.

    Parameters
    ----------
    shape : (z, y, x)
    block : int
        Block side, clipped to each axis length.
    n_blocks : int
        Blocks drawn (with a fixed ``seed``, the same ones every time).
    seed : int

    Returns
    -------
    list of tuple of slice

    Examples
    --------
    >>> len(sample_blocks((64, 300, 300), block=128, n_blocks=4))
    4
    """
    shape = tuple(int(s) for s in shape)
    sides = [min(int(block), s) for s in shape]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(n_blocks)):
        starts = [int(rng.integers(0, s - b + 1)) for s, b in zip(shape, sides)]
        out.append(tuple(slice(a, a + b) for a, b in zip(starts, sides)))
    return out


def axis_spectra(blocks, width: int = _AXIS_WIDTH) -> list[tuple[np.ndarray, np.ndarray]]:
    """Mean 3D power spectrum of a set of blocks along each frequency axis (z, y, x).

    Each block has its mean removed and a separable Hann window applied; the power along the
    ``fz`` axis is averaged over the frequencies with ``|fy|, |fx| <= width`` bins (likewise for
    the other axes). Along a frequency axis the spectrum depends on that axis's blur only.

    Parameters
    ----------
    blocks : iterable of ndarray (z, y, x), all of one shape
    width : int
        Bins on either side of the axis averaged with it.

    Returns
    -------
    list of (frequencies in cycles/voxel, power) for axes z, y, x.
    """
    sums, count, shape, window = [0.0, 0.0, 0.0], 0, None, None
    near = np.r_[0 : width + 1, -width:0] if width else np.array([0])
    for b in blocks:
        b = np.asarray(b, dtype=np.float32)
        if shape is None:
            shape = b.shape
            window = np.ones(shape, np.float32)
            for axis, n in enumerate(shape):
                window = window * np.hanning(n).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        elif b.shape != shape:
            raise ValueError(f"blocks differ in shape: {b.shape} vs {shape}")
        power = np.abs(np.fft.rfftn((b - b.mean()) * window)) ** 2  # x halved: only fx >= 0 stored
        half = [n // 2 + 1 for n in shape]
        sums[0] = sums[0] + power[: half[0]][:, near][:, :, : width + 1].mean(axis=(1, 2))
        sums[1] = sums[1] + power[near][:, : half[1]][:, :, : width + 1].mean(axis=(0, 2))
        sums[2] = sums[2] + power[near][:, near][:, :, : half[2]].mean(axis=(0, 1))
        count += 1
    if not count:
        raise ValueError("no blocks")
    return [(np.fft.rfftfreq(shape[a]), np.asarray(sums[a]) / count) for a in range(3)]


def fit_gaussian_blur(freq: np.ndarray, power: np.ndarray, noise: float, f_max: float = 0.5) -> dict:
    """Standard deviation of the gaussian blur that explains an axis spectrum (model in the module docstring).

    Parameters
    ----------
    freq, power : ndarray
        Frequencies (cycles/voxel) and mean power, as from :func:`axis_spectra`.
    noise : float
        Noise floor of ``power``.
    f_max : float
        Highest frequency that may carry signal (the acquired Nyquist frequency of an
        upsampled axis).

    Returns
    -------
    dict
        ``sigma_voxels`` (None when fewer than 3 frequencies rise above the noise) and ``band``
        (lowest and highest frequency fitted, cycles/voxel).

    Examples
    --------
    >>> f = np.fft.rfftfreq(128)
    >>> p = np.zeros_like(f); p[1:] = f[1:] ** -4.0 * np.exp(-4 * np.pi**2 * 3.0**2 * f[1:] ** 2)
    >>> round(fit_gaussian_blur(f, p + 1e-6, 1e-6)["sigma_voxels"], 3)
    3.0
    """
    freq, power = np.asarray(freq, np.float64), np.asarray(power, np.float64)
    signal = power - noise
    low = 1.5 / (2 * (len(freq) - 1)) if len(freq) > 1 else 0.0  # skip DC and the first bin the window smears
    ok = (signal > _SIGNAL_OVER_NOISE * noise) & (freq > low) & (freq <= f_max)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return {"sigma_voxels": None, "band": None}
    k0 = k1 = int(idx[0])
    while k1 + 1 < len(freq) and ok[k1 + 1]:
        k1 += 1
    if k1 - k0 + 1 < 3:
        return {"sigma_voxels": None, "band": [float(freq[k0]), float(freq[k1])]}
    f = freq[k0 : k1 + 1]
    y = np.log(signal[k0 : k1 + 1] * f**4)
    design = np.stack([np.ones_like(f), f**2], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    sigma2 = -coef[1] / (4 * np.pi**2)
    return {"sigma_voxels": float(math.sqrt(max(sigma2, 0.0))), "band": [float(f[0]), float(f[-1])]}


def fit_relative_blur(freq: np.ndarray, power: np.ndarray, noise: float, ref_freq: np.ndarray,
                      ref_power: np.ndarray, ref_noise: float, band) -> float | None:
    """Extra gaussian variance (voxels²) of one axis over a reference axis, from their spectra's ratio.

    For a specimen that looks alike along both axes (no preferred direction), the ratio of the
    two spectra above their noise is ``exp(-4 pi^2 (s^2 - s_ref^2) f^2)`` whatever the
    specimen's own spectrum: a straight-line fit of its logarithm against ``f^2`` over ``band``
    gives ``s^2 - s_ref^2``.

    Parameters
    ----------
    freq, power, noise
        The axis's spectrum and noise floor (:func:`axis_spectra`).
    ref_freq, ref_power, ref_noise
        The reference axis's, interpolated onto ``freq``.
    band : (low, high)
        Frequencies (cycles/voxel) fitted, e.g. the axis's band from :func:`fit_gaussian_blur`.

    Returns
    -------
    float or None
        ``s^2 - s_ref^2`` (may be negative), None when fewer than 3 frequencies of ``band``
        rise above both noise floors.

    Examples
    --------
    >>> f = np.fft.rfftfreq(128)
    >>> specimen = 1.0 / (1e-3 + f**2)  # not a power law: it cancels
    >>> a = specimen * np.exp(-4 * np.pi**2 * 5.0**2 * f**2)
    >>> b = specimen * np.exp(-4 * np.pi**2 * 2.0**2 * f**2)
    >>> round(fit_relative_blur(f, a, 0.0, f, b, 0.0, (0.01, 0.05)), 3)
    21.0
    """
    freq = np.asarray(freq, np.float64)
    ref = np.interp(freq, np.asarray(ref_freq, np.float64), np.asarray(ref_power, np.float64)) - ref_noise
    signal = np.asarray(power, np.float64) - noise
    ok = (freq >= band[0]) & (freq <= band[1]) & (signal > 0) & (ref > 0)
    if ok.sum() < 3:
        return None
    f2 = freq[ok] ** 2
    design = np.stack([np.ones_like(f2), f2], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.log(signal[ok] / ref[ok]), rcond=None)
    return float(-coef[1] / (4 * np.pi**2))


def resolution_per_axis(volume, voxel_size, upsampled_factor: int = 1, block: int = 128, n_blocks: int = 24,
                        seed: int = 0) -> dict:
    """Image-based resolution (FWHM, µm) along z, y and x, and the isotropy ratio.

    Reads only ``n_blocks`` blocks of ``block`` voxels a side, so its cost does not grow with
    the volume. See the module docstring for the definition.

    Parameters
    ----------
    volume : array-like (z, y, x)
        Any sliceable array (numpy, zarr, :class:`isonet.storage.CheckedArray`).
    voxel_size : (z, y, x)
        µm.
    upsampled_factor : int
        For a volume whose z planes were interpolated from planes this many voxels apart (the
        input on the isotropic grid): the noise floor along z and the highest frequency that
        can carry signal follow from it. 1 for anything else.
    block, n_blocks, seed
        The sample of blocks (:func:`sample_blocks`).

    Returns
    -------
    dict
        ``fwhm_um`` ``{z, y, x}`` (None on an axis where no signal rises above the noise),
        ``sigma_voxels``, ``band_cycles_per_voxel``, ``isotropy_ratio`` (lateral over axial
        FWHM), ``blocks`` and ``block``.

    Examples
    --------
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> v = ndimage.gaussian_filter((rng.random((96, 96, 96)) > 0.999).astype(np.float32), (4, 1.5, 1.5))
    >>> r = resolution_per_axis(v, (0.1, 0.1, 0.1), block=96, n_blocks=1)
    >>> r["isotropy_ratio"] < 0.5
    True
    """
    if len(volume.shape) != 3:
        raise InputError(f"resolution needs a 3D (z, y, x) volume, got shape {tuple(volume.shape)}")
    if int(upsampled_factor) != upsampled_factor or upsampled_factor < 1:
        raise InputError(f"upsampled_factor must be a positive integer, got {upsampled_factor}")
    slices = sample_blocks(volume.shape, block, n_blocks, seed)
    spectra = axis_spectra(np.asarray(volume[s], dtype=np.float32) for s in slices)
    fx, px = spectra[2]
    noise_band = (fx >= _NOISE_BAND[0]) & (fx <= _NOISE_BAND[1])
    noise = float(np.median(px[noise_band])) if noise_band.any() else float(px[-1])
    # a noise-free volume (a simulation) has no flat floor: trust 80 dB of dynamic range at most
    noise = max(noise, _DYNAMIC_RANGE * max(float(p.max()) for _, p in spectra))
    fwhm, sigma, band, noises = {}, {}, {}, {}
    for axis, name in enumerate("zyx"):
        f, p = spectra[axis]
        axis_noise, f_max = noise, 0.5
        if name == "z" and upsampled_factor > 1:
            axis_noise, f_max = noise * upsampled_factor, 0.5 / upsampled_factor
        fit = fit_gaussian_blur(f, p, axis_noise, f_max)
        sigma[name], band[name], noises[name] = fit["sigma_voxels"], fit["band"], axis_noise
    if sigma["z"] is not None and sigma["y"] is not None and sigma["x"] is not None and \
            band["z"][1] < _LOW_BAND * 0.5 * (band["y"][1] + band["x"][1]):
        # z's signal lives at low frequencies only: measure it relative to the lateral axes (module docstring)
        lateral_power = 0.5 * (np.interp(spectra[2][0], *spectra[1]) + spectra[2][1])
        extra = fit_relative_blur(*spectra[0], noises["z"], spectra[2][0], lateral_power, noise, band["z"])
        if extra is not None:
            lateral = 0.5 * (sigma["y"] ** 2 + sigma["x"] ** 2)
            sigma["z"] = math.sqrt(max(lateral + extra, 0.0))
    for axis, name in enumerate("zyx"):
        s = sigma[name]
        fwhm[name] = None if s is None else FWHM_PER_SIGMA * s * float(voxel_size[axis])
    ratio = None
    if fwhm["z"] and fwhm["y"] is not None and fwhm["x"] is not None:
        ratio = 0.5 * (fwhm["y"] + fwhm["x"]) / fwhm["z"]
    return {"fwhm_um": fwhm, "sigma_voxels": sigma, "band_cycles_per_voxel": band, "isotropy_ratio": ratio,
            "blocks": len(slices), "block": [s.stop - s.start for s in slices[0]]}


def axial_forward_kernel(psf: np.ndarray) -> np.ndarray:
    """1D kernel along z that blurs an ``h_iso`` restoration into the microscope's ``h``.

    The axial profile of ``h_split`` (:func:`isonet.psf.split_psf` of ``h_rot`` and ``h_iso``):
    for a gaussian ``h`` a gaussian of variance ``sigma_z^2 - sigma_xy^2``.

    Parameters
    ----------
    psf : ndarray (z, y, x)
        The acquisition PSF on the isotropic grid.

    Returns
    -------
    kernel : ndarray, 1D, odd length, summing to 1.

    Examples
    --------
    >>> from isonet.psf import gaussian_psf
    >>> k = axial_forward_kernel(gaussian_psf(2, 8))
    >>> z = np.arange(len(k)) - len(k) // 2
    >>> round(float(np.sqrt(np.sum(k * z**2))), 1)
    7.7
    """
    h_split = split_psf(rotate_psf_to_lateral(psf), isotropic_psf(psf))
    profile = h_split.sum(axis=(0, 1))  # rotated axes (x, y, z): z of the original PSF is last
    return profile / profile.sum()


def lateral_kernel(psf: np.ndarray) -> np.ndarray:
    """The PSF's in-focus lateral plane (the yx plane through its peak), summing to 1.

    Parameters
    ----------
    psf : ndarray (z, y, x)

    Returns
    -------
    kernel : ndarray (y, x)

    Examples
    --------
    >>> from isonet.psf import gaussian_psf
    >>> k = lateral_kernel(gaussian_psf(2, 8))
    >>> k.ndim, round(float(k.sum()), 6), round(float((k**2).sum()) * 4 * np.pi * 2.0**2, 2)
    (2, 1.0, 1.0)
    """
    psf = np.asarray(psf, np.float64)
    plane = psf[int(np.unravel_index(np.argmax(psf), psf.shape)[0])]
    return plane / plane.sum()


def reacquisition_scores(restored, acquired, kernel: np.ndarray, factor: int, camera=None, lateral=None,
                         include_ends: bool = False, planes_per_slab: int = 8) -> dict:
    """Compare the restoration, degraded again by the forward model, with the acquired planes.

    Scores the acquired planes whose forward blur lies inside the restored volume (all planes
    when none does); see the module docstring for the scores and why. Reads
    ``planes_per_slab`` acquired planes and the restored planes they need (plus the kernel's
    half length) at a time, so memory stays at a slab.

    Parameters
    ----------
    restored : array-like (Z_iso, Y, X)
        The restoration on the isotropic grid (plane ``k * factor`` at acquired plane ``k``).
    acquired : array-like (Z, Y, X)
        The acquired volume, in camera counts when ``camera`` is given.
    kernel : ndarray
        :func:`axial_forward_kernel`.
    factor : int
        Axial factor.
    camera : isonet.camera.Camera, optional
        Noise model of the acquisition: gives ``noise_variance``, ``chi_square`` and, with
        ``lateral``, ``structural_mse`` and ``fresh_psnr_db``.
    lateral : ndarray (y, x), optional
        :func:`lateral_kernel` of the PSF: both sides are low-passed by it to measure the
        structural discrepancy.
    include_ends : bool
        Score the planes near the stack's ends too (their prediction assumes mirrored data).
    planes_per_slab : int

    Returns
    -------
    dict
        ``psnr_db`` and ``correlation`` against the acquired planes, ``fresh_psnr_db`` (the
        expected PSNR against a fresh acquisition), ``chi_square``, ``noise_variance``,
        ``structural_mse`` (None without ``camera``/``lateral``), ``per_plane`` lists
        (``plane``: acquired plane index, ``psnr_db``, ``correlation``, ``fresh_psnr_db``),
        ``worst_planes`` (the five lowest correlations, acquired plane indices), ``affine``
        (the fit ``a * reacquired + b``), ``planes`` scored and ``planes_at_ends`` left out.
    """
    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim != 1 or len(kernel) % 2 == 0:
        raise ValueError(f"kernel must be 1D with odd length, got shape {kernel.shape}")
    nz_iso = restored.shape[0]
    if tuple(restored.shape[1:]) != tuple(acquired.shape[1:]):
        raise InputError(
            f"restored lateral shape {tuple(restored.shape[1:])} differs from the acquired {tuple(acquired.shape[1:])}"
        )
    n_planes = min(acquired.shape[0], (nz_iso - 1) // factor + 1)
    half = len(kernel) // 2
    rows_all = np.arange(n_planes) * factor
    inside = np.flatnonzero((rows_all - half >= 0) & (rows_all + half <= nz_iso - 1))
    planes = inside if inside.size and not include_ends else np.arange(n_planes)
    if lateral is not None:
        lateral = np.asarray(lateral, np.float64)
        lateral = lateral / lateral.sum()
    # per-plane sums n, sx, sy, sxx, sxy, syy of (reacquired, acquired), raw and low-passed (float64)
    sums, sums_lp = np.zeros((len(planes), 6)), np.zeros((len(planes), 6))
    noise = np.full(len(planes), np.nan)
    lo_val, hi_val = np.inf, -np.inf
    for i0 in range(0, len(planes), planes_per_slab):
        ks = planes[i0 : i0 + planes_per_slab]
        i1 = i0 + len(ks)
        z0, z1 = max(0, int(ks[0]) * factor - half), min(nz_iso, int(ks[-1]) * factor + half + 1)
        slab = np.asarray(restored[z0:z1], dtype=np.float32)
        pred = _reacquire_rows(slab, z0, nz_iso, kernel, ks * factor).astype(np.float64)
        meas = np.asarray(acquired[int(ks[0]) : int(ks[-1]) + 1], dtype=np.float64)[ks - ks[0]]
        lo_val, hi_val = min(lo_val, meas.min()), max(hi_val, meas.max())
        sums[i0:i1] = _moment_sums(pred, meas)
        if lateral is not None:
            sums_lp[i0:i1] = _moment_sums(np.stack([blur2d(p, lateral) for p in pred]),
                                          np.stack([blur2d(m, lateral) for m in meas]))
        if camera is not None:
            # the model is linear in the mean, so the planes' mean reading gives the mean variance
            # (per-pixel clipping at the black level would overstate the dark pixels' share)
            level = np.clip(meas.mean(axis=(1, 2)) - camera.offset, 0, None)
            noise[i0:i1] = camera.gain * level + camera.read_noise**2
    n, sx, sy, sxx, sxy, syy = sums.sum(axis=0)
    var_x, cov = sxx - sx * sx / n, sxy - sx * sy / n
    a = cov / var_x if var_x > 0 else 0.0
    b = (sy - a * sx) / n
    data_range = float(hi_val - lo_val) or 1.0

    def mse_of(row):
        n, sx, sy, sxx, sxy, syy = row
        sse = syy - 2 * a * sxy - 2 * b * sy + a * a * sxx + 2 * a * b * sx + n * b * b
        return max(sse / n, 1e-30)

    def psnr(mse):
        return float(10 * np.log10(data_range**2 / max(mse, 1e-30)))

    def corr_of(row):
        n, sx, sy, sxx, sxy, syy = row
        vx, vy, c = sxx - sx * sx / n, syy - sy * sy / n, sxy - sx * sy / n
        return float(c / math.sqrt(vx * vy)) if vx > 0 and vy > 0 else None

    passed = float((lateral**2).sum()) if lateral is not None else None  # white noise kept by the low-pass

    def fresh(row, row_lp, nv):
        if camera is None or lateral is None:
            return None, None
        structural = max(mse_of(row_lp) - passed * nv, 0.0)
        return structural, psnr(nv + structural)

    per_corr = [corr_of(r) for r in sums]
    per_fresh = [fresh(r, r_lp, nv)[1] for r, r_lp, nv in zip(sums, sums_lp, noise)]
    order = sorted((c, int(k)) for k, c in zip(planes, per_corr) if c is not None)
    mse = mse_of(sums.sum(axis=0))
    noise_variance = float(noise.mean()) if camera is not None else None
    structural, fresh_psnr = fresh(sums.sum(axis=0), sums_lp.sum(axis=0), noise_variance)
    return {
        "psnr_db": psnr(mse),
        "fresh_psnr_db": fresh_psnr,
        "chi_square": None if noise_variance is None else float(mse / max(noise_variance, 1e-30)),
        "noise_variance": noise_variance,
        "structural_mse": structural,
        "correlation": corr_of(sums.sum(axis=0)),
        "per_plane": {"plane": [int(k) for k in planes], "psnr_db": [psnr(mse_of(r)) for r in sums],
                      "correlation": per_corr, "fresh_psnr_db": per_fresh},
        "worst_planes": [k for _, k in order[:5]],
        "affine": {"scale": float(a), "offset": float(b)},
        "planes": int(len(planes)),
        "planes_at_ends": int(n_planes - len(planes)),
        "data_range": data_range,
    }


def _moment_sums(pred: np.ndarray, meas: np.ndarray) -> np.ndarray:
    """Per plane: n, sum x, sum y, sum x², sum xy, sum y² of predicted ``x`` and measured ``y``."""
    axes = (1, 2)
    return np.stack([np.full(len(pred), pred[0].size, np.float64), pred.sum(axes), meas.sum(axes),
                     (pred * pred).sum(axes), (pred * meas).sum(axes), (meas * meas).sum(axes)], axis=1)


def _reacquire_rows(slab: np.ndarray, z0: int, nz: int, kernel: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows (global isotropic indices) of the z-blurred volume from a slab starting at ``z0``."""
    half = len(kernel) // 2
    out = np.zeros((len(rows),) + slab.shape[1:], np.float32)
    k32 = kernel.astype(np.float32)
    for i, r in enumerate(rows):
        taps = np.arange(r - half, r + half + 1)
        if nz > 1:
            period = 2 * (nz - 1)
            taps = np.mod(taps, period)
            taps = np.where(taps < nz, taps, period - taps)
        else:
            taps = np.zeros_like(taps)
        local = taps - z0
        out[i] = np.tensordot(k32, slab[local], axes=(0, 0))
    return out


def disagreement_summary(uncertainty, restored=None, percentiles=(50.0, 99.0), n_blocks: int = 16,
                         block: int = 128, seed: int = 0) -> dict:
    """Median and high percentile of the per-voxel disagreement, over a sample of blocks.

    Parameters
    ----------
    uncertainty : array-like (z, y, x)
        Per-voxel disagreement of the xz and yz restorations, intensity units.
    restored : array-like, optional
        The restoration: the summary then also gives the disagreement relative to its
        1-99.8 percentile range.

    Returns
    -------
    dict
    """
    slices = sample_blocks(uncertainty.shape, block, n_blocks, seed)
    values = np.concatenate([np.asarray(uncertainty[s], np.float32).ravel() for s in slices])
    out = {f"p{p:g}": float(np.percentile(values, p)) for p in percentiles}
    out["mean"] = float(values.mean())
    if restored is not None:
        r = np.concatenate([np.asarray(restored[s], np.float32).ravel() for s in slices])
        lo, hi = np.percentile(r, [1.0, 99.8])
        span = float(hi - lo) or 1.0
        out["relative"] = {k: v / span for k, v in out.items() if not isinstance(v, dict)}
    return out


class CubicUpsampledView:
    """Read-only view of an acquired volume cubic-upsampled along z (:mod:`isonet.degrade` grid).

    Slicing with up to three slices reads only the acquired planes the
    requested isotropic planes need, so the input can be measured on the restored grid without
    upsampling all of it.

    Examples
    --------
    >>> v = CubicUpsampledView(np.arange(4.0)[:, None, None] * np.ones((1, 2, 2)), 2)
    >>> v.shape, v[2:5, 0:1, 0:1].ravel().tolist()
    ((7, 2, 2), [1.0, 1.5, 2.0])
    """

    def __init__(self, source, factor: int):
        self.source = source
        self.factor = int(factor)
        z, y, x = source.shape
        self.shape = (upsampled_length(z, self.factor), int(y), int(x))
        self.ndim = 3

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        if len(key) != 3 or not all(isinstance(k, slice) for k in key):
            raise TypeError("CubicUpsampledView takes up to three slices")
        zs, ys, xs = (range(*k.indices(n)) for k, n in zip(key, self.shape))
        taps, weights = cubic_taps(np.asarray(zs), self.source.shape[0], self.factor)
        za, zb = int(taps.min()), int(taps.max()) + 1
        raw = np.asarray(self.source[za:zb, ys.start:ys.stop:ys.step, xs.start:xs.stop:xs.step], np.float32)
        out = np.zeros((len(zs),) + raw.shape[1:], np.float32)
        for t in range(4):
            out += weights[:, t, None, None].astype(np.float32) * raw[taps[:, t] - za]
        return out
