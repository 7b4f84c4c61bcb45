"""NGFF labels: the segmentation is written into the restored image as ``labels/<name>``, where
OME-Zarr viewers look for it, and validates as labels (ome-zarr-models)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr

from isonet.stages.segment import segment_stage
from isonet.stages.verify import verify_store
from isonet.storage import build_pyramid, create_labels, create_ome_zarr, read_ome_zarr

VS = (0.8, 0.2, 0.2)


def image_store(path, levels=3):
    """An isonet OME-Zarr image of two bright balls on a dark background."""
    grid = np.indices((16, 32, 32), dtype=np.float32)
    data = np.zeros((16, 32, 32), np.float32)
    for centre in ((8, 9, 9), (8, 22, 22)):
        data += 1000 * (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= 25)
    data += np.random.default_rng(0).normal(100, 5, data.shape).astype(np.float32)
    _, level0 = create_ome_zarr(path, data.shape, np.float32, (8, 16, 16), VS, provenance={"stage": "stitch"})
    level0[:] = data
    build_pyramid(path, n_levels=levels)
    return path


def test_segment_writes_labels_of_the_image_that_validate_as_ngff_labels(tmp_path):
    models = pytest.importorskip("ome_zarr_models.v05")
    image = image_store(tmp_path / "restored.ome.zarr")
    before = os.stat(image).st_mtime_ns
    image_attrs = dict(zarr.open_group(image, mode="r").attrs)
    summary = segment_stage(image, image / "labels" / "nuclei", tmp_path / "labels.json", min_distance=3,
                            min_size=8, pyramid_levels=5)
    assert summary["n_objects"] == 2

    # the image is unchanged, its directory's mtime included (Snakemake compares it)
    assert os.stat(image).st_mtime_ns == before
    assert dict(zarr.open_group(image, mode="r").attrs) == image_attrs
    ngff = models.Image.from_zarr(zarr.open_group(image, mode="r"))
    assert ngff.labels is not None and ngff.labels.label_paths == ["nuclei"]
    label = ngff.labels.get_image_labels_group("nuclei")
    assert isinstance(label, models.ImageLabel)
    assert label.ome_attributes.image_label.source.image == "../../"
    # as many levels as the image (not pyramid_levels): ome-zarr-models checks that too
    assert len(label.ome_attributes.multiscales[0].datasets) == 3

    # ome-zarr-py (napari-ome-zarr's reader) finds the image, its labels group and the label image
    reader = pytest.importorskip("ome_zarr.reader")
    from ome_zarr.io import parse_url

    nodes = list(reader.Reader(parse_url(str(image)))())
    kinds = [type(spec).__name__ for node in nodes for spec in node.specs]
    assert {"Multiscales", "Labels", "Label"} <= set(kinds), kinds

    labels, labels_vs = read_ome_zarr(image / "labels" / "nuclei")
    assert labels.shape == (16, 32, 32) and labels_vs == pytest.approx(VS)
    values = np.asarray(labels[:])
    assert values[8, 9, 9] > 0 and values[8, 22, 22] > 0 and values[8, 9, 9] != values[8, 22, 22]
    assert values[0, 0, 0] == 0
    for store in (image, image / "labels" / "nuclei"):
        report = verify_store(store, log=lambda m: None)
        assert (report["problems"], report["unchecksummed"]) == ([], []), report


def test_labels_listing_keeps_other_names_and_replaces_its_own(tmp_path):
    image = image_store(tmp_path / "img.ome.zarr", levels=2)
    for name, value in (("cells", 1), ("nuclei", 2), ("nuclei", 3)):
        with create_labels(image, name, (16, 32, 32), (8, 32, 32), VS) as level0:
            level0[:] = value
    assert zarr.open_group(image / "labels", mode="r").attrs["ome"] == {"version": "0.5", "labels": ["cells", "nuclei"]}
    assert int(read_ome_zarr(image / "labels" / "nuclei")[0][0, 0, 0]) == 3
    assert sorted(p.name for p in (image / "labels").iterdir()) == ["cells", "nuclei", "zarr.json"]


def test_failed_labels_leave_the_image_as_it_was(tmp_path):
    image = image_store(tmp_path / "img.ome.zarr", levels=2)
    with pytest.raises(RuntimeError):
        with create_labels(image, "nuclei", (16, 32, 32), (8, 32, 32), VS):
            raise RuntimeError("killed")
    assert not (image / "labels" / "nuclei").exists()
    assert not (image / "labels" / "zarr.json").exists()


def series_store(path):
    """A (t, c, z, y, x) isonet image as `isonet assemble` writes it: 2 time points of 2 channels;
    channel "nuclei" shows 2 balls at t 0 and 3 at t 1, channel "membrane" noise only."""
    from isonet.storage import channel_axis, omero_channels, time_axis, write_ome_zarr_metadata

    grid = np.indices((16, 32, 32), dtype=np.float32)
    rng = np.random.default_rng(1)
    leading = [time_axis(30.0), channel_axis()]
    group, level0 = create_ome_zarr(path, (2, 2, 16, 32, 32), np.float32, (1, 1, 8, 16, 16), VS,
                                    provenance={"stage": "assemble"}, leading_axes=leading)
    for t, centres in enumerate((((8, 9, 9), (8, 22, 22)), ((8, 9, 9), (8, 22, 22), (8, 9, 24)))):
        data = sum(1000 * (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= 16) for centre in centres)
        level0[t, 0] = data + rng.normal(100, 5, data.shape)
        level0[t, 1] = rng.normal(100, 5, data.shape)
    write_ome_zarr_metadata(group, VS, 1, name="restored", leading_axes=leading,
                            omero=omero_channels(["nuclei", "membrane"], [(0, 1100), (0, 200)]))
    build_pyramid(path, n_levels=2)
    return path


def test_time_lapse_labels_have_the_image_axes_one_channel_and_every_time_point(tmp_path):
    models = pytest.importorskip("ome_zarr_models.v05")
    image = series_store(tmp_path / "restored.ome.zarr")
    before = os.stat(image).st_mtime_ns
    summary = segment_stage(image, image / "labels" / "nuclei", tmp_path / "c0.json", min_distance=3, min_size=8,
                            channel="nuclei", block=(8, 16, 16), halo=8)
    assert [(p["t"], p["n_objects"]) for p in summary["timepoints"]] == [(0, 2), (1, 3)]
    assert (summary["channel"], summary["channel_name"], summary["n_objects"]) == (0, "nuclei", 5)
    assert os.stat(image).st_mtime_ns == before

    ngff = models.Image.from_zarr(zarr.open_group(image, mode="r"))
    assert ngff.labels.label_paths == ["nuclei"]
    label = ngff.labels.get_image_labels_group("nuclei")
    multiscale = label.ome_attributes.multiscales[0]
    assert [a.name for a in multiscale.axes] == ["t", "c", "z", "y", "x"]
    assert multiscale.axes[0].type == "time" and multiscale.axes[0].unit == "second"
    assert len(multiscale.datasets) == 2  # as many levels as the image
    level0 = zarr.open_group(image / "labels" / "nuclei", mode="r")
    assert level0["0"].shape == (2, 1, 16, 32, 32) and level0["1"].shape == (2, 1, 8, 16, 16)
    assert level0.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == \
        [30.0, 1.0, *VS]
    values = np.asarray(level0["0"][:])
    assert values[1, 0, 8, 9, 24] > 0 and values[0, 0, 8, 9, 24] == 0  # the third ball is at t 1 only
    assert len(np.unique(values[0])) == 3 and len(np.unique(values[1])) == 4  # background + nuclei
    assert json.loads((tmp_path / "c0.json").read_text()) == summary
    assert verify_store(image / "labels" / "nuclei", log=lambda m: None)["problems"] == []

    # a second channel's labels join the listing; the image still validates with both
    segment_stage(image, image / "labels" / "membrane", None, min_distance=3, min_size=8, channel=1)
    assert models.Image.from_zarr(zarr.open_group(image, mode="r")).labels.label_paths == ["nuclei", "membrane"]


def test_time_lapse_segment_errors_are_one_line(tmp_path):
    from isonet.errors import InputError

    image = series_store(tmp_path / "restored.ome.zarr")
    with pytest.raises(InputError, match=r"has 2 channels \(nuclei, membrane\); choose the one to segment with "
                                         r"--channel"):
        segment_stage(image, image / "labels" / "nuclei")
    with pytest.raises(InputError, match=r"no channel 'DAPI'; it has 2 \(nuclei, membrane\)"):
        segment_stage(image, image / "labels" / "nuclei", channel="DAPI")
    with pytest.raises(InputError, match="the labels of a time-lapse or multi-channel image go into the image"):
        segment_stage(image, tmp_path / "labels.ome.zarr", channel=0)
    assert not (image / "labels").exists()
