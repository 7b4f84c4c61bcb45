"""Block-wise segmentation and streamed thresholds equal their whole-volume forms."""

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from isonet.errors import InputError
from isonet.metrics import seg_score
from isonet.segment import (
    global_threshold,
    segment_nuclei,
    segmentation_summary,
    streamed_threshold,
    threshold_by_rule,
    threshold_intermodes,
)
from isonet.segment_blocks import block_slices, segment_nuclei_blocks
from isonet.stages.segment import segment_stage
from isonet.storage import create_ome_zarr, read_ome_zarr
from isonet.synthetic import nuclei_phantom


@pytest.fixture(scope="module")
def crowded():
    """Blurred, noisy nuclei dense enough that many touch and many cross the borders of 8 blocks."""
    vol, truth = nuclei_phantom((64, 96, 96), n_nuclei=60, radius=(4, 9), seed=1)
    vol = ndi.gaussian_filter(vol.astype(np.float32), 1.5)
    vol += np.random.default_rng(0).normal(0, 0.03, vol.shape).astype(np.float32)
    return vol, truth


def _blocks(vol, block):
    return lambda: (vol[s] for s in block_slices(vol.shape, block))


@pytest.mark.parametrize("block", [(64, 96, 96), (32, 48, 48), (7, 13, 50)])
def test_streamed_threshold_is_the_in_memory_one_bit_for_bit(crowded, block):
    vol = crowded[0]
    assert streamed_threshold(_blocks(vol, block)) == ("intermodes", threshold_intermodes(vol))[::-1]
    assert streamed_threshold(_blocks(vol, block), "otsu") == (threshold_by_rule(vol, "otsu"), "otsu")


def test_streamed_otsu_fallback_is_the_in_memory_one():
    # a unimodal histogram: Intermodes undefined, the Otsu fallback agrees too
    ramp = np.linspace(0, 1, 16 * 24 * 24, dtype=np.float32).reshape(16, 24, 24) ** 2
    assert streamed_threshold(_blocks(ramp, (5, 7, 24)), fallback="otsu") == global_threshold(ramp)
    assert global_threshold(ramp)[1] == "otsu"
    with pytest.raises(InputError, match="bimodal"):
        streamed_threshold(_blocks(ramp, (5, 7, 24)))


def test_streamed_threshold_bad_input():
    with pytest.raises(InputError, match="NaN or inf"):
        streamed_threshold(lambda: [np.ones(3), np.array([1.0, np.nan])])
    with pytest.raises(InputError, match="constant"):
        streamed_threshold(lambda: [np.ones(3), np.ones(2)])
    assert streamed_threshold(lambda: [np.ones(3)], fallback="otsu") == (1.0, "otsu")
    with pytest.raises(InputError, match="unknown"):
        streamed_threshold(lambda: [np.ones(3)], "triangle")


@pytest.mark.parametrize("block, halo", [((32, 48, 48), 24), ((16, 24, 24), 6)])
def test_blocks_equal_whole_volume_labels(crowded, block, halo):
    vol, truth = crowded
    whole = segment_nuclei(vol, min_size=20)
    n_blocks = len(list(block_slices(vol.shape, block)))
    assert n_blocks >= 8
    # objects cross block borders (and some blobs hold several touching nuclei)
    cut = [b for b in ndi.find_objects(whole) if any(s.start // k != (s.stop - 1) // k for s, k in zip(b, block))]
    assert len(cut) >= 20
    out, scratch = np.zeros(vol.shape, np.int32), np.zeros(vol.shape, np.int64)
    lines = []
    result = segment_nuclei_blocks(vol, out, scratch, block=block, halo=halo, min_size=20, log=lines.append)
    assert np.array_equal(out, whole)  # voxel for voxel, so SEG 1 both ways and the same count
    assert seg_score(whole, out) == seg_score(out, whole) == 1.0
    assert len(result["sizes"]) == int(whole.max()) == 60
    assert result["sizes"].tolist() == np.bincount(whole.ravel())[1:].tolist()
    assert (result["threshold"], result["threshold_method"]) == global_threshold(vol)
    # a halo below the objects' size grows windows, and says so; a large one never needs to
    assert (result["grown"] > 0) == (halo < 20) == bool(lines)
    assert seg_score(truth, out) > 0.8


def test_split_budget_bounds_the_kept_splits_and_not_the_labels(crowded):
    vol = crowded[0]
    runs = {}
    for budget in (1 << 30, 200_000, 0):
        out, scratch = np.zeros(vol.shape, np.int32), np.zeros(vol.shape, np.int64)
        result = segment_nuclei_blocks(vol, out, scratch, block=(16, 48, 48), halo=24, min_size=20,
                                       split_budget=budget)
        runs[budget] = out, result["split_bytes"]
    unbounded = runs[1 << 30][1]
    assert unbounded > 400_000  # the blobs cut by the z-borders of blocks, kept for the next layer
    assert 0 < runs[200_000][1] <= 200_000 and runs[0][1] == 0
    assert np.array_equal(runs[200_000][0], runs[1 << 30][0]) and np.array_equal(runs[0][0], runs[1 << 30][0])


def test_blocks_handle_enclosed_blobs_and_the_volume_corner():
    # a hollow shell (its cavity filled) holding a ball, and a blob at voxel (0, 0, 0)
    z, y, x = np.ogrid[:40, :40, :40]
    r = np.sqrt((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2)
    vol = ((r > 10) & (r < 14) | (r < 4)).astype(np.float32)
    vol[:3, :3, :3] = 1
    whole = segment_nuclei(vol, threshold=0.5, min_size=5)
    out, scratch = np.zeros(vol.shape, np.int32), np.zeros(vol.shape, np.int64)
    segment_nuclei_blocks(vol, out, scratch, threshold=0.5, block=(16, 16, 16), halo=4, min_size=5)
    assert np.array_equal(out, whole)
    assert out[0, 0, 0] == 1 and whole.max() >= 3


def test_blocks_bad_settings(crowded):
    vol = crowded[0][:8, :8, :8]
    out, scratch = np.zeros(vol.shape, np.int32), np.zeros(vol.shape, np.int64)
    with pytest.raises(InputError, match="block must be 3 positive"):
        segment_nuclei_blocks(vol, out, scratch, block=(0, 8, 8))
    with pytest.raises(InputError, match="halo must be >= 0"):
        segment_nuclei_blocks(vol, out, scratch, halo=-1)
    bad = vol.copy()
    bad[5, 5, 5] = np.inf
    with pytest.raises(InputError, match=r"NaN or infinite values in \[0:8, 0:8, 0:8\]"):
        segment_nuclei_blocks(bad, out, scratch, threshold=0.5)


def test_segment_stage_writes_block_wise_labels_equal_to_whole_volume(tmp_path, crowded):
    vol = crowded[0]
    _, level0 = create_ome_zarr(tmp_path / "img.ome.zarr", vol.shape, np.float32, (16, 32, 32), (1, 1, 1),
                                provenance={"stage": "stitch"})
    level0[:] = vol
    summary = segment_stage(tmp_path / "img.ome.zarr", tmp_path / "labels.ome.zarr", tmp_path / "labels.json",
                            min_size=20, block=(20, 40, 40), halo=24)
    labels, voxel_size = read_ome_zarr(tmp_path / "labels.ome.zarr")
    whole = segment_nuclei(vol, min_size=20)
    assert np.array_equal(labels[:], whole)
    assert labels.dtype == np.int32 and labels.chunks == (16, 32, 32) and voxel_size == (1, 1, 1)
    thr, method = global_threshold(vol)
    assert summary == {"threshold": thr, "threshold_method": method, **segmentation_summary(whole)}
    group = zarr.open_group(tmp_path / "labels.ome.zarr", mode="r")
    assert sorted(group.keys()) == ["0", "1", "2"]  # the scratch array is gone
    assert len([p for p in (tmp_path / "labels.ome.zarr" / "0").rglob("*") if p.is_file()]) == 1 + 4 * 3 * 3
    assert group.attrs["isonet"]["block"] == [32, 64, 64]  # rounded up to whole chunks
    assert np.array_equal(group["1"][:], whole[::2, ::2, ::2])


def test_otsu_is_scikit_images_on_float_data():
    from skimage.filters import threshold_otsu

    for seed in range(3):
        v = np.random.default_rng(seed).gamma(2, 1, (20, 30, 30)).astype(np.float32)
        assert threshold_by_rule(v, "otsu") == float(threshold_otsu(v))


class _Spy:
    """A volume that records the most voxels read at once."""

    def __init__(self, volume):
        self.volume, self.shape, self.dtype, self.most = volume, volume.shape, volume.dtype, 0

    def __getitem__(self, index):
        part = self.volume[index]
        self.most = max(self.most, part.size)
        return part


def _same_partition(a, b):
    """Every object of ``a`` is one object of ``b`` and back, on the same foreground."""
    fg = (a > 0) | (b > 0)
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    return bool(((a > 0) == (b > 0)).all()) and len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_max_window_bounds_reads_and_keeps_a_chain_of_nuclei_crossing_many_blocks():
    # touching balls merged into one blob that spans the volume (as nuclei merge in a blurred input)
    z, y, x = np.ogrid[:40, :120, :200]
    vol = np.zeros((40, 120, 200), np.float32)
    for cx in range(10, 190, 13):
        vol[(z - 20) ** 2 + (y - 30) ** 2 + (x - cx) ** 2 <= 49] = 1
    for cy in range(10, 110, 13):
        vol[(z - 20) ** 2 + (y - cy) ** 2 + (x - 150) ** 2 <= 49] = 1
    vol = ndi.gaussian_filter(vol, 1.0)
    assert ndi.label(vol > 0.5)[1] == 1
    whole = segment_nuclei(vol, threshold=0.5, min_size=20)
    assert whole.max() == 21
    runs = {}
    for cap in (None, 100_000):
        spy = _Spy(vol)
        out, scratch = np.zeros(vol.shape, np.int32), np.zeros(vol.shape, np.int64)
        lines = []
        result = segment_nuclei_blocks(spy, out, scratch, threshold=0.5, block=(16, 32, 32), halo=16, min_size=20,
                                       max_window=cap, log=lines.append)
        runs[cap] = out, result, spy.most, lines
    exact, result, most, _ = runs[None]
    assert np.array_equal(exact, whole) and result["grown"] > 0 and result["local"] == 0
    assert most >= vol[:, 30 - 12:, :].size  # the whole blob's window was read at once
    capped, result, most, lines = runs[100_000]
    window = (16 + 32) * (32 + 32) * (32 + 32)
    assert result["grown"] == 0 and result["local"] > 0 and most <= window  # never more than one block's window
    assert any("max_window 100000" in line for line in lines)
    # the same 21 nuclei, voxel for voxel, each with one label across all block borders
    assert capped.max() == 21 and _same_partition(capped, whole)
    assert seg_score(whole, capped) == seg_score(capped, whole) == 1.0


def test_max_window_below_every_blob_still_agrees_with_the_whole_volume(crowded):
    vol, truth = crowded
    whole = segment_nuclei(vol, min_size=20)
    out, scratch = np.zeros(vol.shape, np.int32), np.zeros(vol.shape, np.int64)
    result = segment_nuclei_blocks(vol, out, scratch, block=(16, 24, 24), halo=20, min_size=20, max_window=30_000)
    assert result["grown"] == 0 and result["local"] > 100  # every blob split in the fixed windows
    assert seg_score(whole, out) >= 0.98 and seg_score(out, whole) >= 0.98
    assert abs(int(out.max()) - int(whole.max())) <= 0.01 * whole.max()
    with pytest.raises(InputError, match="max_window must be a positive"):
        segment_nuclei_blocks(vol, out, scratch, max_window=0)
