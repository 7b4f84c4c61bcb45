"""Report figures: isonet.figures (pure rendering) and isonet.stages.report (files in, files out)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tifffile

from isonet import figures
from isonet.cli import main
from isonet.errors import InputError
from isonet.stages.report import metrics_table_stage, orthoviews_stage, read_training_table, training_curve_stage
from isonet.storage import build_pyramid, create_ome_zarr

PNG = b"\x89PNG\r\n\x1a\n"


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=40)
    return buffer.getvalue()


class CountingVolume:
    """An array that records the slices read from it."""

    def __init__(self, array):
        self.array, self.reads = array, []
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key):
        self.reads.append(key)
        return self.array[key]


# ------------------------------------------------------------------------------------------
# isonet.figures


def test_plane_indices_middle_point_and_clipping():
    assert figures.plane_indices((9, 10, 11), (1, 1, 1)) == (4, 5, 5)
    # the same point in µm on an anisotropic and an isotropic grid
    assert figures.plane_indices((8, 32, 32), (0.8, 0.2, 0.2), (3.2, 3.2, 3.2)) == (4, 16, 16)
    assert figures.plane_indices((29, 32, 32), (0.2, 0.2, 0.2), (3.2, 3.2, 3.2)) == (16, 16, 16)
    assert figures.plane_indices((4, 4, 4), (1, 1, 1), (-5, 100, 2)) == (0, 3, 2)
    with pytest.raises(ValueError, match="voxel_size must be three positive numbers"):
        figures.plane_indices((4, 4, 4), (1, 0, 1))


def test_orthogonal_planes_reads_only_three_planes():
    data = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    volume = CountingVolume(data)
    planes = figures.orthogonal_planes(volume, (1, 2, 3))
    assert len(volume.reads) == 3
    np.testing.assert_array_equal(planes["xy"], data[1])
    np.testing.assert_array_equal(planes["xz"], data[:, 2, :])
    np.testing.assert_array_equal(planes["yz"], data[:, :, 3])
    assert all(p.dtype == np.float32 for p in planes.values())
    with pytest.raises(ValueError, match="must be 3D"):
        figures.orthogonal_planes(np.zeros((2, 2)), (0, 0, 0))


def test_display_range_ignores_non_finite_and_flat_planes():
    lo, hi = figures.display_range({"xy": np.array([0.0, np.nan, 10.0, np.inf])}, (0, 100))
    assert (lo, hi) == (0.0, 10.0)
    assert figures.display_range({"xy": np.full((3, 3), 5.0)}) == (5.0, 6.0)


def test_orthoview_figure_draws_each_volume_in_micrometres():
    rng = np.random.default_rng(0)
    acquired = rng.random((8, 32, 40), dtype=np.float32)
    restored = rng.random((29, 32, 40), dtype=np.float32)
    rows = [
        ("input", figures.orthogonal_planes(acquired, (4, 16, 20)), (0.8, 0.2, 0.2)),
        ("restored", figures.orthogonal_planes(restored, (16, 16, 20)), (0.2, 0.2, 0.2)),
    ]
    fig = figures.orthoview_figure(rows, title="demo")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["input xy", "input yz", "input xz", "restored xy", "restored yz", "restored xz"]
    # input xz: 8 planes of 0.8 µm, pixel centres at 0, 0.8, ... (extent from -0.4 to 6.0 µm)
    left, right, bottom, top = fig.axes[2].images[0].get_extent()
    assert (left, right) == pytest.approx((-0.1, 7.9)) and (top, bottom) == pytest.approx((-0.4, 6.0))
    # restored xz shares the z box of the input (common limits)
    assert fig.axes[5].get_ylim() == pytest.approx(fig.axes[2].get_ylim())
    assert fig.axes[1].images[0].get_array().shape == (32, 8)  # yz drawn with z along x
    assert png_bytes(fig).startswith(PNG)


def test_orthoview_figure_rejects_bad_rows():
    with pytest.raises(ValueError, match="at least one volume"):
        figures.orthoview_figure([])
    planes = figures.orthogonal_planes(np.zeros((4, 8, 8)), (2, 4, 4))
    with pytest.raises(ValueError, match="lacks the plane"):
        figures.orthoview_figure([("x", {"xy": planes["xy"]}, (1, 1, 1))])
    with pytest.raises(ValueError, match="do not fit together"):
        figures.orthoview_figure([("x", {**planes, "xy": np.zeros((3, 3))}, (1, 1, 1))])


def test_training_curve_figure_marks_best_validation_epoch():
    fig = figures.training_curve_figure([1, 2, 3], [-20, -24, -25], [-21, -26, -24])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "epoch"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-1] == "best validation (epoch 2: -26.000)"
    assert png_bytes(fig).startswith(PNG)
    with pytest.raises(ValueError, match="same, non-zero length"):
        figures.training_curve_figure([1, 2], [1], [1, 2])


def test_metrics_html_tables_and_escaping():
    page = figures.metrics_html(
        {"factor": 4, "restored_shape": [29, 96, 96], "psnr": {"gt": {"restored": 22.5, "cubic": 20.25}},
         "seg": {"input": 0.75, "restored": 0.8, "gap_closed": None}},
        title="a<b",
    )
    assert "<h2>a&lt;b</h2>" in page and "axial factor 4" in page and "29 × 96 × 96" in page
    assert "<th>restored</th><th>cubic</th>" in page
    assert "<td>22.500</td><td>20.250</td>" in page and "<td>–</td>" in page
    assert "no ground truth" in figures.metrics_html({"factor": 2, "psnr": {}, "seg": {}})


# ------------------------------------------------------------------------------------------
# isonet.stages.report


def write_ome_zarr(path, data, voxel_size, levels=1):
    _, level0 = create_ome_zarr(path, data.shape, data.dtype, data.shape, voxel_size)
    level0[:] = data
    if levels > 1:
        build_pyramid(path, n_levels=levels)
    return path


def test_orthoviews_stage_places_planes_in_micrometres_and_uses_pyramid(tmp_path):
    rng = np.random.default_rng(1)
    acquired = write_ome_zarr(tmp_path / "input.ome.zarr", rng.random((8, 64, 64), dtype=np.float32), (0.8, 0.2, 0.2))
    restored = write_ome_zarr(tmp_path / "restored.ome.zarr", rng.random((29, 64, 64), dtype=np.float32),
                              (0.2, 0.2, 0.2), levels=2)
    gt = tmp_path / "gt.tif"
    tifffile.imwrite(gt, rng.random((32, 64, 64), dtype=np.float32), imagej=True, resolution=(5, 5),
                     metadata={"spacing": 0.2, "unit": "micron", "axes": "ZYX"})
    summary = orthoviews_stage(tmp_path / "fig" / "orthoviews.png", acquired, restored, gt, title="s")
    rows = {r["label"]: r for r in summary["rows"]}
    assert rows["input"]["planes_zyx"] == [4, 32, 32]
    assert rows["restored"]["planes_zyx"] == [16, 32, 32]
    assert rows["GT"]["planes_zyx"] == [16, 32, 32]
    assert (tmp_path / "fig" / "orthoviews.png").read_bytes().startswith(PNG)
    # a small max_plane_size draws the restoration's level 1 (its input has one level only)
    rows = {r["label"]: r for r in orthoviews_stage(tmp_path / "small.png", acquired, restored,
                                                    max_plane_size=32)["rows"]}
    assert rows["restored"]["shape"] == [15, 32, 32] and rows["restored"]["voxel_size"][1] == pytest.approx(0.4)
    assert rows["input"]["shape"] == [8, 64, 64]


def test_training_curve_stage_and_bad_table(tmp_path):
    tsv = tmp_path / "training.tsv"
    tsv.write_text("epoch\ttrain_loss\tval_loss\tseconds\n1\t-16.6\t-20.2\t26.5\n2\t-20.3\t-21.0\t9.9\n")
    assert read_training_table(tsv)["val_loss"] == [-20.2, -21.0]
    assert training_curve_stage(tsv, tmp_path / "curve.png")["epochs"] == 2
    assert (tmp_path / "curve.png").read_bytes().startswith(PNG)
    tsv.write_text("epoch\tloss\n1\t2\n")
    with pytest.raises(InputError, match="columns epoch, train_loss, val_loss"):
        read_training_table(tsv)


def test_cli_report_subcommands(tmp_path, capsys):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"factor": 4, "psnr": {"gt": {"restored": 22.0, "cubic": 20.4}}, "seg": {}}))
    assert main(["metrics-table", str(metrics), str(tmp_path / "metrics.html"), "--title", "demo"]) == 0
    assert "<td>22.000</td>" in (tmp_path / "metrics.html").read_text()
    assert main(["training-curve", str(tmp_path / "missing.tsv"), str(tmp_path / "c.png")]) == 2
    assert "cannot read the training table" in capsys.readouterr().err
    assert metrics_table_stage(metrics, tmp_path / "m2.html")["output"].endswith("m2.html")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["metrics-table", str(bad), str(tmp_path / "x.html")]) == 2
    assert "cannot read the metrics" in capsys.readouterr().err
