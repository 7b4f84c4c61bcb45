"""The evaluate stage reads volumes in slabs and blocks, and its figures equal the in-memory ones."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from isonet.degrade import upsample_axis
from isonet.metrics import interior_label_ids, psnr_affine, seg_score
from isonet.segment import segment_nuclei, threshold_by_rule
from isonet.stages.evaluate import evaluate_stage, metrics_markdown
from isonet.storage import create_ome_zarr
from isonet.synthetic import nuclei_phantom


def _zarr(path, data, voxel_size, chunks=(16, 32, 32), provenance=None):
    _, level0 = create_ome_zarr(path, data.shape, data.dtype, chunks, voxel_size,
                                provenance=provenance or {"stage": "test"})
    level0[:] = data
    return path


def test_evaluate_streamed_equals_in_memory(tmp_path):
    factor = 3
    truth, labels = nuclei_phantom((52, 64, 64), n_nuclei=30, radius=(4, 8), seed=3)
    rng = np.random.default_rng(0)
    iso = ndi.gaussian_filter(truth.astype(np.float32), 1.0)
    acquired = ndi.gaussian_filter(truth.astype(np.float32), (3.0, 1.0, 1.0))[:49:factor] * 900 + 100
    restored_grid = (acquired.shape[0] - 1) * factor + 1
    restored = (iso[:restored_grid] + rng.normal(0, 0.05, (restored_grid, 64, 64))).astype(np.float32)
    restored_labels = segment_nuclei(restored, min_size=20)

    inp = _zarr(tmp_path / "in.ome.zarr", acquired.astype(np.float32), (0.6, 0.2, 0.2))
    out = _zarr(tmp_path / "restored.ome.zarr", restored, (0.2, 0.2, 0.2))
    lab = _zarr(tmp_path / "labels.ome.zarr", restored_labels, (0.2, 0.2, 0.2))
    gt = tmp_path / "gt.tif"
    tifffile.imwrite(gt, truth.astype(np.float32))  # longer than the restored grid: cropped by slicing
    iso_gt = _zarr(tmp_path / "iso_gt.ome.zarr", iso, (0.2, 0.2, 0.2))
    gt_labels = _zarr(tmp_path / "gt_labels.ome.zarr", labels.astype(np.uint16), (0.2, 0.2, 0.2))
    metrics = evaluate_stage(inp, out, lab, tmp_path / "m.json", tmp_path / "m.md", gt=gt, iso_gt=iso_gt,
                             gt_labels=gt_labels, min_size=20, block=(16, 32, 32), halo=20, z_margin=8)

    # the same figures from whole volumes in memory (the stage's former code path)
    cubic = upsample_axis(acquired.astype(np.float32), factor, axis=0)
    refs = {"gt": truth[:restored_grid].astype(np.float32), "iso_gt": iso[:restored_grid]}
    for name, ref in refs.items():
        for method, volume in (("restored", restored), ("cubic", cubic)):
            assert metrics["psnr"][name][method] == pytest.approx(psnr_affine(volume, ref), rel=1e-9, abs=0)
    gt_lab = labels[:restored_grid].astype(np.int32)
    interior = interior_label_ids(gt_lab, 8)
    assert 0 < metrics["seg_interior"]["n_objects"] == len(interior) < len(np.unique(gt_lab)) - 1
    segmentations = {"restored": restored_labels, "input": segment_nuclei(cubic, min_size=20),
                     "iso_gt": segment_nuclei(refs["iso_gt"], min_size=20)}
    for name, seg in segmentations.items():
        score, ids, per_object = seg_score(gt_lab, seg, return_per_object=True)
        assert metrics["seg"][name] == score  # exact
        assert metrics["seg_interior"][name] == float(per_object[np.isin(ids, interior)].mean())
    assert 0 < metrics["seg"]["input"] < metrics["seg"]["iso_gt"]
    gap = metrics["seg"]["iso_gt"] - metrics["seg"]["input"]
    assert metrics["seg"]["gap_closed"] == (metrics["seg"]["restored"] - metrics["seg"]["input"]) / gap
    assert json.loads((tmp_path / "m.json").read_text())["seg"] == metrics["seg"]
    assert "| restored |" in (tmp_path / "m.md").read_text() and "SEG interior" in (tmp_path / "m.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # temporaries removed
    # labels not made by `isonet segment` record no rule: said, not taken for a mixed comparison
    assert metrics["seg_threshold"]["restored"] == {"threshold": None, "rule": None}
    assert metrics["seg_threshold"]["one_rule"] is False
    assert "restored unknown" in (tmp_path / "m.md").read_text()


@pytest.mark.parametrize("rule", ["otsu", "intermodes"])
def test_evaluate_thresholds_input_and_iso_gt_by_the_restored_labels_rule(tmp_path, rule):
    factor = 3
    truth, labels = nuclei_phantom((40, 48, 48), n_nuclei=16, radius=(4, 7), seed=5)
    iso = ndi.gaussian_filter(truth.astype(np.float32), 1.0)
    acquired = (ndi.gaussian_filter(truth.astype(np.float32), (3.0, 1.0, 1.0))[:37:factor] * 900 + 100).astype(np.float32)
    grid = (acquired.shape[0] - 1) * factor + 1
    restored = iso[:grid] + np.random.default_rng(1).normal(0, 0.05, (grid, 48, 48)).astype(np.float32)
    t = threshold_by_rule(restored, rule)
    record = {"stage": "segment", "threshold": t, "threshold_method": rule}
    lab = _zarr(tmp_path / "labels.ome.zarr", segment_nuclei(restored, threshold=t, min_size=20), (0.2,) * 3,
                provenance=record)
    metrics = evaluate_stage(
        _zarr(tmp_path / "in.ome.zarr", acquired, (0.6, 0.2, 0.2)), _zarr(tmp_path / "r.ome.zarr", restored, (0.2,) * 3),
        lab, tmp_path / "m.json", tmp_path / "m.md", iso_gt=_zarr(tmp_path / "iso.ome.zarr", iso, (0.2,) * 3),
        gt_labels=_zarr(tmp_path / "gtl.ome.zarr", labels.astype(np.int32), (0.2,) * 3), min_size=20,
        block=(16, 32, 32), halo=20, z_margin=6)

    gt_lab = labels[:grid].astype(np.int32)
    assert metrics["seg_threshold"]["restored"] == {"threshold": t, "rule": rule}
    for name, volume in (("input", upsample_axis(acquired, factor, axis=0)), ("iso_gt", iso[:grid])):
        expected = threshold_by_rule(volume, rule)  # the rule alone, no fallback
        assert metrics["seg_threshold"][name]["rule"] == rule
        assert metrics["seg_threshold"][name]["threshold"] == pytest.approx(expected, rel=1e-6)
        assert metrics["seg"][name] == seg_score(gt_lab, segment_nuclei(volume, threshold=expected, min_size=20))
    assert metrics["seg_threshold"]["one_rule"] is True
    assert f"Threshold rule: {rule}, for every segmentation" in (tmp_path / "m.md").read_text()
    assert json.loads((tmp_path / "m.json").read_text())["seg_threshold"]["one_rule"] is True


def test_metrics_report_says_when_segmentations_were_thresholded_by_different_rules():
    metrics = {"factor": 4, "restored_shape": [9, 8, 8], "psnr": {},
               "seg": {"restored": 0.9, "input": 0.7, "iso_gt": 0.95, "gap_closed": 0.8},
               "seg_threshold": {"restored": {"threshold": 0.3, "rule": "intermodes"},
                                 "input": {"threshold": 0.2, "rule": "otsu"},
                                 "iso_gt": {"threshold": 0.3, "rule": "intermodes"}, "one_rule": False}}
    md = metrics_markdown(metrics)
    assert "Threshold rules differ (restored intermodes, input otsu, iso_gt intermodes)" in md


def test_series_evaluation_per_time_point_and_channel_equals_in_memory(tmp_path):
    """evaluate-series: one row per restored (t, c); the sheet's channel selection picks the ground
    truth's volumes through the converted input's source channels."""
    from isonet.stages.convert import convert
    from isonet.stages.evaluate import evaluate_series_stage
    from isonet.storage import channel_axis, omero_channels, time_axis

    factor, n_t, n_c = 2, 2, 3
    rng = np.random.default_rng(4)
    truth = ndi.gaussian_filter(rng.random((n_t, n_c, 11, 16, 16)).astype(np.float32), (0, 0, 1, 1, 1))
    acquired = (truth[:, :, ::factor] * 1000 + 100).astype(np.uint16)  # 6 planes -> restored grid 11
    source = tmp_path / "run.ome.tif"
    tifffile.imwrite(source, acquired, ome=True, metadata={"axes": "TCZYX", "PhysicalSizeZ": 0.4, "PhysicalSizeY": 0.2,
                                                            "PhysicalSizeX": 0.2, "Channel": {"Name": ["a", "b", "c"]}})
    gt = tmp_path / "gt.ome.tif"
    tifffile.imwrite(gt, truth, ome=True, metadata={"axes": "TCZYX"})
    converted = tmp_path / "input.ome.zarr"
    convert(source, converted, chunks=(6, 16, 16), channels=["c", "a"])  # converted channel 0 is file channel 2
    restored = (truth[:, [2, 0]] + rng.normal(0, 0.001, (n_t, 2, 11, 16, 16))).astype(np.float32)
    leading = [time_axis(30.0), channel_axis()]
    _, level0 = create_ome_zarr(tmp_path / "restored.ome.zarr", restored.shape, np.float32, (1, 1, 11, 16, 16),
                                (0.2, 0.2, 0.2), provenance={"stage": "assemble", "timepoints": [0, 1],
                                                             "source_channels": [0, 1]},
                                leading_axes=leading, omero=omero_channels(["c", "a"], [(0, 1), (0, 1)]))
    level0[:] = restored

    metrics = evaluate_series_stage(converted, tmp_path / "restored.ome.zarr", tmp_path / "m.json", tmp_path / "m.md",
                                    iso_gt=gt)
    assert [(v["t"], v["c"], v["channel"]) for v in metrics["volumes"]] == [(0, 0, "c"), (0, 1, "a"), (1, 0, "c"),
                                                                           (1, 1, "a")]
    for v in metrics["volumes"]:
        file_c = {0: 2, 1: 0}[v["c"]]
        cubic = upsample_axis(acquired[v["t"], file_c].astype(np.float32), factor, axis=0)
        ref = truth[v["t"], file_c]
        assert v["psnr"]["iso_gt"]["restored"] == pytest.approx(psnr_affine(restored[v["t"], v["c"]], ref), rel=1e-9)
        assert v["psnr"]["iso_gt"]["cubic"] == pytest.approx(psnr_affine(cubic, ref), rel=1e-9)
        assert v["psnr"]["iso_gt"]["restored"] > v["psnr"]["iso_gt"]["cubic"]
    assert metrics["psnr"]["iso_gt"]["restored"] == pytest.approx(
        np.mean([v["psnr"]["iso_gt"]["restored"] for v in metrics["volumes"]]))
    assert json.loads((tmp_path / "m.json").read_text())["volumes"] == metrics["volumes"]
    table = (tmp_path / "m.md").read_text()
    assert "| 1 | a | iso_gt |" in table and table.count("| iso_gt |") == 4 + 1  # 4 volumes and the mean

    from isonet.errors import InputError

    short = tmp_path / "short.ome.tif"
    tifffile.imwrite(short, truth[:, :2], ome=True, metadata={"axes": "TCZYX"})
    with pytest.raises(InputError, match=r"short.ome.tif: ground truth of 2 time points and 2 channels has no time "
                                         r"point 0 of channel 2; it must have the time points and channels of the input file"):
        evaluate_series_stage(converted, tmp_path / "restored.ome.zarr", tmp_path / "m2.json", tmp_path / "m2.md",
                              gt=short)

def _resident_kb(path) -> int:
    """Resident kB of this process's mappings of ``path`` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if line[:1] in "0123456789abcdef" and "-" in line.split()[0]:
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_reading_a_mapped_tiff_through_planes_view_leaves_it_unresident(tmp_path):
    from isonet.stages.views import PlanesView
    from isonet.storage import open_volume

    data = np.random.default_rng(0).random((64, 256, 256), dtype=np.float32)  # 16 MiB, stored uncompressed
    path = tmp_path / "gt.tif"
    tifffile.imwrite(path, data)
    array, _, close = open_volume(path)
    try:
        assert isinstance(array, np.memmap)
        view = PlanesView(array, np.float32, n_planes=60)
        total = sum(float(view[z:z + 8].sum(dtype=np.float64)) for z in range(0, 60, 8))
        assert total == pytest.approx(float(data[:60].sum(dtype=np.float64)), rel=1e-9)
        assert _resident_kb(path) < 1024  # without dropping the pages: all 15 MiB read stay resident
        np.asarray(array[:60]).sum()  # a plain read keeps them: the measurement does see mapped pages
        assert _resident_kb(path) > 14 * 1024
    finally:
        close()


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_a_block_of_many_planes_read_from_a_mapped_tiff_maps_one_plane_at_a_time(tmp_path, monkeypatch):
    # the kernel maps a file's cached pages in whole folios (up to 2 MiB): read through the mapping
    # in one go, rows 0:128 of 16 planes (8 MiB) left every plane's folios mapped (up to 32 MiB here),
    # so convert's and evaluate's peaks followed the planes' width
    import isonet.storage.tiff as tiff
    from isonet.stages.views import PlanesView
    from isonet.storage import open_volume, read_planes

    data = np.random.default_rng(0).random((16, 512, 1024), dtype=np.float32)  # 2 MiB planes
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, data)
    mapped_kb = []
    drop = tiff.drop_mapped_pages

    def measured_drop(array):
        mapped_kb.append(_resident_kb(path))
        drop(array)

    monkeypatch.setattr(tiff, "drop_mapped_pages", measured_drop)
    array, _, close = open_volume(path)
    try:
        assert isinstance(array, np.memmap)
        np.testing.assert_array_equal(read_planes(array, 0, 16, path, rows=(0, 128)), data[:, :128])
        np.testing.assert_array_equal(PlanesView(array, np.float64)[:, 128:256, 100:300], data[:, 128:256, 100:300])
        assert len(mapped_kb) == 32
        # one plane's rows (512 KiB) and the folios around them, never the block's 8 MiB
        assert max(mapped_kb) < 5 * 1024
        assert _resident_kb(path) == 0
    finally:
        close()
