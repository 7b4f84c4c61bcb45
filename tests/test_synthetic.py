"""Tests for isonet.synthetic: phantoms and simulated anisotropic acquisition."""

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from isonet.errors import InputError
from isonet.psf import gaussian_psf
from isonet.synthetic import (
    PHANTOM_KINDS,
    SyntheticDataset,
    blur,
    make_dataset,
    make_phantom,
    membrane_phantom,
    mixed_phantom,
    nuclei_phantom,
    perlin_noise,
    simulate_acquisition,
)

FULL = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity: touching diagonally counts


@pytest.fixture(scope="module")
def nuclei():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default density must fit without a warning
        return nuclei_phantom((128, 128, 128), seed=3)


@pytest.fixture(scope="module")
def membranes():
    return membrane_phantom((64, 96, 96), cell_size=24, seed=5)


# ---------------------------------------------------------------------------------- perlin


def test_perlin_range_dtype_and_determinism():
    p = perlin_noise((20, 30, 40), scale=8, seed=1)
    assert p.shape == (20, 30, 40) and p.dtype == np.float32
    assert p.min() == 0 and p.max() == 1
    assert np.array_equal(p, perlin_noise((20, 30, 40), scale=8, seed=1))
    assert not np.allclose(p, perlin_noise((20, 30, 40), scale=8, seed=2))


def test_perlin_is_smooth_at_its_scale():
    p = perlin_noise((32, 64, 64), scale=16, octaves=1, seed=0)
    for axis in range(3):
        step = np.abs(np.diff(p, axis=axis))
        assert step.max() < 0.15  # no jumps: a single octave is C2 smooth
    assert p.std() > 0.1  # but not flat
    # correlation length follows the scale: coarser scale, smaller voxel-to-voxel changes
    coarse = perlin_noise((32, 64, 64), scale=32, octaves=1, seed=0)
    assert np.abs(np.diff(coarse, axis=2)).mean() < np.abs(np.diff(p, axis=2)).mean()


def test_perlin_any_dimension_and_per_axis_scale():
    assert perlin_noise((50,), scale=5, seed=0).shape == (50,)
    assert perlin_noise((10, 12), scale=(2, 4), seed=0).shape == (10, 12)
    q = perlin_noise((8, 64, 64), scale=(100, 4, 4), octaves=1, seed=0)
    # huge z scale: planes barely change along z compared with along x
    assert np.abs(np.diff(q, axis=0)).mean() < 0.2 * np.abs(np.diff(q, axis=2)).mean()
    assert np.all(perlin_noise((1, 1, 1), scale=4, seed=0) == 0.5)


@pytest.mark.parametrize(
    "kw",
    [dict(shape=(4, -1, 4)), dict(scale=0), dict(scale=(1, 2)), dict(octaves=0), dict(persistence=1.5)],
)
def test_perlin_bad_arguments(kw):
    args = dict(shape=(4, 4, 4), scale=4.0) | kw
    with pytest.raises(InputError):
        perlin_noise(**args)


# ---------------------------------------------------------------------------------- nuclei


def test_nuclei_shapes_dtypes_and_determinism(nuclei):
    image, labels = nuclei
    assert image.shape == labels.shape == (128, 128, 128)
    assert image.dtype == np.float32 and labels.dtype == np.int32
    assert 0 <= image.min() and image.max() <= 1
    again = nuclei_phantom((128, 128, 128), seed=3)
    assert np.array_equal(image, again[0]) and np.array_equal(labels, again[1])
    other = nuclei_phantom((128, 128, 128), seed=4)
    assert not np.array_equal(labels, other[1])


def test_nuclei_density_rule(nuclei):
    _, labels = nuclei
    expected = 1500 * 128**3 / 512**3  # 23.4
    assert labels.max() == round(expected)
    assert abs(labels.max() - expected) <= 0.1 * expected
    _, labels = nuclei_phantom((48, 160, 160), seed=0)  # anisotropic box: round(13.7) = 14
    assert labels.max() == round(1500 * 48 * 160 * 160 / 512**3) == 14
    _, tiny = nuclei_phantom((24, 24, 24), radius=(3, 5), seed=0)  # 0.15 by the rule, but at least 1
    assert tiny.max() == 1


def test_nuclei_labels_are_separate_connected_objects(nuclei):
    _, labels = nuclei
    n = labels.max()
    assert np.array_equal(np.unique(labels), np.arange(n + 1))
    # nuclei never touch, even diagonally: one connected component per label
    _, n_objects = ndimage.label(labels > 0, structure=FULL)
    assert n_objects == n
    for sl, lab in zip(ndimage.find_objects(labels), range(1, n + 1)):
        assert ndimage.label(labels[sl] == lab)[1] == 1
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.min() >= 8
    assert sizes.max() <= 4 / 3 * math.pi * 16**3 + 1  # default semi-axes at most 16


def test_nuclei_texture_and_brightness(nuclei):
    image, labels = nuclei
    assert np.all(image[labels == 0] == 0)
    assert np.all(image[labels > 0] > 0)
    # texture varies intensity inside a nucleus; brightness varies between nuclei
    peaks = ndimage.maximum(image, labels, np.arange(1, labels.max() + 1))
    lows = ndimage.minimum(image, labels, np.arange(1, labels.max() + 1))
    assert np.all(lows < 0.9 * peaks)
    assert np.ptp(peaks) > 0.05 and peaks.max() <= 1
    flat, flat_labels = nuclei_phantom((64, 64, 64), n_nuclei=5, seed=0, texture=0)
    assert flat_labels.max() == 5
    for lab in range(1, 6):
        values = flat[flat_labels == lab]
        assert values.min() == values.max() and 0.7 <= values[0] <= 1.0


def test_nuclei_radius_and_count_arguments():
    _, labels = nuclei_phantom((64, 64, 64), n_nuclei=6, radius=6, seed=0)  # spheres of radius 6
    sizes = np.bincount(labels.ravel())[1:]
    assert len(sizes) == 6
    interior = [s for s, sl in zip(sizes, ndimage.find_objects(labels))
                if all(x.start > 0 and x.stop < 64 for x in sl)]  # fmt: skip
    assert interior and np.allclose(interior, 4 / 3 * math.pi * 6**3, rtol=0.1)
    _, none = nuclei_phantom((16, 16, 16), n_nuclei=0, seed=0)
    assert none.max() == 0


def test_nuclei_overfull_volume_warns_and_places_fewer():
    with pytest.warns(RuntimeWarning, match="placed"):
        _, labels = nuclei_phantom((32, 32, 32), n_nuclei=50, radius=(10, 12), seed=0, max_tries=300)
    assert 1 <= labels.max() < 50
    assert ndimage.label(labels > 0, structure=FULL)[1] == labels.max()


@pytest.mark.parametrize(
    "kw",
    [
        dict(shape=(32, 32)),
        dict(n_nuclei=-1),
        dict(n_nuclei=2.5),
        dict(radius=(8, 4)),
        dict(radius=(1, 2, 3)),
        dict(texture=1.5),
        dict(brightness=(0, 1)),
    ],
)
def test_nuclei_bad_arguments(kw):
    args = dict(shape=(32, 32, 32)) | kw
    with pytest.raises(InputError):
        nuclei_phantom(**args)


# ------------------------------------------------------------------------------- membranes


def test_membranes_shape_dtype_determinism(membranes):
    m = membranes
    assert m.shape == (64, 96, 96) and m.dtype == np.float32
    assert m.min() == 0 and 0 < m.max() <= 1
    assert np.array_equal(m, membrane_phantom((64, 96, 96), cell_size=24, seed=5))
    assert not np.array_equal(m, membrane_phantom((64, 96, 96), cell_size=24, seed=6))


def test_membranes_are_a_thin_connected_network(membranes):
    on = membranes > 0.5 * membranes.max()
    assert 0.05 < on.mean() < 0.4
    components, n = ndimage.label(on)
    largest = np.bincount(components.ravel())[1:].max()
    assert largest >= 0.99 * on.sum()
    # the sheets enclose cells: about one per cell_size**3 voxels
    cells, n_cells = ndimage.label(membranes == 0)
    assert 0.5 * 64 * 96 * 96 / 24**3 < n_cells < 3 * 64 * 96 * 96 / 24**3


def test_membrane_thickness_and_texture():
    thin = membrane_phantom((32, 64, 64), cell_size=16, thickness=1.5, seed=0, texture=0)
    thick = membrane_phantom((32, 64, 64), cell_size=16, thickness=4, seed=0, texture=0)
    assert 1.8 < (thick > 0.5).mean() / (thin > 0.5).mean() < 3.5
    assert thin.max() == 1 and np.sum(thin == 1) > 0
    textured = membrane_phantom((32, 64, 64), cell_size=16, thickness=1.5, seed=0, texture=0.5)
    core = thin == 1
    assert textured[core].min() >= 0.5 - 1e-6 and textured[core].std() > 0.05


@pytest.mark.parametrize("kw", [dict(cell_size=2), dict(thickness=0), dict(jitter=2), dict(texture=-0.1)])
def test_membrane_bad_arguments(kw):
    with pytest.raises(InputError):
        membrane_phantom((16, 16, 16), **kw)


# ----------------------------------------------------------------------------- mixed, kinds


def test_mixed_phantom_nuclei_over_dimmer_membranes():
    image, labels = mixed_phantom((64, 96, 96), seed=0, cell_size=24, membrane_level=0.3)
    assert image.dtype == np.float32 and labels.dtype == np.int32
    assert labels.max() == round(1500 * 64 * 96 * 96 / 512**3)
    background = image[labels == 0]
    assert background.max() <= 0.3 + 1e-6 and (background > 0.1).mean() > 0.05
    assert np.all(image[labels > 0] > 0) and np.median(image[labels > 0]) > 0.3
    again, _ = mixed_phantom((64, 96, 96), seed=0, cell_size=24, membrane_level=0.3)
    assert np.array_equal(image, again)


def test_make_phantom_dispatch():
    image, labels = make_phantom("nuclei", (32, 64, 64), seed=0)
    assert np.array_equal(labels, nuclei_phantom((32, 64, 64), seed=0)[1])
    image, labels = make_phantom("membranes", (32, 32, 32), seed=0, cell_size=8)
    assert labels is None and np.array_equal(image, membrane_phantom((32, 32, 32), seed=0, cell_size=8))
    image, labels = make_phantom("both", (32, 64, 64), seed=0, cell_size=16)
    assert labels is not None and labels.shape == image.shape
    assert set(PHANTOM_KINDS) == {"nuclei", "membranes", "both"}
    with pytest.raises(InputError, match="'nuclei', 'membranes', 'both'"):
        make_phantom("cells", (8, 8, 8))


# ----------------------------------------------------------------------------- acquisition


def test_blur_preserves_mass_and_centre():
    v = np.zeros((41, 41, 41), np.float32)
    v[20, 20, 20] = 1
    psf = gaussian_psf(2, 4)
    b = blur(v, psf)
    assert b.dtype == np.float32 and b.shape == v.shape and b.min() >= 0
    assert b.sum() == pytest.approx(1, abs=1e-4)
    np.testing.assert_allclose(b[20 - 16 : 21 + 16, 20 - 8 : 21 + 8, 20 - 8 : 21 + 8], psf, atol=1e-6)


@pytest.mark.parametrize(
    "psf", [np.ones((4, 3, 3)) / 36, np.ones((3, 3, 3)), np.ones((3, 3)) / 9, -gaussian_psf(1, 1)]
)
def test_blur_bad_psf(psf):
    with pytest.raises(InputError):
        blur(np.zeros((8, 8, 8)), psf)


@pytest.mark.parametrize("z, s", [(32, 4), (30, 4), (17, 8), (9, 1)])
def test_acquisition_shape_and_dtype(z, s):
    gt = np.zeros((z, 24, 24), np.float32)
    gt[z // 2, 12, 12] = 1
    a = simulate_acquisition(gt, gaussian_psf(1, 2), s, seed=0)
    assert a.shape == (math.ceil(z / s), 24, 24) and a.dtype == np.uint16


def test_acquisition_noiseless_equals_subsampled_blur():
    gt, _ = nuclei_phantom((40, 64, 64), seed=0)
    psf = gaussian_psf(2, 8)
    a = simulate_acquisition(gt, psf, 4, photons=1e10, read_noise=0, offset=0, seed=0, dtype=np.float64)
    b = blur(gt, psf)
    expected = b[0::4] * (1e10 / b.max())
    assert a.shape == expected.shape == (10, 64, 64)
    bright = expected > 1e8
    np.testing.assert_allclose(a[bright], expected[bright], rtol=1e-3)
    np.testing.assert_allclose(a, expected, atol=1e-3 * 1e10)
    # plane k is isotropic plane 4k: planes 4k + 2 differ well beyond that tolerance
    assert np.abs(a - b[2::4] * (1e10 / b.max())).max() > 1e-2 * 1e10


def test_acquisition_noise_is_poisson_plus_read_noise():
    # two flat regions at 1/4 and full brightness, measured away from all edges
    gt = np.zeros((48, 64, 128), np.float32)
    gt[:, :, :64] = 0.25
    gt[:, :, 64:] = 1.0
    photons, read_noise, offset = 1000.0, 3.0, 100.0
    a = simulate_acquisition(gt, gaussian_psf(1, 1), 2, photons=photons, read_noise=read_noise, offset=offset, seed=0)
    a = a.astype(np.float64)
    low, high = a[3:-3, 6:-6, 6:58], a[3:-3, 6:-6, 70:-6]
    for region, level in [(low, 0.25), (high, 1.0)]:
        assert region.mean() == pytest.approx(offset + photons * level, rel=0.01)
        # Poisson variance = mean signal; read noise and rounding add on top
        assert region.var() == pytest.approx(photons * level + read_noise**2 + 1 / 12, rel=0.05)
    assert high.var() / low.var() == pytest.approx((1000 + 9) / (250 + 9), rel=0.08)


def test_acquisition_offset_in_background_and_determinism():
    gt = np.zeros((16, 48, 48), np.float32)
    gt[8, 24, 24] = 1
    a = simulate_acquisition(gt, gaussian_psf(1, 2), 2, photons=500, read_noise=2, offset=100, seed=7)
    background = a[:, :10, :10].astype(np.float64)
    assert background.mean() == pytest.approx(100, abs=0.5) and 1.5 < background.std() < 2.5
    assert a.max() >= 400  # the bright spot
    assert np.array_equal(a, simulate_acquisition(gt, gaussian_psf(1, 2), 2, photons=500, offset=100, seed=7))
    assert not np.array_equal(a, simulate_acquisition(gt, gaussian_psf(1, 2), 2, photons=500, offset=100, seed=8))
    # counts above the dtype's range are clipped, not wrapped
    sat = simulate_acquisition(gt, gaussian_psf(1, 2), 2, photons=1e6, seed=0)
    assert sat.max() == np.iinfo(np.uint16).max and sat.min() > 50
    # empty ground truth: offset and read noise only
    empty = simulate_acquisition(np.zeros((8, 16, 16)), gaussian_psf(1, 1), 2, read_noise=0, offset=10, seed=0)
    assert np.all(empty == 10)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(subsample=0), "subsample"),
        (dict(subsample=0.5), "subsample"),
        (dict(subsample=True), "subsample"),
        (dict(gt=np.zeros((8, 8))), "3D"),
        (dict(gt=-np.ones((8, 8, 8))), "non-negative"),
        (dict(photons=0), "photons"),
        (dict(photons=-5), "photons"),
        (dict(read_noise=-1), "read_noise"),
        (dict(offset=float("nan")), "offset"),
        (dict(dtype=np.bool_), "dtype"),
        (dict(psf=np.ones((2, 2, 2)) / 8), "odd"),
    ],
)
def test_acquisition_bad_arguments(kw, match):
    args = dict(gt=np.zeros((8, 8, 8)), psf=gaussian_psf(1, 1), subsample=2) | kw
    with pytest.raises(InputError, match=match) as err:
        simulate_acquisition(**args)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------- dataset


def test_make_dataset():
    psf, psf_iso = gaussian_psf(2, 8), gaussian_psf(2, 2)
    ds = make_dataset("both", (40, 64, 64), psf, psf_iso, 4, seed=1, cell_size=16)
    assert isinstance(ds, SyntheticDataset)
    assert ds.kind == "both" and ds.subsample == 4
    assert ds.gt.shape == ds.iso_gt.shape == ds.labels.shape == (40, 64, 64)
    assert ds.acquired.shape == (10, 64, 64) and ds.acquired.dtype == np.uint16
    np.testing.assert_array_equal(ds.iso_gt, blur(ds.gt, psf_iso))
    again = make_dataset("both", (40, 64, 64), psf, psf_iso, 4, seed=1, cell_size=16)
    assert np.array_equal(ds.acquired, again.acquired) and np.array_equal(ds.gt, again.gt)
    m = make_dataset("membranes", (24, 32, 32), psf, psf_iso, 3, seed=0, photons=200, offset=0, cell_size=8)
    assert m.labels is None and m.acquired.shape == (8, 32, 32)
    with pytest.raises(InputError, match="psf_iso"):
        make_dataset("nuclei", (16, 16, 16), psf, np.ones((3, 3, 3)), 4)
