import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from isonet.degrade import upsample_axis
from isonet.psf import gaussian_psf
from isonet.quality import (
    FWHM_PER_SIGMA,
    CubicUpsampledView,
    axial_forward_kernel,
    fit_gaussian_blur,
    fit_relative_blur,
    lateral_kernel,
    reacquisition_scores,
    resolution_per_axis,
)
from isonet.synthetic import blur, make_phantom


@pytest.fixture(scope="module")
def phantom():
    image, _ = make_phantom("nuclei", (96, 96, 96), seed=3, n_nuclei=40, radius=(6.0, 10.0))
    return image


def _camera(volume, rng, photons=200.0):
    scaled = np.clip(volume, 0, None) * (photons / volume.max())
    return (rng.poisson(scaled) + 100.0 + rng.normal(0, 2.0, volume.shape)).astype(np.float32)


@pytest.mark.parametrize("sigma", [(3.0, 1.5, 1.5), (2.0, 2.0, 2.0), (5.0, 2.5, 2.5)])
def test_resolution_follows_a_known_gaussian_blur(phantom, sigma):
    rng = np.random.default_rng(0)
    noisy = _camera(ndimage.gaussian_filter(phantom, sigma), rng)
    est = resolution_per_axis(noisy, (0.3, 0.1, 0.1), block=64, n_blocks=24)
    truth = {a: FWHM_PER_SIGMA * s * v for a, s, v in zip("zyx", sigma, (0.3, 0.1, 0.1))}
    for axis in "zyx":
        assert est["fwhm_um"][axis] == pytest.approx(truth[axis], rel=0.2), (axis, est["fwhm_um"], truth)
    assert est["isotropy_ratio"] == pytest.approx(sigma[1] * 0.1 / (sigma[0] * 0.3), rel=0.2)


def test_resolution_of_an_upsampled_acquisition_sees_the_axial_blur(phantom):
    rng = np.random.default_rng(1)
    acquired = _camera(ndimage.gaussian_filter(phantom, (4.0, 1.5, 1.5))[::3], rng)
    est = resolution_per_axis(CubicUpsampledView(acquired, 3), (1.0, 1.0, 1.0), upsampled_factor=3, block=96)
    assert est["fwhm_um"]["z"] == pytest.approx(FWHM_PER_SIGMA * 4.0, rel=0.2)
    assert est["fwhm_um"]["x"] == pytest.approx(FWHM_PER_SIGMA * 1.5, rel=0.2)
    assert est["isotropy_ratio"] < 0.5


def test_resolution_of_a_strong_axial_blur_is_measured_against_the_lateral_axes(phantom):
    # signal survives along z only below the nuclei's inverse size, where the specimen's spectrum is not f^-4
    rng = np.random.default_rng(2)
    acquired = _camera(ndimage.gaussian_filter(phantom, (8.0, 2.0, 2.0))[::4], rng)
    est = resolution_per_axis(CubicUpsampledView(acquired, 4), (1.0, 1.0, 1.0), upsampled_factor=4, block=96)
    assert est["sigma_voxels"]["z"] == pytest.approx(8.0, rel=0.15)


def test_relative_blur_cancels_a_specimen_spectrum_that_the_absolute_fit_misreads():
    f = np.fft.rfftfreq(128)
    specimen = 1.0 / (0.04**2 + f**2) ** 2  # flattens below f = 0.04, like objects 12 voxels across
    z = specimen * np.exp(-4 * np.pi**2 * 8.0**2 * f**2) + 1e-3
    x = specimen * np.exp(-4 * np.pi**2 * 2.0**2 * f**2) + 1e-3
    absolute = fit_gaussian_blur(f, z, 1e-3)
    assert absolute["sigma_voxels"] < 7.3  # the f^-4 model reads the flat low band as less blur
    extra = fit_relative_blur(f, z, 1e-3, f, x, 1e-3, absolute["band"])
    assert np.sqrt(2.0**2 + extra) == pytest.approx(8.0, rel=0.01)


def test_resolution_reads_only_the_sampled_blocks():
    class Counting:
        shape, ndim, read = (400, 400, 400), 3, 0

        def __getitem__(self, key):
            block = np.random.default_rng(0).random(tuple(s.stop - s.start for s in key)).astype(np.float32)
            Counting.read += block.size
            return block

    resolution_per_axis(Counting(), (1, 1, 1), block=32, n_blocks=4)
    assert Counting.read == 4 * 32**3


def test_cubic_upsampled_view_matches_whole_upsampling():
    acquired = np.random.default_rng(2).random((9, 12, 10)).astype(np.float32)
    whole = upsample_axis(acquired, 4, axis=0)
    view = CubicUpsampledView(acquired, 4)
    assert view.shape == whole.shape
    np.testing.assert_allclose(view[5:23, 2:9, 1:10], whole[5:23, 2:9, 1:10], atol=1e-6)
    np.testing.assert_allclose(view[30:], whole[30:], atol=1e-6)


def test_axial_forward_kernel_of_a_gaussian_is_the_split_gaussian():
    k = axial_forward_kernel(gaussian_psf(1.5, 4.0))
    z = np.arange(len(k)) - len(k) // 2
    assert k.sum() == pytest.approx(1.0)
    assert np.sqrt(np.sum(k * z**2)) == pytest.approx(np.sqrt(4.0**2 - 1.5**2), rel=0.05)


def test_reacquisition_scores_a_faithful_restoration_above_an_inventive_one(phantom):
    psf = gaussian_psf(1.5, 4.0)
    factor = 3
    rng = np.random.default_rng(4)
    acquired = _camera(blur(phantom, psf)[::factor], rng, photons=2000)
    truth = blur(phantom, gaussian_psf(1.5, 1.5))[: (acquired.shape[0] - 1) * factor + 1]
    kernel = axial_forward_kernel(psf)
    good = reacquisition_scores(truth, acquired, kernel, factor, planes_per_slab=5)
    invented = truth.copy()
    invented[44:52, 30:60, 30:60] += 0.8  # a bright slab no acquired plane saw
    bad = reacquisition_scores(invented, acquired, kernel, factor, planes_per_slab=5)
    assert good["correlation"] > 0.98 and len(good["per_plane"]["psnr_db"]) == good["planes"]
    assert good["planes"] + good["planes_at_ends"] == acquired.shape[0] and good["per_plane"]["plane"][0] > 0
    assert good["psnr_db"] - bad["psnr_db"] > 3
    assert set(bad["worst_planes"][:2]) <= {14, 15, 16, 17}  # planes 15-16 sit on isotropic 45 and 48


@pytest.fixture(scope="module")
def acquisition(phantom):
    """A noisy acquisition (sigma_xy 1.5, sigma_z 4, factor 3), its camera, and the truth on the isotropic grid."""
    from isonet.camera import Camera

    psf, factor = gaussian_psf(1.5, 4.0), 3
    acquired = _camera(blur(phantom, psf)[::factor], np.random.default_rng(5), photons=200)
    truth = blur(phantom, gaussian_psf(1.5, 1.5))[: (acquired.shape[0] - 1) * factor + 1]
    return acquired, truth, psf, factor, Camera(1.0, 100.0, 2.0)


def _scores(volume, acquisition, **kw):
    acquired, _, psf, factor, camera = acquisition
    return reacquisition_scores(volume, acquired, axial_forward_kernel(psf), factor, camera=camera,
                                lateral=lateral_kernel(psf), **kw)


def test_reacquisition_of_the_truth_is_consistent_with_the_camera_noise(acquisition):
    truth = acquisition[1]
    s = _scores(truth, acquisition)
    assert s["chi_square"] == pytest.approx(1.0, abs=0.05)
    assert s["structural_mse"] < 0.02 * s["noise_variance"]
    assert s["fresh_psnr_db"] == pytest.approx(s["psnr_db"], abs=0.15)


def test_copying_the_acquired_noise_does_not_beat_the_truth(acquisition):
    acquired, truth, _, factor, _ = acquisition
    good = _scores(truth, acquisition)
    a, b = good["affine"]["scale"], good["affine"]["offset"]
    copied = truth.copy()
    copied[::factor] = (acquired - b) / a  # the noisy acquired planes, in the truth's units
    cheat = _scores(copied, acquisition)
    assert cheat["psnr_db"] > good["psnr_db"] + 0.3  # against the measured planes copying pays ...
    assert cheat["chi_square"] < 0.95
    assert cheat["fresh_psnr_db"] < good["fresh_psnr_db"]  # ... against a fresh acquisition it does not


def test_a_misplaced_or_blurred_restoration_scores_clearly_worse(acquisition):
    truth = acquisition[1]
    good = _scores(truth, acquisition)
    shifted = _scores(np.roll(truth, 2, axis=0), acquisition)
    blurred = _scores(ndimage.gaussian_filter1d(truth, 3.0, axis=0), acquisition)
    assert good["fresh_psnr_db"] - shifted["fresh_psnr_db"] > 1.0
    assert good["fresh_psnr_db"] - blurred["fresh_psnr_db"] > 1.0
    assert shifted["chi_square"] > 1.3 and blurred["chi_square"] > 1.3


def test_lateral_kernel_passes_the_white_noise_share_of_a_gaussian():
    k = lateral_kernel(gaussian_psf(2.0, 6.0))
    assert k.sum() == pytest.approx(1.0)
    assert (k**2).sum() == pytest.approx(1 / (4 * np.pi * 2.0**2), rel=0.02)


def test_reacquisition_is_independent_of_the_slab_size(phantom):
    acquired = phantom[::4] * 3 + 1
    kernel = axial_forward_kernel(gaussian_psf(1.0, 3.0))
    a = reacquisition_scores(phantom, acquired, kernel, 4, planes_per_slab=1)
    b = reacquisition_scores(phantom, acquired, kernel, 4, planes_per_slab=64)
    assert a["psnr_db"] == pytest.approx(b["psnr_db"], abs=1e-6)
    np.testing.assert_allclose(a["per_plane"]["correlation"], b["per_plane"]["correlation"], atol=1e-9)


def test_restore_block_disagreement_is_blockwise_exact_and_in_intensity_units():
    from isonet.nets import build_network, halo_for
    from isonet.patches import Normalization
    from isonet.predict import block_ranges, prepare_model, restore_block, restore_volume

    net = prepare_model(build_network("isonet1", seed=0, zero_init=False), torch.device("cpu"))
    volume = (np.random.default_rng(0).random((5, 16, 12)) * 1000 + 100).astype(np.float32)
    norm = Normalization(100.0, 1100.0)
    halo = halo_for(net) + 4
    full = restore_volume(net, volume, 4, norm, halo)
    whole = ((0, 17), (0, 16), (0, 12))
    restored, spread = restore_block(net, volume, 4, whole, norm, halo, disagreement=True)
    np.testing.assert_array_equal(restored, full)
    assert spread.min() >= 0 and spread.max() > 0
    # mean of the two passes: each lies spread/2 from it, so both are restored -/+ spread/2
    blocks = np.zeros_like(spread)
    for r in block_ranges(spread.shape, (8, 16, 12)):
        blocks[tuple(slice(a, b) for a, b in r)] = restore_block(net, volume, 4, r, norm, halo, disagreement=True)[1]
    np.testing.assert_allclose(blocks, spread, rtol=1e-5, atol=1e-3)
    scaled = restore_block(net, volume, 4, whole, Normalization(100.0, 2100.0), halo, disagreement=True)[1]
    assert scaled.mean() != pytest.approx(spread.mean())  # follows the intensity scale, not normalised units


def test_predict_uncertainty_store_and_assess_stage(tmp_path):
    from isonet.cli import main
    from isonet.modelfile import save_model
    from isonet.nets import build_network
    from isonet.patches import Normalization
    from isonet.stages.predict import predict_stage
    from isonet.storage import create_ome_zarr, read_ome_zarr

    image = tmp_path / "in.ome.zarr"
    phantom, _ = make_phantom("nuclei", (33, 24, 24), seed=1, n_nuclei=3, radius=(4.0, 6.0))
    psf = gaussian_psf(1.0, 3.0)
    acquired = _camera(blur(phantom, psf)[::4], np.random.default_rng(0))
    _, level0 = create_ome_zarr(image, acquired.shape, np.float32, (4, 24, 24), (0.8, 0.2, 0.2))
    level0[:] = acquired
    model = tmp_path / "model.safetensors"
    save_model(model, build_network("isonet1", seed=0, zero_init=False), "isonet1", 4,
               Normalization(100.0, 300.0), dropout=0.2)
    predict_stage(image, model, tmp_path / "pred.ome.zarr", chunks=(16, 24, 24), block=(16, 24, 24),
                  uncertainty_zarr=tmp_path / "unc.ome.zarr")
    spread, vs = read_ome_zarr(tmp_path / "unc.ome.zarr")
    restored, _ = read_ome_zarr(tmp_path / "pred.ome.zarr")
    assert spread.shape == restored.shape == (33, 24, 24) and vs == pytest.approx((0.2, 0.2, 0.2))
    assert float(np.asarray(spread[:]).max()) > 0
    assert not list(tmp_path.glob("*.partial"))
    np.savez(tmp_path / "psf.npz", psf=psf)

    out = tmp_path / "quality.json"
    rc = main(["assess", str(image), str(tmp_path / "pred.ome.zarr"), str(tmp_path / "psf.npz"), str(out),
               "--html", str(tmp_path / "quality.html"), "--uncertainty", str(tmp_path / "unc.ome.zarr"),
               "--uncertainty-png", str(tmp_path / "unc.png"), "--block", "24", "--blocks", "2"])
    assert rc == 0
    quality = json.loads(out.read_text())
    assert quality["factor"] == 4
    assert set(quality["resolution"]) == {"input", "restored"}
    assert set(quality["reacquisition"]) == {"restored", "cubic"}
    restored_check = quality["reacquisition"]["restored"]
    assert restored_check["planes"] + restored_check["planes_at_ends"] == 9
    assert len(restored_check["per_plane"]["psnr_db"]) == restored_check["planes"] == 3  # 3 planes clear the ends
    assert quality["camera"]["source"] == "estimated" and restored_check["chi_square"] > 0
    assert quality["uncertainty"]["p99"] >= quality["uncertainty"]["p50"] >= 0
    assert set(quality["how_to_read"]) == {"resolution", "isotropy_ratio", "reacquisition", "uncertainty"}
    page = (tmp_path / "quality.html").read_text()
    assert "Re-acquisition check" in page and "isotropy ratio" in page
    assert (tmp_path / "unc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_assess_refuses_a_restoration_of_another_input(tmp_path, capsys):
    from isonet.cli import main
    from isonet.storage import create_ome_zarr

    _, a = create_ome_zarr(tmp_path / "in.ome.zarr", (5, 16, 16), np.float32, (5, 16, 16), (0.8, 0.2, 0.2))
    a[:] = 1
    _, b = create_ome_zarr(tmp_path / "r.ome.zarr", (9, 16, 16), np.float32, (9, 16, 16), (0.2, 0.2, 0.2))
    b[:] = 1
    np.savez(tmp_path / "psf.npz", psf=gaussian_psf(1.0, 3.0))
    rc = main(["assess", str(tmp_path / "in.ome.zarr"), str(tmp_path / "r.ome.zarr"), str(tmp_path / "psf.npz"),
               str(tmp_path / "q.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "is not the input's isotropic grid (17, 16, 16)" in err
    assert not (tmp_path / "q.json").exists()
