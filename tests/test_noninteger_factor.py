"""A non-integer axial factor σ end to end: synthetic acquisition, block-wise restoration, the stages.

z 0.9 µm over xy 0.2 µm is σ = 4.5: acquired plane k at z = 4.5 k pixels, the restored volume on
the lateral grid with voxel size 0.2 µm in z, written as such.
"""

import json

import numpy as np
import pytest
import tifffile
import torch

from isonet.baselines import cubic_upsample
from isonet.cli import main
from isonet.degrade import upsampled_length
from isonet.metrics import psnr
from isonet.nets import build_network, halo_for
from isonet.patches import Normalization
from isonet.predict import block_ranges, iso_shape, prepare_model, restore_block, restore_volume
from isonet.psf import gaussian_psf
from isonet.synthetic import blur, nuclei_phantom, simulate_acquisition


def test_blockwise_equals_whole_volume_at_sigma_4_5():
    # IsoNet-1's small receptive field keeps this quick; the z interpolation is the part under test
    net = prepare_model(build_network("isonet1", seed=0, zero_init=False), torch.device("cpu"))
    volume = (np.random.default_rng(0).random((5, 20, 18)) * 1000 + 100).astype(np.float32)
    norm, halo = Normalization(100.0, 1100.0), halo_for(net) + 4
    full = restore_volume(net, volume, 4.5, norm, halo)
    assert full.shape == iso_shape(volume.shape, 4.5) == (19, 20, 18)  # floor(4 · 4.5) + 1
    out = np.full_like(full, np.nan)
    for r in block_ranges(full.shape, (5, 12, 12)):  # none divides the volume; z blocks start between planes
        out[tuple(slice(a, b) for a, b in r)] = restore_block(net, volume, 4.5, r, norm, halo)
    assert not np.isnan(out).any()
    assert np.abs(out - full).max() <= 1e-4 * (volume.max() - volume.min())


def test_synthetic_acquisition_at_sigma_4_5_is_aligned_with_the_ground_truth():
    gt, _ = nuclei_phantom((64, 40, 40), seed=1)
    psf = gaussian_psf(1.0, 3.0)
    acquired = simulate_acquisition(gt, psf, 4.5, photons=1e9, read_noise=0, offset=0, seed=0, dtype=np.float32)
    blurred = blur(gt, psf)
    assert acquired.shape == (15, 40, 40)  # planes at z = 0, 4.5, ..., 63
    scale = 1e9 / float(blurred.max())  # counts per unit of the blurred phantom
    # planes at whole z are the blurred planes (up to shot noise at 1e9 photons)
    np.testing.assert_allclose(acquired[::2] / scale, blurred[::9], atol=3e-4 * blurred.max())
    # the cubic baseline lands on the ground truth's grid: better than the same shifted by one plane
    cubic = cubic_upsample(acquired, 4.5) / scale
    n = upsampled_length(15, 4.5)
    assert cubic.shape == (n, 40, 40) == (64, 40, 40)
    rng = float(blurred.max())
    aligned = psnr(cubic[1:-1], blurred[1 : n - 1], data_range=rng)
    shifted = [psnr(cubic[1:-1], blurred[1 + d : n - 1 + d], data_range=rng) for d in (-1, 1)]
    assert aligned > 40 and aligned > max(shifted) + 6, (aligned, shifted)
    # a factor rounded to 4 or 5 misplaces planes, worse the farther from z = 0
    for wrong in (4, 5):
        up = cubic_upsample(acquired, wrong) / scale
        k = min(len(up), n) - 1
        assert psnr(up[1:k], blurred[1:k], data_range=rng) < aligned - 10


def _cli(argv):
    rc = main(["--log-level", "ERROR", *argv])
    assert rc in (0, None), argv


def test_stages_end_to_end_at_sigma_4_5(tmp_path, capsys):
    """synthetic (σ 4.5) → convert → psf → patches → a few training steps → predict: shape and voxel size exact."""
    import zarr

    from isonet.modelfile import load_model
    from isonet.storage import read_ome_zarr

    psf = json.dumps({"sigma_xy": 1.0, "sigma_z": 3.0})
    _cli(["synthetic", "--out-dir", str(tmp_path / "syn"), "--shape", "48", "40", "40", "--subsample", "4.5",
          "--pixel-size", "0.2", "--psf-params", psf, "--photons", "500"])
    summary = json.loads((tmp_path / "syn" / "synthetic.json").read_text())
    assert summary["subsample"] == 4.5 and summary["acquired_shape"] == [11, 40, 40]  # z = 0, 4.5, ..., 45
    with tifffile.TiffFile(tmp_path / "syn" / "acquired.tif") as tif:
        assert tif.imagej_metadata["spacing"] == pytest.approx(0.9, rel=1e-9)
    _cli(["convert", str(tmp_path / "syn" / "acquired.tif"), str(tmp_path / "a.zarr"), "--chunks", "4", "40", "40"])
    _cli(["psf", "--out-npz", str(tmp_path / "psf.npz"), "--out-json", str(tmp_path / "psf.json"), "--params", psf])
    _cli(["patches", str(tmp_path / "a.zarr"), str(tmp_path / "psf.npz"), str(tmp_path / "p.npz"),
          "--n-patches", "24", "--patch-size", "16", "--camera", "none"])
    with np.load(tmp_path / "p.npz") as f:
        assert json.loads(str(f["meta"]))["factor"] == 4.5
        assert f["Y"].shape == (24, 16, 16) and f["offsets"].max() < 9  # 4.5 = 9/2: offsets modulo 9
    _cli(["train", str(tmp_path / "p.npz"), str(tmp_path / "psf.json"), str(tmp_path / "m.safetensors"),
          str(tmp_path / "curve.tsv"), "--steps", "2", "--batch-size", "8", "--precision", "fp32", "--threads", "2",
          "--model", "isonet1"])  # the small network keeps the test quick
    assert load_model(tmp_path / "m.safetensors")[1]["factor"] == 4.5
    _cli(["predict", str(tmp_path / "a.zarr"), str(tmp_path / "m.safetensors"), str(tmp_path / "out.zarr"),
          "--chunks", "16", "40", "40", "--precision", "fp32", "--threads", "2"])
    out, voxel_size = read_ome_zarr(tmp_path / "out.zarr")
    assert out.shape == (46, 40, 40)  # floor(10 · 4.5) + 1
    assert voxel_size == (0.2, 0.2, 0.2)  # the lateral size itself, not 0.9 / 4.5 rounded
    scale = zarr.open_group(tmp_path / "out.zarr", mode="r").attrs["ome"]["multiscales"][0]["datasets"][0]
    assert scale["coordinateTransformations"][0]["scale"] == [0.2, 0.2, 0.2]
    assert np.isfinite(np.asarray(out[:])).all()
    # a model for another factor is refused, naming both
    capsys.readouterr()
    rc = main(["--log-level", "ERROR", "predict", str(tmp_path / "a.zarr"), str(tmp_path / "m.safetensors"),
               str(tmp_path / "out4.zarr"), "--subsample", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and "axial factor 4 differs from the model's (4.5" in err and not (tmp_path / "out4.zarr").exists()
