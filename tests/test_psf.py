"""Tests for isonet.psf: model, measured and derived PSFs on the isotropic grid."""

import doctest
import sys
import time

import numpy as np
import pytest
from scipy.signal import fftconvolve

import isonet.psf
from isonet.errors import InputError
from isonet.psf import (
    commuting_flips,
    confocal_psf,
    fwhm,
    gaussian_psf,
    isotropic_psf,
    lateral_plane_kernel,
    lightsheet_psf,
    make_psf,
    psf_from_bead_stack,
    psf_fwhm,
    rotate_psf_to_lateral,
    split_psf,
    widefield_psf,
)

GAUSS_FWHM = 2 * np.sqrt(2 * np.log(2))  # 2.3548 sigma

# confocal test setup: water dipping NA 1.1, 40 nm voxels
VOX = 0.04
NA, N_MEDIUM, L_EX, L_EM = 1.1, 1.33, 0.488, 0.52
L_MEAN = np.sqrt(2) * L_EX * L_EM / np.sqrt(L_EX**2 + L_EM**2)  # Zeiss/Wilhelm mean wavelength


def synthetic_bead(offset, sigmas=(4.0, 2.0, 2.0), shape=(41, 25, 25), seed=0):
    """Gaussian bead, peak 1000 over background 100, gaussian noise sigma 5, off-centre."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s) - s // 2 for s in shape], indexing="ij")
    r2 = sum(((g - o) / s) ** 2 for g, o, s in zip(grids, offset, sigmas))
    return 100 + 1000 * np.exp(-0.5 * r2) + rng.normal(0, 5, shape)


def all_psfs():
    return {
        "gaussian": make_psf("gaussian", sigma_xy=2, sigma_z=8),
        "confocal": make_psf("confocal", shape=(65, 33, 33), voxel_size_um=VOX),
        "confocal_born_wolf": confocal_psf((65, 33, 33), VOX, backend="born_wolf"),
        "confocal_pinhole": confocal_psf((65, 33, 33), VOX, pinhole_au=1.0),
        "lightsheet": make_psf("lightsheet", shape=(65, 33, 33), voxel_size_um=0.1),
        "measured": make_psf("measured", stack=synthetic_bead((0.3, -0.4, 0.25)), shape=(31, 17, 17)),
        "isotropic": isotropic_psf(gaussian_psf(2, 8)),
    }


@pytest.fixture(scope="module")
def psfs():
    return all_psfs()


@pytest.mark.parametrize(
    "kind",
    ["gaussian", "confocal", "confocal_born_wolf", "confocal_pinhole", "lightsheet", "measured", "isotropic"],
)
def test_psf_conventions(psfs, kind):
    h = psfs[kind]
    assert h.dtype == np.float64 and h.ndim == 3
    assert all(s % 2 == 1 for s in h.shape)
    assert h.min() >= 0
    assert h.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.unravel_index(np.argmax(h), h.shape) == tuple(s // 2 for s in h.shape)


@pytest.mark.parametrize("sigma_xy, sigma_z", [(2, 8), (3, 6), (1.5, 4.5)])
def test_gaussian_fwhm(sigma_xy, sigma_z):
    fz, fy, fx = psf_fwhm(gaussian_psf(sigma_xy, sigma_z))
    assert fz == pytest.approx(GAUSS_FWHM * sigma_z, rel=0.02)
    assert fy == pytest.approx(GAUSS_FWHM * sigma_xy, rel=0.02)
    assert fx == pytest.approx(GAUSS_FWHM * sigma_xy, rel=0.02)


def test_rotation_moves_z_to_x():
    h = gaussian_psf(2, 8, shape=(33, 15, 17))
    h_rot = rotate_psf_to_lateral(h)
    assert h_rot.shape == (17, 15, 33)
    i, j, k = 3, 5, 20
    assert h_rot[i, j, k] == h[k, j, i]
    np.testing.assert_array_equal(h_rot, np.transpose(h, (2, 1, 0)))
    assert psf_fwhm(h_rot) == pytest.approx(psf_fwhm(h)[::-1])
    kernel = lateral_plane_kernel(h_rot)
    assert kernel.shape == (15, 33) and kernel.sum() == pytest.approx(1.0)
    assert fwhm(kernel[7]) == pytest.approx(GAUSS_FWHM * 8, rel=0.02)  # axial profile along x


@pytest.mark.parametrize("kind", ["confocal", "confocal_born_wolf"])
def test_confocal_fwhm_matches_textbook(psfs, kind):
    fz, fy, fx = (w * VOX for w in psf_fwhm(psfs[kind]))
    lateral = 0.37 * L_MEAN / NA  # ideal pinhole, Wilhelm et al. (Zeiss), 0.169 um
    axial = 0.64 * L_MEAN / (N_MEDIUM - np.sqrt(N_MEDIUM**2 - NA**2))  # 0.553 um
    assert fz > 2 * fx
    assert fx == pytest.approx(fy)
    assert fx == pytest.approx(lateral, rel=0.25)
    assert fz == pytest.approx(axial, rel=0.25)


def test_born_wolf_fallback_agrees_with_psfmodels():
    pytest.importorskip("psfmodels")
    for shape, vox, na in [((65, 33, 33), 0.04, 1.1), ((65, 33, 33), 0.1, 0.8)]:
        a = psf_fwhm(widefield_psf(shape, vox, na=na, backend="psfmodels"))
        b = psf_fwhm(widefield_psf(shape, vox, na=na, backend="born_wolf"))
        np.testing.assert_allclose(b, a, rtol=0.15)
    a = psf_fwhm(confocal_psf((65, 33, 33), VOX, backend="psfmodels"))
    b = psf_fwhm(confocal_psf((65, 33, 33), VOX, backend="born_wolf"))
    np.testing.assert_allclose(b, a, rtol=0.15)


def test_auto_backend_falls_back_without_psfmodels(monkeypatch):
    monkeypatch.setitem(sys.modules, "psfmodels", None)  # makes `import psfmodels` raise ImportError
    auto = widefield_psf((33, 17, 17), 0.1)
    np.testing.assert_array_equal(auto, widefield_psf((33, 17, 17), 0.1, backend="born_wolf"))
    with pytest.raises(InputError, match="psfmodels"):
        widefield_psf((33, 17, 17), 0.1, backend="psfmodels")


def test_pinhole_widens_confocal_psf(psfs):
    point = psf_fwhm(psfs["confocal"])
    pinhole = psf_fwhm(psfs["confocal_pinhole"])
    widefield = psf_fwhm(widefield_psf((65, 33, 33), VOX, na=NA, wavelength_um=L_EM))
    assert point[2] < pinhole[2] < widefield[2]
    assert point[0] < pinhole[0]


def test_lightsheet_narrower_axially_than_detection(psfs):
    sheet = psf_fwhm(psfs["lightsheet"])
    detection = psf_fwhm(widefield_psf((65, 33, 33), 0.1, na=0.8))
    assert sheet[0] < 0.85 * detection[0]
    assert sheet[1:] == pytest.approx(detection[1:], rel=1e-6)  # sheet depends on z only
    # a wider sheet (lower NA) narrows the PSF less
    wide = psf_fwhm(lightsheet_psf((65, 33, 33), 0.1, na_illumination=0.05))
    assert sheet[0] < wide[0] < detection[0]


def test_psf_builds_fast():
    start = time.perf_counter()
    confocal_psf((65, 33, 33), VOX)
    lightsheet_psf((65, 33, 33), 0.1)
    confocal_psf((65, 33, 33), VOX, backend="born_wolf")
    assert time.perf_counter() - start < 3.0


def test_isotropic_psf_of_gaussian_is_isotropic_gaussian():
    h = gaussian_psf(2, 8)
    h_iso = isotropic_psf(h)
    expected = gaussian_psf(2, 2, shape=h.shape)
    assert np.abs(h_iso - expected).max() < 1e-3 * expected.max()
    assert np.linalg.norm(h_iso - expected) < 1e-3 * np.linalg.norm(expected)
    cube = isotropic_psf(h, shape=(17, 17, 17))
    np.testing.assert_allclose(cube, gaussian_psf(2, 2), rtol=0, atol=1e-3 * cube.max())


def test_isotropic_psf_keeps_lateral_resolution(psfs):
    h = psfs["confocal"]
    fz, fy, fx = psf_fwhm(isotropic_psf(h))
    assert fz == pytest.approx(fx, rel=0.02) and fy == pytest.approx(fx, rel=0.02)
    assert fx == pytest.approx(psf_fwhm(h)[2], rel=0.02)


def test_split_of_gaussian_is_1d_gaussian_along_x():
    sigma_xy, sigma_z = 2.0, 8.0
    h = gaussian_psf(sigma_xy, sigma_z)
    h_rot, h_iso = rotate_psf_to_lateral(h), isotropic_psf(h)
    h_split = split_psf(h_rot, h_iso)
    assert h_split.shape == h_rot.shape
    assert h_split.min() >= 0 and h_split.sum() == pytest.approx(1.0)
    fz, fy, fx = psf_fwhm(h_split)
    sigma_split = np.sqrt(sigma_z**2 - sigma_xy**2)
    assert fx == pytest.approx(GAUSS_FWHM * sigma_split, rel=0.03)
    assert fz < 1.5 and fy < 1.5  # close to a delta across x
    reconstructed = fftconvolve(h_split, h_iso, mode="same")
    error = np.linalg.norm(reconstructed - h_rot) / np.linalg.norm(h_rot)
    assert error < 0.01


def test_split_of_confocal_psf_is_close():
    h = confocal_psf((65, 33, 33), VOX)
    h_rot, h_iso = rotate_psf_to_lateral(h), isotropic_psf(h)
    h_split = split_psf(h_rot, h_iso)
    assert h_split.min() >= 0 and h_split.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(h_split), h_split.shape) == (16, 16, 32)
    error = np.linalg.norm(fftconvolve(h_split, h_iso, mode="same") - h_rot) / np.linalg.norm(h_rot)
    assert error < 0.03


@pytest.mark.parametrize("offset", [(0.3, -0.4, 0.25), (-0.45, 0.1, -0.2)])
def test_measured_bead_is_centred_with_right_fwhm(offset):
    sigmas = (4.0, 2.0, 2.0)
    h = psf_from_bead_stack(synthetic_bead(offset, sigmas), shape=(31, 17, 17))
    assert h.shape == (31, 17, 17)
    assert h.min() >= 0 and h.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(h), h.shape) == (15, 8, 8)
    np.testing.assert_allclose(psf_fwhm(h), GAUSS_FWHM * np.array(sigmas), rtol=0.05)
    # sub-voxel centring: the centroid of the bright core sits on the centre voxel
    core = h * (h > 0.5 * h.max())
    grids = np.meshgrid(*[np.arange(s) for s in h.shape], indexing="ij")
    centroid = [float((g * core).sum() / core.sum()) for g in grids]
    np.testing.assert_allclose(centroid, (15, 8, 8), atol=0.1)


def test_measured_default_shape_fits_stack():
    h = psf_from_bead_stack(synthetic_bead((0.2, 0.2, 0.2)))
    assert h.shape == (41, 25, 25)


def test_measured_bad_input():
    bead = synthetic_bead((0, 0, 0))
    nan_stack = bead.copy()
    nan_stack[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        psf_from_bead_stack(nan_stack)
    with pytest.raises(InputError, match="3D"):
        psf_from_bead_stack(bead[20])
    with pytest.raises(InputError, match="no signal"):
        psf_from_bead_stack(np.full((9, 9, 9), 7.0))
    with pytest.raises(InputError, match="does not fit"):
        psf_from_bead_stack(bead, shape=(51, 17, 17))
    with pytest.raises(InputError, match="odd"):
        psf_from_bead_stack(bead, shape=(30, 17, 17))


def test_commuting_flips():
    symmetric = lateral_plane_kernel(rotate_psf_to_lateral(gaussian_psf(2, 8)))
    assert commuting_flips(symmetric) == (0, 1)
    y, x = np.meshgrid(np.arange(-8, 9), np.arange(-8, 9), indexing="ij")
    skewed_x = np.exp(-0.5 * (y / 2) ** 2) * np.where(x >= 0, np.exp(-x / 2), np.exp(x / 4))
    assert commuting_flips(skewed_x) == (0,)
    assert commuting_flips(skewed_x.T) == (1,)
    assert commuting_flips(skewed_x * skewed_x.T) == ()
    with pytest.raises(InputError, match="2D"):
        commuting_flips(np.ones((3, 3, 3)))


def test_fwhm():
    assert fwhm(np.array([0, 1, 2, 3, 4, 3, 2, 1, 0.0])) == pytest.approx(4.0)
    assert fwhm(np.array([0, 0, 1, 0, 0.0])) == pytest.approx(1.0)
    with pytest.raises(InputError, match="half maximum"):
        fwhm(np.array([1, 2, 3, 2.5]))
    with pytest.raises(InputError, match="1D"):
        fwhm(np.ones((3, 3)))


def test_make_psf_dispatch_and_errors():
    np.testing.assert_array_equal(make_psf("gaussian", sigma_xy=2, sigma_z=8), gaussian_psf(2, 8))
    with pytest.raises(InputError, match="valid kinds: gaussian, confocal, lightsheet, widefield, measured"):
        make_psf("airy")
    with pytest.raises(InputError, match="sigma_r"):
        make_psf("gaussian", sigma_xy=2, sigma_r=8)
    with pytest.raises(InputError, match="shape"):
        make_psf("confocal", voxel_size_um=0.05)  # missing required shape
    assert make_psf("gaussian", sigma_xy=1, sigma_z=2, shape=[9, 5, 5]).shape == (9, 5, 5)  # YAML list


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: gaussian_psf(0, 8), "sigma_xy"),
        (lambda: gaussian_psf(2, 8, shape=(64, 17, 17)), "odd"),
        (lambda: confocal_psf((65, 33), VOX), "three integers"),
        (lambda: confocal_psf((65, 33, 33), VOX, na=1.4), "smaller than refractive_index"),
        (lambda: confocal_psf((65, 33, 33), -1.0), "voxel_size_um"),
        (lambda: confocal_psf((65, 33, 33), VOX, pinhole_au=-1), "pinhole_au"),
        (lambda: lightsheet_psf((65, 33, 33), 0.1, na_illumination=2.0), "na_illumination"),
        (lambda: widefield_psf((9, 9, 9), 0.1, backend="fast"), "backend"),
        (lambda: isotropic_psf(np.ones((4, 5, 5))), "odd"),
        (lambda: split_psf(gaussian_psf(2, 8), -gaussian_psf(2, 2)), "non-negative"),
        (lambda: split_psf(gaussian_psf(2, 8), gaussian_psf(2, 2), iterations=0), "iterations"),
        (lambda: rotate_psf_to_lateral(np.ones((3, 3))), "3D"),
    ],
)
def test_bad_arguments_raise_input_error(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_docstring_examples_run():
    names = {name: getattr(isonet.psf, name) for name in isonet.psf.__all__}
    attempted = 0
    for module in (isonet.psf.models, isonet.psf.kernels, isonet.psf.measurements, isonet.psf.kinds,
                   isonet.psf.acquired):
        result = doctest.testmod(module, extraglobs=names, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 10
