import numpy as np
import pytest

from isonet.degrade import blur2d, upsample_axis
from isonet.patches import Normalization, degrade_plane, fit_normalization, sample_training_pairs
from isonet.psf import gaussian_psf, lateral_plane_kernel, rotate_psf_to_lateral


@pytest.fixture(scope="module")
def kernel():
    return lateral_plane_kernel(rotate_psf_to_lateral(gaussian_psf(1.0, 3.0)))


def test_kernel_axial_profile_lies_along_x(kernel):
    assert kernel.shape[1] > kernel.shape[0]
    np.testing.assert_allclose(kernel.sum(), 1.0)


def test_degrade_plane_is_blur_subsample_upsample(kernel):
    rng = np.random.default_rng(0)
    plane = rng.random((40, 61)).astype(np.float32)
    deg, tgt = degrade_plane(plane, kernel, 4, phase=2)
    blurred = blur2d(plane, kernel)
    assert deg.shape == tgt.shape == (40, (len(range(2, 61, 4)) - 1) * 4 + 1)
    np.testing.assert_array_equal(tgt, plane[:, 2 : 2 + deg.shape[1]])
    # kept columns are the blurred ones, exactly; in between they are cubic interpolations
    np.testing.assert_allclose(deg[:, ::4], blurred[:, 2::4][:, : deg[:, ::4].shape[1]], atol=1e-5)
    np.testing.assert_allclose(deg, upsample_axis(blurred[:, 2::4], 4, axis=1), atol=1e-6)


def test_sample_pairs_shapes_and_foreground(kernel):
    rng = np.random.default_rng(1)
    planes = [np.zeros((96, 96), np.float32) for _ in range(4)]
    for p in planes:
        p[30:60, 30:60] = 1.0  # a bright square: foreground
    X, Y = sample_training_pairs(planes, kernel, 4, 40, patch_size=32, foreground_threshold=0.5,
                                 foreground_fraction=1.0, seed=0)
    assert X.shape == Y.shape == (40, 32, 32) and X.dtype == np.float32
    # every patch is centred on foreground, so every target patch contains some
    assert (Y.max(axis=(1, 2)) == 1.0).all()
    Xb, _ = sample_training_pairs(planes, kernel, 4, 40, patch_size=32, seed=0)
    Xc, _ = sample_training_pairs(planes, kernel, 4, 40, patch_size=32, seed=0)
    np.testing.assert_array_equal(Xb, Xc)


def test_patch_size_checks(kernel):
    with pytest.raises(ValueError, match="multiple of 4"):
        sample_training_pairs([np.zeros((64, 64))], kernel, 4, 4, patch_size=30)
    with pytest.raises(ValueError, match="too small"):
        sample_training_pairs([np.zeros((40, 40))], kernel, 4, 4, patch_size=64)


def test_normalization_roundtrip():
    x = np.random.default_rng(2).normal(300, 50, 10000)
    n = fit_normalization(x, 1, 99.8)
    assert n.low < 300 < n.high
    np.testing.assert_allclose(n.invert(n.apply(x)), x, rtol=1e-5)
    assert Normalization.from_dict(n.to_dict()) == n
    with pytest.raises(ValueError, match="flat"):
        fit_normalization(np.ones(100))
