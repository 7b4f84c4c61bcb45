import numpy as np
import pytest
from scipy import ndimage

from isonet.camera import Camera, add_camera_noise, estimate_camera, robust_variance


def _poisson_gaussian(gain, offset, read, seed, shape=(6, 192, 192), peak=400.0):
    """Blurred blobs on a dark background, imaged by a Poisson-Gaussian camera (counts)."""
    rng = np.random.default_rng(seed)
    photons = np.zeros(shape)
    idx = tuple(rng.integers(0, s, 120) for s in shape)
    photons[idx] = 1.0
    photons = ndimage.gaussian_filter(ndimage.grey_dilation(photons, size=(1, 15, 15)), (0, 4, 4))
    photons *= peak / photons.max()
    counts = offset + gain * rng.poisson(photons) + rng.normal(0, read, shape)
    return np.rint(counts)  # integer readings, as a camera gives


@pytest.mark.parametrize("gain, offset, read", [(1.0, 100.0, 2.0), (2.5, 400.0, 6.0), (0.5, 1000.0, 1.5)])
def test_estimate_camera_recovers_known_parameters(gain, offset, read):
    cam = estimate_camera(list(_poisson_gaussian(gain, offset, read, seed=int(gain * 10))))
    assert cam.source == "estimated"
    assert cam.gain == pytest.approx(gain, rel=0.1)
    assert cam.offset == pytest.approx(offset, rel=0.1)
    assert cam.read_noise == pytest.approx(read, rel=0.15)


def test_camera_variance_and_noise_in_normalised_units():
    cam = Camera(2.0, 100.0, 3.0)
    np.testing.assert_allclose(cam.variance(np.array([50.0, 100.0, 150.0])), [9.0, 9.0, 109.0])
    x = np.full(200_000, 0.25, np.float32)  # 150 counts in [100, 300]
    noisy = add_camera_noise(x, cam, 100.0, 300.0, np.random.default_rng(0))
    assert noisy.mean() == pytest.approx(0.25, abs=1e-3)
    assert (noisy.std() * 200) ** 2 == pytest.approx(109.0, rel=0.02)
    assert Camera.from_dict(cam.to_dict()) == cam


def test_robust_variance_ignores_outliers_and_rounding():
    r = np.random.default_rng(0).normal(0, 1.0, 100_000)
    r[:500] = 50.0
    assert robust_variance(np.rint(r * 2)) / 4 == pytest.approx(1.0 + 1 / 48, rel=0.03)


def test_camera_setting_of_the_patches_stage():
    from isonet.errors import InputError
    from isonet.stages.patches import resolve_camera

    planes = list(_poisson_gaussian(1.0, 100.0, 2.0, seed=1, shape=(2, 128, 128)))
    assert resolve_camera("none", planes, "x.zarr") is None
    assert resolve_camera("auto", planes, "x.zarr").source == "estimated"
    given = resolve_camera({"offset": 90, "read_noise": 1.5}, planes, "x.zarr")
    assert given == Camera(1.0, 90.0, 1.5, "config")
    with pytest.raises(InputError, match="x.zarr: patches.camera"):
        resolve_camera({"gain": 2}, planes, "x.zarr")
