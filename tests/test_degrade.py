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


# ---------------------------------------------------------------------------- non-integer σ


def test_factor_is_an_exact_ratio():
    from fractions import Fraction

    from isonet.degrade import exact_factor, factor_fraction

    assert factor_fraction(0.9 / 0.2) == Fraction(9, 2) and factor_fraction(1.0 / 0.3) == Fraction(10, 3)
    assert exact_factor(1.3 / 0.325) == 4 and isinstance(exact_factor(1.3 / 0.325), int)
    assert exact_factor(0.7 / 0.1) == 7  # 6.999999999999999 as a float quotient
    assert exact_factor(exact_factor(1.0 / 0.3)) == 1.0 / 0.3  # the float form reads back as the same ratio
    # floor((n - 1) σ) + 1, in integers: 3 · 10/3 is 10 and 7 · (0.7 / 0.1) is 49, not one less
    assert [upsampled_length(n, s) for n, s in [(10, 4.5), (4, 1.0 / 0.3), (3, 1.0 / 0.3), (8, 0.7 / 0.1)]] == [
        41, 11, 7, 50]


@pytest.mark.parametrize("sigma", [0.9 / 0.2, 1.0 / 0.3, 1.3 / 0.325])
def test_plane_positions_on_a_known_signal(sigma):
    """Acquired plane k holds s(k σ); upsampled plane m must hold s(m), and be plane k where m = k σ."""
    from fractions import Fraction

    from isonet.degrade import factor_fraction

    def signal(z):  # a slow cosine on a ramp, z in lateral pixels
        return np.cos(2 * np.pi * z / 40 + 0.3) + 0.02 * z

    n = 23
    acquired = signal(np.arange(n) * sigma)[:, None, None] * np.ones((1, 3, 2))
    up = upsample_axis(acquired.astype(np.float32), sigma, axis=0)
    m = np.arange(up.shape[0])
    assert up.shape[0] == int(np.floor((n - 1) * Fraction(factor_fraction(sigma)))) + 1
    inner = (m / sigma >= 1) & (m / sigma <= n - 3)  # where the cubic's four taps are real planes
    err = np.abs(up[:, 0, 0] - signal(m))
    assert err[inner].max() < 0.01 and err.max() < 0.1  # mirrored edges bend the ramp
    # a rounded factor puts plane m at the wrong z, by up to (n - 1)|σ - round(σ)| pixels at the far end
    if sigma != round(sigma):
        wrong = upsample_axis(acquired.astype(np.float32), round(sigma), axis=0)[:, 0, 0]
        k = min(len(wrong), len(m))
        assert np.abs(wrong[:k] - signal(m[:k]))[inner[:k]].max() > 10 * err[inner].max()
    # output planes at m = k σ (k σ an integer) are acquired plane k, bit for bit
    f = factor_fraction(sigma)
    on_plane = np.flatnonzero(m * f.denominator % f.numerator == 0)
    assert len(on_plane) == (n - 1) // f.denominator + 1
    np.testing.assert_array_equal(up[on_plane], acquired[on_plane * f.denominator // f.numerator].astype(np.float32))


@pytest.mark.parametrize("sigma", [4.5, 10 / 3])
def test_partial_output_matches_full_for_a_non_integer_factor(sigma):
    x = np.random.default_rng(2).random((11, 4)).astype(np.float32)
    full = upsample_axis(x, sigma, axis=0)
    idx = np.array([0, 1, 5, 9, 22, len(full) - 1])
    np.testing.assert_array_equal(upsample_axis(x, sigma, axis=0, out_indices=idx), full[idx])
    taps, weights = cubic_taps(idx, 11, sigma)
    assert taps.min() >= 0 and taps.max() < 11 and np.allclose(weights.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="output indices"):
        cubic_taps(np.array([len(full)]), 11, sigma)


@pytest.mark.parametrize("sigma", [4.5, 10 / 3, 2.5])
def test_subsample_axis_is_accurate_on_a_smooth_signal(sigma):
    """Acquisition between samples: the quintic spline against the exact signal, and against the cubic."""
    from isonet.degrade import keys_cubic_kernel, subsample_axis, subsampled_length

    n, period = 200, 16
    x = np.arange(n, dtype=np.float64)

    def signal(p):
        return np.cos(2 * np.pi * p / period + 0.3)

    samples = subsample_axis(signal(x)[:, None] * np.ones((1, 2)), sigma, axis=0)
    positions = np.arange(subsampled_length(n, sigma)) * sigma
    assert samples.shape == (len(positions), 2) and samples.dtype == np.float32
    err = np.abs(samples[:, 0] - signal(positions))
    inner = (positions > 10) & (positions < n - 11)
    assert err.max() < 2e-5 and err[inner].max() < 1e-6
    k = np.floor(positions).astype(int)
    cubic = (keys_cubic_kernel(positions - k) * signal(x)[np.clip(k[:, None] + np.arange(-1, 3), 0, n - 1)]).sum(1)
    assert np.abs(cubic - signal(positions))[inner].max() > 100 * err[inner].max()
    # whole-sample positions are copies; the phase shifts every position by whole samples
    data = np.random.default_rng(0).random((n, 3)).astype(np.float32)
    whole = np.flatnonzero(np.isclose(positions % 1, 0))
    np.testing.assert_array_equal(subsample_axis(data, sigma)[whole], data[np.rint(positions[whole]).astype(int)])
    np.testing.assert_allclose(subsample_axis(signal(x), sigma, phase=2), signal(2 + np.arange(
        subsampled_length(n, sigma, 2)) * sigma), atol=1e-4)
    with pytest.raises(ValueError, match="phase"):
        subsample_axis(data, sigma, phase=int(np.ceil(sigma)))


def test_docstring_examples_run():
    import doctest

    import isonet.degrade

    result = doctest.testmod(isonet.degrade)
    assert result.attempted >= 15 and result.failed == 0
