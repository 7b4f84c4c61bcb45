import numpy as np
import pytest
import torch

from isonet.nets import IsoNet1, IsoNet2, build_network, halo_for
from isonet.patches import Normalization
from isonet.predict import (
    block_ranges,
    iso_shape,
    predict_slices,
    prepare_model,
    restore_block,
    restore_volume,
    tta_flips,
)


@pytest.fixture(scope="module")
def net():
    # random output layer: a zero-initialised one makes the untrained network the identity
    return prepare_model(build_network("isonet2", seed=0, zero_init=False), torch.device("cpu"))


@pytest.fixture(scope="module")
def small_net():
    # the tiling logic does not depend on the network: the 'tiny' IsoNet-2 (3×3, 4 features, receptive
    # radius 16 instead of 36) keeps the block-wise tests that need many restorations quick; the default
    # network's own block-wise equality is test_blockwise_equals_whole_volume
    return prepare_model(build_network("tiny", seed=0, zero_init=False), torch.device("cpu"))


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(0)
    return (rng.random((13, 45, 50)) * 1000 + 100).astype(np.float32)


def test_isonet2_architecture():
    net = IsoNet2()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 16, (7, 7)), (16, 32, (7, 7)), (32, 64, (7, 7)), (96, 32, (7, 7)), (48, 16, (7, 7)), (16, 1, (1, 1)),
    ]
    drops = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(p == 0.2 for p in drops)
    # residual: with the last layer zeroed the network is the identity
    torch.nn.init.zeros_(net.out.weight); torch.nn.init.zeros_(net.out.bias)
    x = torch.rand(2, 1, 16, 24)
    assert torch.equal(net.eval()(x), x)


def test_isonet1_architecture():
    convs = [m for m in IsoNet1().modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(64, (9, 9)), (32, (5, 5)), (1, (5, 5)), (1, (1, 1))]


def test_tiny_architecture_is_a_small_isonet2():
    tiny = build_network("tiny")
    assert sum(p.numel() for p in tiny.parameters()) == 3681  # isonet2: 314561
    assert tiny.receptive_radius == 16 and build_network("isonet2").receptive_radius == 36


@pytest.mark.parametrize("name", ["isonet2", "isonet1", "tiny"])
def test_declared_receptive_radius_bounds_the_true_one(name):
    net = build_network(name, seed=1, zero_init=False).eval()
    x = torch.rand(1, 1, 160, 160)
    with torch.no_grad():
        for pos in (80, 81, 82, 83):
            x2 = x.clone()
            x2[0, 0, pos, pos] += 10
            d = (net(x2) - net(x)).abs()[0, 0]
            changed = torch.nonzero(d > 0)
            if len(changed):
                assert (changed - pos).abs().max() <= net.receptive_radius
    assert halo_for(net) % net.size_multiple == 0 and halo_for(net) >= net.receptive_radius


def test_blockwise_equals_whole_volume(net, volume):
    norm = Normalization(100.0, 1100.0)
    halo = halo_for(net) + 4
    full = restore_volume(net, volume, 4, norm, halo)
    assert full.shape == iso_shape(volume.shape, 4) == (49, 45, 50)
    out = np.full_like(full, np.nan)
    blocks = list(block_ranges(full.shape, (28, 24, 28)))  # none divides the volume
    assert len(blocks) == 2 * 2 * 2
    for r in blocks:
        out[tuple(slice(a, b) for a, b in r)] = restore_block(net, volume, 4, r, norm, halo)
    assert not np.isnan(out).any()
    assert np.abs(out - full).max() <= 1e-4 * (volume.max() - volume.min())


def test_tta_blockwise_equals_whole_volume(small_net, volume):
    volume = volume[:7, :30, :34]  # 4 flips each pass: a smaller volume and 8 uneven blocks keep it quick
    norm = Normalization(100.0, 1100.0)
    halo = halo_for(small_net) + 4
    flips = tta_flips((0, 1))
    full = restore_volume(small_net, volume, 4, norm, halo, tta=flips)
    plain = restore_volume(small_net, volume, 4, norm, halo)
    assert np.abs(full - plain).max() > 1e-3 * (volume.max() - volume.min())  # the flips do something
    out = np.full_like(full, np.nan)
    for r in block_ranges(full.shape, (16, 16, 20)):
        out[tuple(slice(a, b) for a, b in r)] = restore_block(small_net, volume, 4, r, norm, halo, tta=flips)
    assert np.abs(out - full).max() <= 1e-4 * (volume.max() - volume.min())


def test_clipped_edges_blockwise_equals_whole_volume(small_net, volume):
    volume = volume[:7, :30, :34]
    norm = Normalization(100.0, 1100.0)
    halo = halo_for(small_net)
    full = restore_volume(small_net, volume, 4, norm, halo, edges="clip")
    mirrored = restore_volume(small_net, volume, 4, norm, halo)
    assert np.abs(full - mirrored).max() > 1e-3 * (volume.max() - volume.min())  # the edges differ
    out = np.full_like(full, np.nan)
    for r in block_ranges(full.shape, (8, 12, 20)):  # blocks smaller than the halo, ends of odd size
        out[tuple(slice(a, b) for a, b in r)] = restore_block(small_net, volume, 4, r, norm, halo, edges="clip")
    assert np.abs(out - full).max() <= 1e-4 * (volume.max() - volume.min())


def test_tta_of_a_flip_symmetric_network_changes_nothing():
    net = prepare_model(build_network("isonet2"), torch.device("cpu"))  # zero-initialised: the identity
    s = np.random.default_rng(5).random((2, 24, 28)).astype(np.float32)
    np.testing.assert_allclose(predict_slices(net, s, tta=tta_flips((0, 1))), s, atol=1e-6)


def test_too_small_halo_shows_seams(small_net, volume):
    # guards the test above against passing trivially
    norm = Normalization(100.0, 1100.0)
    full = restore_volume(small_net, volume, 4, norm, halo_for(small_net))
    out = np.zeros_like(full)
    for r in block_ranges(full.shape, (20, 16, 24)):
        out[tuple(slice(a, b) for a, b in r)] = restore_block(small_net, volume, 4, r, norm, 4)
    assert np.abs(out - full).max() > 1e-3 * (volume.max() - volume.min())


def test_block_start_must_be_on_pooling_grid(net, volume):
    with pytest.raises(ValueError, match="multiples of 4"):
        restore_block(net, volume, 4, ((2, 10), (0, 16), (0, 16)), Normalization(0, 1), 40)


def test_predict_slices_pads_odd_sizes(net):
    s = np.random.default_rng(3).random((3, 23, 30)).astype(np.float32)
    out = predict_slices(net, s)
    assert out.shape == s.shape and out.dtype == np.float32


def test_bf16_close_to_fp32(net, volume):
    # the default network on normalised axial slices of the upsampled volume (bf16 on a CPU is emulated
    # and slow; restore_volume only passes the precision down to predict_slices)
    norm = Normalization(100.0, 1100.0)
    slices = norm.apply(np.repeat(volume[:, :8, :48], 4, axis=0)).transpose(1, 0, 2)  # 8 xz slices of 52 x 48
    a = predict_slices(net, slices, precision="fp32")
    b = predict_slices(net, slices, precision="bf16")
    assert np.abs(a - slices).max() > 0.05  # the network changes its input
    assert np.abs(a - b).max() <= 0.02


def test_geometric_combine_is_bounded_by_mean(small_net, volume):
    norm = Normalization(100.0, 1100.0)
    m = restore_volume(small_net, volume, 4, norm, halo_for(small_net), combine="mean")
    g = restore_volume(small_net, volume, 4, norm, halo_for(small_net), combine="geometric")
    # AM-GM in normalised units (both passes clipped at 0 for the geometric mean)
    assert np.all(norm.apply(g) <= np.clip(norm.apply(m), 0, None) + 1e-4)


def test_predict_twice_is_byte_identical_and_outputs_record_provenance(tmp_path):
    import json

    import zarr

    from isonet.modelfile import save_model
    from isonet.provenance import array_sha256, file_sha256
    from isonet.stages.evaluate import evaluate_stage
    from isonet.stages.predict import predict_stage
    from isonet.stages.stitch import stitch_stage
    from isonet.storage import create_ome_zarr, read_ome_zarr

    image = tmp_path / "in.ome.zarr"
    _, level0 = create_ome_zarr(image, (5, 24, 20), np.float32, (4, 16, 16), (0.8, 0.2, 0.2))
    level0[:] = (np.random.default_rng(1).random((5, 24, 20)) * 1000 + 100).astype(np.float32)
    model = tmp_path / "model.safetensors"
    save_model(model, build_network("isonet2", seed=0), "isonet2", 4, Normalization(100.0, 1100.0), dropout=0.2,
               provenance={"stage": "train", "settings": {"seed": 0}})
    outputs = []
    for name in ("a", "b"):
        predict_stage(image, model, tmp_path / f"{name}.ome.zarr", chunks=(8, 24, 24), block=(16, 24, 24), workers=2)
        outputs.append(np.asarray(read_ome_zarr(tmp_path / f"{name}.ome.zarr")[0][:]))
    assert outputs[0].shape == (17, 24, 20)
    assert outputs[0].tobytes() == outputs[1].tobytes()

    record = dict(zarr.open_group(tmp_path / "a.ome.zarr", mode="r").attrs)["isonet"]
    assert record["stage"] == "predict"
    assert record["inputs"]["image"]["sha256"] == array_sha256(np.asarray(level0[:]))
    assert record["inputs"]["model"]["sha256"] == file_sha256(model)
    assert record["inputs"]["model"]["training"]["settings"] == {"seed": 0}
    assert record["settings"]["combine"] == "mean" and record["settings"]["chunks"] == [8, 24, 20]
    assert {"isonet", "torch", "numpy", "zarr"} <= set(record["versions"])

    stitch_stage(tmp_path / "a.ome.zarr", tmp_path / "restored.ome.zarr", pyramid_levels=2)
    attrs = dict(zarr.open_group(tmp_path / "restored.ome.zarr", mode="r").attrs)
    assert "ome" in attrs and "isonet" not in attrs["ome"]
    assert attrs["isonet"]["inputs"] == record["inputs"] and attrs["isonet"]["stitch"]["settings"]["pyramid_levels"] == 2
    assert "stitch" not in dict(zarr.open_group(tmp_path / "a.ome.zarr", mode="r").attrs)["isonet"]  # hard links kept apart

    evaluate_stage(image, tmp_path / "restored.ome.zarr", None, tmp_path / "metrics.json", tmp_path / "metrics.md")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    restored = metrics["provenance"]["inputs"]["restored"]
    assert restored["sha256"] == array_sha256(outputs[0])
    assert restored["provenance"]["inputs"]["model"]["sha256"] == file_sha256(model)


def test_array_sha256_ignores_storage_and_reads_in_bounded_blocks(tmp_path):
    import zarr

    from isonet.provenance import array_sha256

    data = np.random.default_rng(0).integers(0, 60000, (9, 13, 22)).astype(np.uint16)
    stored = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, dtype=data.dtype, chunks=(2, 5, 4))
    stored[:] = data

    class Recording:
        shape, dtype, chunks = data.shape, data.dtype, (2, 5, 4)
        largest = 0

        def __getitem__(self, key):
            block = stored[key]
            Recording.largest = max(Recording.largest, block.nbytes)
            return block

    reference = array_sha256(data)
    assert array_sha256(stored) == array_sha256(data.astype(">u2")) == reference
    assert array_sha256(Recording(), max_bytes=200) == reference
    assert Recording.largest <= 2 * 5 * 8 * 2  # two chunks along x: the budget rounded to whole chunks
    changed = data.copy()
    changed[8, 12, 21] += 1
    assert array_sha256(changed) != reference
    assert array_sha256(data.reshape(9, 22, 13)) != reference  # the shape is part of the content
