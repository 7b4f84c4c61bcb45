import numpy as np
import pytest

from isonet.camera import Camera
from isonet.degrade import blur2d, upsample_axis
from isonet.patches import Normalization, degrade_plane, fit_normalization, sample_training_pairs, split_planes
from isonet.psf import gaussian_psf, lateral_plane_kernel, rotate_psf_to_lateral
from isonet.synthetic import simulate_acquisition


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
    planes = [np.zeros((96, 96), np.float32) for _ in range(4)]
    for p in planes:
        p[30:60, 30:60] = 1.0  # a bright square: foreground
    pairs = sample_training_pairs(planes, kernel, 4, 40, patch_size=32, foreground_threshold=0.5,
                                  foreground_fraction=1.0, seed=0)
    X, Y = pairs.inputs(np.arange(40)), pairs.targets
    assert X.shape == Y.shape == (40, 32, 32) and X.dtype == np.float32 and len(pairs) == 40
    # every patch is centred on foreground, so every target patch contains some
    assert (Y.max(axis=(1, 2)) == 1.0).all()
    Xb = sample_training_pairs(planes, kernel, 4, 40, patch_size=32, seed=0).samples
    Xc = sample_training_pairs(planes, kernel, 4, 40, patch_size=32, seed=0).samples
    np.testing.assert_array_equal(Xb, Xc)


def test_stored_samples_rebuild_the_whole_plane_degradation_exactly(kernel):
    """A patch input upsampled from its stored samples equals the same crop of the degraded plane."""
    plane = np.random.default_rng(4).random((70, 90)).astype(np.float32)
    pairs = sample_training_pairs([plane], kernel, 4, 30, patch_size=32, both_lateral_axes=False, seed=3)
    X = pairs.inputs(np.arange(30))
    degraded = {phase: degrade_plane(plane, kernel, 4, phase) for phase in range(4)}
    for x, y in zip(X, pairs.targets):
        hits = [(p, yx) for p, (d, t) in degraded.items() for yx in np.argwhere(t == y[0, 0])
                if np.array_equal(t[yx[0] : yx[0] + 32, yx[1] : yx[1] + 32], y)]
        # the same target crop lies in every phase's target; one phase's input must match exactly
        errors = [np.abs(x - degraded[p][0][y0 : y0 + 32, x0 : x0 + 32]).max() for p, (y0, x0) in hits]
        assert len(hits) == 4 and min(errors) < 1e-5 and sorted(errors)[1] > 1e-3


def test_inputs_are_renoised_on_every_draw(kernel):
    plane = np.full((64, 64), 0.5, np.float32)
    norm = Normalization(100.0, 300.0)
    pairs = sample_training_pairs([plane], kernel, 4, 8, patch_size=32, seed=0, camera=Camera(1.0, 100.0, 2.0),
                                  norm=norm)
    a = pairs.inputs(np.arange(8), np.random.default_rng([0, 0]))
    b = pairs.inputs(np.arange(8), np.random.default_rng([0, 1]))
    again = pairs.inputs(np.arange(8), np.random.default_rng([0, 0]))
    np.testing.assert_array_equal(a, again)  # seeded: reproducible
    assert np.corrcoef((a - 0.5).ravel(), (b - 0.5).ravel())[0, 1] < 0.05  # a new draw each epoch
    # noise of sqrt(100 photons + 4) counts on the acquired columns (every 4th from the offset)
    acquired = np.stack([x[:, (4 - o) % 4 :: 4] for x, o in zip(a, pairs.offsets)])
    assert abs(acquired.std() * 200 - np.sqrt(104)) < 0.05 * np.sqrt(104)


def test_degraded_noise_matches_an_axial_slice_of_a_simulated_acquisition():
    """Phase-dependent variance and axial correlation: training input vs real acquisition."""
    factor, photons, offset, read = 4, 100.0, 100.0, 2.0
    # real: a flat object imaged, every 4th plane kept, Poisson + read noise, cubic upsampling along z
    gt = np.ones((401, 24, 24), np.float32)
    delta = np.zeros((1, 1, 1), np.float32); delta[0, 0, 0] = 1
    acquired = simulate_acquisition(gt, delta, factor, photons=photons, read_noise=read, offset=offset, seed=0,
                                    dtype=np.float32)
    real = upsample_axis(acquired - (offset + photons), factor, axis=0)  # (z, y, x) noise
    real = np.moveaxis(real, 0, -1).reshape(-1, real.shape[0])  # axial lines
    # training input: a flat normalised plane degraded in acquisition order
    norm = Normalization(offset, offset + 2 * photons)
    plane = np.full((576, 401), 0.5, np.float32)
    delta2 = np.ones((1, 1), np.float32)
    deg, _ = degrade_plane(plane, delta2, factor, 0, Camera(1.0, offset, read), norm, np.random.default_rng(1))
    train = (deg - 0.5) * 2 * photons
    for lines in (real, train):
        var = np.array([lines[:, j::factor].var() for j in range(factor)])
        lag1 = np.corrcoef(lines[:, :-1].ravel(), lines[:, 1:].ravel())[0, 1]
        lines_stats = (var / var[0], lag1, var[0])
        if lines is real:
            expect = lines_stats
    np.testing.assert_allclose(lines_stats[0], expect[0], atol=0.05)  # ~1 / 0.8 / 0.64 / 0.8
    assert expect[0][2] < 0.75  # the mid-way phase carries much less noise than an acquired plane
    assert abs(lines_stats[1] - expect[1]) < 0.05 and expect[1] > 0.8  # strongly correlated along z
    assert abs(lines_stats[2] / expect[2] - 1) < 0.05  # same variance on the acquired planes


def test_split_planes_holds_whole_planes_out():
    train, val = split_planes(32, 0.1)
    assert len(val) == 3 and not set(train) & set(val) and sorted({*train, *val}) == list(range(32))
    assert 0 not in val and 31 not in val


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


@pytest.mark.parametrize("sigma", [4.5, 10 / 3])
def test_non_integer_step_degrades_at_that_step(kernel, sigma):
    """Targets are whole columns from the phase on; inputs sit on them, not half a column off."""
    from isonet.degrade import subsample_axis, subsampled_length, upsampled_length

    x = np.arange(90.0)
    plane = np.tile(np.cos(2 * np.pi * x / 30) + 0.5, (40, 1)).astype(np.float32)  # smooth along x
    for phase in range(int(np.ceil(sigma))):
        deg, tgt = degrade_plane(plane, kernel, sigma, phase)
        n = subsampled_length(90, sigma, phase)
        assert deg.shape == tgt.shape == (40, upsampled_length(n, sigma))
        np.testing.assert_array_equal(tgt, plane[:, phase : phase + deg.shape[1]])
        blurred = blur2d(plane, kernel)
        np.testing.assert_allclose(deg, upsample_axis(subsample_axis(blurred, sigma, 1, phase), sigma, axis=1))
        # the degraded plane follows the blurred one column for column (cubic accuracy)...
        aligned = np.abs(deg - blurred[:, phase : phase + deg.shape[1]])[:, 8:-8].max()
        shifted = np.abs(deg[:, :-1] - blurred[:, phase + 1 : phase + deg.shape[1]])[:, 8:-8].max()
        assert aligned < 0.02 and shifted > 10 * aligned  # ...and a shift by one column is ten times worse
    with pytest.raises(ValueError, match="phase"):
        degrade_plane(plane, kernel, sigma, int(np.ceil(sigma)))


@pytest.mark.parametrize("sigma", [4.5, 10 / 3])
def test_stored_samples_rebuild_the_degradation_at_a_non_integer_step(kernel, sigma):
    """As for an integer σ: each patch input is the crop of its plane's degradation at one phase."""
    plane = np.random.default_rng(5).random((60, 80)).astype(np.float32)
    pairs = sample_training_pairs([plane], kernel, sigma, 12, patch_size=24, both_lateral_axes=False, seed=2)
    assert pairs.factor == sigma and pairs.offsets.max() < (9 if sigma == 4.5 else 10)
    X = pairs.inputs(np.arange(12))
    phases = range(int(np.ceil(sigma)))
    degraded = {phase: degrade_plane(plane, kernel, sigma, phase) for phase in phases}
    for x, y in zip(X, pairs.targets):
        (r, c), = np.argwhere(plane == y[0, 0])  # random values: the target's corner is unique
        np.testing.assert_array_equal(y, plane[r : r + 24, c : c + 24])
        errors = [np.abs(x - d[r : r + 24, c - p : c - p + 24]).max()
                  for p, (d, t) in degraded.items() if 0 <= c - p <= t.shape[1] - 24]
        assert min(errors) < 1e-5 and sorted(errors)[1] > 1e-3
    np.testing.assert_array_equal(X[3], pairs.inputs(3))


def _whole_plane_blur(image, kernel):
    """The blur as one FFT convolution of the whole mirrored plane (what the tiled blur replaces)."""
    from scipy.signal import fftconvolve

    py, px = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(image.astype(np.float32), ((py, py), (px, px)), mode="reflect")
    return fftconvolve(padded, kernel.astype(np.float32), mode="valid").astype(np.float32)


@pytest.fixture(scope="module")
def wide_kernel():
    """A real h_rot kernel as the benchmark's psf stage makes it (17 x 65)."""
    return lateral_plane_kernel(rotate_psf_to_lateral(gaussian_psf(2.0, 8.0)))


@pytest.mark.parametrize("sigma", [4.5, 4])
def test_tiled_degradation_equals_the_whole_plane_one(wide_kernel, sigma, monkeypatch):
    """A plane of 2 x 2 FFT tiles (odd sizes), its transpose and one smaller than a tile: as before."""
    import isonet.degrade
    import isonet.patches
    from isonet.degrade import blur2d, blurred_shape, subsample_axis
    from isonet.patches import acquire_plane

    rng = np.random.default_rng(7)
    big, small = rng.random((601, 501)).astype(np.float32), rng.random((41, 67)).astype(np.float32)
    assert [(start, stop) for start, stop, _ in isonet.degrade.blur2d_bands(big, wide_kernel)] == [(0, 301), (301, 601)]
    assert isonet.degrade._blur_tiling(501, 65) == (251, 320)  # 2 tiles a band, FFTs of 320 columns
    assert blurred_shape(small.shape, wide_kernel.shape) == small.shape
    for plane in (big, big.T, small):
        whole = _whole_plane_blur(plane, wide_kernel)
        np.testing.assert_allclose(blur2d(plane, wide_kernel), whole, rtol=0, atol=1e-6 * np.abs(whole).max())
        for phase in (0, int(np.ceil(sigma)) - 1):
            samples, target = acquire_plane(plane, wide_kernel, sigma, phase)
            reference = subsample_axis(whole, sigma, axis=1, phase=phase)
            assert samples.shape == reference.shape and samples.flags.c_contiguous
            np.testing.assert_allclose(samples, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
            np.testing.assert_array_equal(target, plane[:, phase : phase + target.shape[1]])

    pairs = sample_training_pairs([big, small], wide_kernel, sigma, 40, patch_size=32, seed=1)
    # the whole-plane version: one band holding the whole blurred plane
    monkeypatch.setattr(isonet.patches, "blur2d_bands",
                        lambda plane, kernel: iter([(0, plane.shape[0], _whole_plane_blur(plane, kernel))]))
    before = sample_training_pairs([big, small], wide_kernel, sigma, 40, patch_size=32, seed=1)
    np.testing.assert_array_equal(pairs.targets, before.targets)
    np.testing.assert_array_equal(pairs.offsets, before.offsets)
    np.testing.assert_allclose(pairs.samples, before.samples, rtol=0, atol=1e-5 * np.abs(before.samples).max())


def test_acquiring_a_plane_needs_the_same_memory_at_any_length(wide_kernel):
    """Traced working memory of acquire_plane beyond its samples: a band and a tile, not the plane."""
    import tracemalloc

    from isonet.patches import acquire_plane

    rng = np.random.default_rng(8)
    acquire_plane(rng.random((8, 512), np.float32), wide_kernel, 4.5, 1)  # builds the spline weights once
    working = {}
    for rows in (2048, 8192):  # 4 and 16 MiB planes, 512 wide: 5 and 17 bands of at most 496 rows
        plane = rng.random((512, rows), np.float32).T
        tracemalloc.start()
        try:
            samples, _ = acquire_plane(plane, wide_kernel, 4.5, 1)
            working[rows] = tracemalloc.get_traced_memory()[1] - samples.nbytes
        finally:
            tracemalloc.stop()
    # a band (at most 496 x 512 float32, 1 MiB) and one tile's transforms (FFTs of at most 512²);
    # the whole-plane blur needed about 5.5 planes (88 MiB for the larger one)
    assert working[8192] < 1.25 * working[2048] and working[8192] < 8 * 2**20, working
