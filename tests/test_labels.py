"""NGFF labels: the segmentation is written into the restored image as ``labels/<name>``, where
OME-Zarr viewers look for it, and validates as labels (ome-zarr-models)."""

from __future__ import annotations

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
