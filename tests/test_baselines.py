import numpy as np
import pytest
from scipy.signal import fftconvolve

from isonet.baselines import cubic_upsample, richardson_lucy, subsampling_kernel
from isonet.errors import InputError
from isonet.metrics import psnr
from isonet.psf import gaussian_psf


@pytest.fixture(scope="module")
def blurred_phantom():
    """Sparse bright blobs blurred by an axially elongated gaussian PSF, Poisson noise, offset."""
    rng = np.random.default_rng(0)
    gt = np.zeros((32, 40, 40), np.float32)
    z, y, x = np.ogrid[:32, :40, :40]
    for c in rng.uniform(6, 34, (12, 3)):
        gt[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 9] = 1.0
    h = gaussian_psf(1.0, 3.0)
    blurred = np.clip(fftconvolve(gt, h, mode="same"), 0, None)
    offset = 10.0
    noisy = rng.poisson(500 * blurred + offset).astype(np.float32)
    return gt, h, noisy, offset


def test_cubic_upsample_is_exact_on_the_acquired_planes():
    a = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)
    u = cubic_upsample(a, 4)
    assert u.shape == (17, 6, 7) and u.dtype == np.float32
    np.testing.assert_array_equal(u[::4], a)


def test_cubic_upsample_rejects_bad_input():
    with pytest.raises(InputError, match="3D"):
        cubic_upsample(np.zeros((4, 4)), 2)
    with pytest.raises(InputError, match="factor"):
        cubic_upsample(np.zeros((4, 4, 4)), 0)


def test_richardson_lucy_improves_psnr_over_the_blurred_input(blurred_phantom):
    gt, h, noisy, offset = blurred_phantom
    deconvolved = richardson_lucy(noisy, h, iterations=15, background=offset)
    before = psnr((noisy - offset) / 500, gt, data_range=1.0)
    after = psnr(deconvolved / 500, gt, data_range=1.0)
    assert after > before + 1.0


def test_richardson_lucy_is_non_negative_float32_and_keeps_intensity(blurred_phantom):
    _, h, noisy, offset = blurred_phantom
    d = richardson_lucy(noisy - 20, h, iterations=10, background=0.0)  # some negative input
    assert d.dtype == np.float32 and d.shape == noisy.shape
    assert d.min() >= 0
    d = richardson_lucy(noisy, h, iterations=10, background=offset)
    expected = np.clip(noisy - offset, 0, None).sum()
    assert d.sum() == pytest.approx(expected, rel=0.05)


def test_richardson_lucy_callback_sees_every_iteration(blurred_phantom):
    _, h, noisy, offset = blurred_phantom
    seen = []
    last = richardson_lucy(noisy, h, iterations=3, background=offset, callback=lambda i, x: seen.append((i, x.copy())))
    assert [i for i, _ in seen] == [1, 2, 3]
    np.testing.assert_array_equal(seen[-1][1], last)


def test_richardson_lucy_rejects_bad_parameters():
    v = np.ones((8, 8, 8))
    with pytest.raises(InputError, match="odd"):
        richardson_lucy(v, np.ones((2, 3, 3)))
    with pytest.raises(InputError, match="iterations"):
        richardson_lucy(v, np.ones((3, 3, 3)), iterations=-1)
    with pytest.raises(InputError, match="background"):
        richardson_lucy(v, np.ones((3, 3, 3)), background=-1.0)


def test_subsampling_kernel_is_a_delta():
    k = subsampling_kernel()
    assert k.shape == (1, 1) and k.sum() == 1
