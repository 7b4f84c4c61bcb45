import numpy as np
import pytest

from isonet.degrade import (
    blur2d,
    cubic_taps,
    keys_cubic_weights,
    reflect_indices,
    subsample_upsample,
    upsample_axis,
    upsampled_length,
)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 8])
def test_weights_partition_unity_and_interpolate(factor):
    w = keys_cubic_weights(factor)
    assert w.shape == (factor, 4)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(w[0], [0, 1, 0, 0])


@pytest.mark.parametrize("factor", [2, 4, 5])
def test_acquired_planes_land_exactly_on_multiples_of_factor(factor):
    rng = np.random.default_rng(0)
    x = rng.random((9, 6, 5)).astype(np.float32)
    up = upsample_axis(x, factor, axis=0)
    assert up.shape == (upsampled_length(9, factor), 6, 5) == ((9 - 1) * factor + 1, 6, 5)
    np.testing.assert_allclose(up[::factor], x, atol=1e-6)


def test_cubic_reproduces_quadratics_in_the_interior():
    # Keys a=-0.5 cubic convolution is exact for polynomials up to degree 2.
    t = np.arange(20, dtype=np.float64)
    up = upsample_axis(0.5 * t**2 - 3 * t + 1, 4)
    u = np.arange(len(up)) / 4
    inner = (u >= 1) & (u <= 18)
    np.testing.assert_allclose(up[inner], (0.5 * u**2 - 3 * u + 1)[inner], rtol=1e-5, atol=1e-4)


def test_zoom_convention_would_shift_planes():
    # The documented reason for our grid: scipy's zoom stretches corner to corner instead.
    from scipy.ndimage import zoom

    x = np.arange(10, dtype=np.float64)
    z = zoom(x, 4, order=1)  # 40 samples, input sample 9 lands at 39 not 36
    assert len(z) == 40 and len(upsample_axis(x, 4)) == 37
    np.testing.assert_allclose(upsample_axis(x, 4)[36], 9.0)


def test_partial_output_matches_full():
    rng = np.random.default_rng(1)
    x = rng.random((7, 3))
    full = upsample_axis(x, 3, axis=0)
    idx = np.array([0, 5, 11, 18])
    np.testing.assert_allclose(upsample_axis(x, 3, axis=0, out_indices=idx), full[idx])
    with pytest.raises(ValueError):
        cubic_taps(np.array([19]), 7, 3)


def test_reflect_indices_match_numpy_pad():
    n = 5
    idx = np.arange(-7, 12)
    padded = np.pad(np.arange(n), 7, mode="reflect")
    np.testing.assert_array_equal(reflect_indices(idx, n), padded[idx + 7])


def test_subsample_upsample_alignment():
    x = np.tile(np.arange(32, dtype=np.float32), (4, 1))  # linear ramp along axis 1
    y, start = subsample_upsample(x, 4, axis=1, phase=3)
    assert start == 3 and y.shape == (4, 29)
    np.testing.assert_allclose(y[:, 4:-4], x[:, 3 + 4 : 3 + 29 - 4], atol=1e-5)


def test_blur2d_preserves_mean_and_shape():
    rng = np.random.default_rng(2)
    img = rng.random((40, 50)).astype(np.float32)
    k = np.ones((5, 9)) / 45
    out = blur2d(img, k)
    assert out.shape == img.shape and out.dtype == np.float32
    assert abs(out.mean() - img.mean()) < 0.01
    assert out.std() < img.std()
    delta = np.zeros((3, 3)); delta[1, 1] = 1
    np.testing.assert_allclose(blur2d(img, delta), img, atol=1e-5)


@pytest.mark.parametrize("factor", [0.5, 0, -2, float("nan"), float("inf"), True, "4"])
def test_bad_factor(factor):
    with pytest.raises(ValueError, match="finite number >= 1"):
        upsample_axis(np.zeros(4), factor)
