"""OME-Zarr that other software opens: the NGFF 0.4 / Zarr v2 export, and every store the workflow
writes validated with ome-zarr-models (the OME-NGFF specification as pydantic models) and read with
ome-zarr-py's reader (the code napari-ome-zarr uses), not only with isonet's own reader.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from _assertions import raises_one_line
from isonet.cli import main
from isonet.storage import build_pyramid, create_ome_zarr, read_ome_zarr
from isonet.storage.ngff04 import export_ngff04

ome_zarr_models = pytest.importorskip("ome_zarr_models")
v04 = pytest.importorskip("ome_zarr_models.v04")
v05 = pytest.importorskip("ome_zarr_models.v05")
ome_zarr_reader = pytest.importorskip("ome_zarr.reader")
ome_zarr_io = pytest.importorskip("ome_zarr.io")
ome_zarr_format = pytest.importorskip("ome_zarr.format")

VS = (0.8, 0.2, 0.2)


def _image(path: Path, data: np.ndarray, levels: int, method: str = "mean", shards=None, name="image") -> Path:
    _, a = create_ome_zarr(path, data.shape, data.dtype, (2, 8, 8), VS, name=name, shards=shards,
                           provenance={"stage": "stitch" if method == "mean" else "segment"})
    a[:] = data
    build_pyramid(path, n_levels=levels, method=method)
    return path


@pytest.fixture
def restored_and_labels(tmp_path):
    rng = np.random.default_rng(4)
    data = rng.random((6, 20, 18)).astype(np.float32)
    labels = (rng.random(data.shape) > 0.7).astype(np.int32) * np.arange(data.size, dtype=np.int32).reshape(data.shape)
    return (_image(tmp_path / "restored.ome.zarr", data, 3, shards=(4, 16, 16)),
            _image(tmp_path / "labels.ome.zarr", labels, 2, method="nearest", name="labels"))


def _levels(path: Path) -> list[np.ndarray]:
    multiscale = zarr.open_group(path, mode="r").attrs["ome"]["multiscales"][0]
    return [np.asarray(read_ome_zarr(path, i)[0][:]) for i in range(len(multiscale["datasets"]))]


def _ome_zarr_py_nodes(path: Path, fmt) -> list:
    return list(ome_zarr_reader.Reader(ome_zarr_io.parse_url(path, fmt=fmt))())


def test_ngff04_export_validates_as_v04_and_reads_in_ome_zarr_py(restored_and_labels, tmp_path):
    restored, labels = restored_and_labels
    out = tmp_path / "restored.ngff04.zarr"
    assert main(["export-ngff04", str(restored), str(out), "--labels", str(labels)]) == 0

    # Zarr v2, zlib chunks under "/"-separated keys, every level and the labels
    assert json.loads((out / ".zgroup").read_text()) == {"zarr_format": 2}
    for array in ("0", "1", "2", "labels/nuclei/0", "labels/nuclei/1"):
        meta = json.loads((out / array / ".zarray").read_text())
        assert (meta["zarr_format"], meta["compressor"]["id"], meta["dimension_separator"]) == (2, "zlib", "/")
        assert meta["chunks"] == [min(c, n) for c, n in zip((2, 8, 8), meta["shape"])] and meta["filters"] is None
    assert (out / "0" / "0" / "0" / "0").is_file()

    image = v04.Image.from_zarr(zarr.open_group(out, mode="r"))  # raises on any metadata error
    (multiscale,) = image.attributes.multiscales
    assert multiscale.version == "0.4" and [a.name for a in multiscale.axes] == ["z", "y", "x"]
    assert all(a.unit == "micrometer" for a in multiscale.axes)
    assert [d.path for d in multiscale.datasets] == ["0", "1", "2"]
    assert [d.coordinateTransformations[0].scale for d in multiscale.datasets] == [
        list(VS), [1.6, 0.4, 0.4], [3.2, 0.8, 0.8]]
    label = v04.ImageLabel.from_zarr(zarr.open_group(out / "labels" / "nuclei", mode="r"))
    assert label.attributes.image_label.source.image == "../../"
    assert zarr.open_group(out / "labels", mode="r").attrs["labels"] == ["nuclei"]
    attrs = zarr.open_group(out, mode="r").attrs
    assert attrs["isonet"]["stage"] == "stitch"  # the source's provenance, kept
    assert attrs["isonet"]["export_ngff04"]["inputs"] == {"image": str(restored), "labels": str(labels)}

    # napari-ome-zarr's reader: the image with all levels, then its labels; pixels equal
    nodes = _ome_zarr_py_nodes(out, ome_zarr_format.FormatV04())
    assert [type(s).__name__ for s in nodes[0].specs] == ["Multiscales"]
    for got, want in zip(nodes[0].data, _levels(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)
    label_node = next(n for n in nodes if any(type(s).__name__ == "Label" for s in n.specs))
    for got, want in zip(label_node.data, _levels(labels), strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)
    # and isonet's own reader takes the export back
    array, voxel_size = read_ome_zarr(out, 2)
    assert voxel_size == pytest.approx((3.2, 0.8, 0.8))
    np.testing.assert_array_equal(array[:], _levels(restored)[2])


def test_ngff04_export_reads_the_source_one_stored_unit_at_a_time(restored_and_labels, tmp_path, monkeypatch):
    from isonet.storage.integrity import CheckedArray

    restored, _ = restored_and_labels
    largest = []
    read = CheckedArray.__getitem__

    def counting(self, selection):
        block = read(self, selection)
        largest.append(np.asarray(block).size)
        return block

    monkeypatch.setattr(CheckedArray, "__getitem__", counting)
    export_ngff04(restored, tmp_path / "o.zarr")
    assert largest and max(largest) <= 4 * 16 * 16  # one shard of level 0, never a whole level (6*20*18)


def test_ngff04_export_refuses_mismatched_labels_and_writes_nothing(restored_and_labels, tmp_path, capsys):
    restored, _ = restored_and_labels
    other = _image(tmp_path / "other.ome.zarr", np.ones((6, 20, 16), np.int32), 1, method="nearest")
    raises_one_line("other.ome.zarr", export_ngff04, restored, tmp_path / "o.zarr", [("nuclei", other)])
    assert main(["export-ngff04", str(restored), str(tmp_path / "o.zarr"), "--labels", str(other)]) == 2
    assert "label image has shape (6, 20, 16)" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists() and not list(tmp_path.glob(".*o.zarr"))


def test_ngff04_export_chunk_damage_is_detected_by_zlib(restored_and_labels, tmp_path):
    restored, _ = restored_and_labels
    out = export_ngff04(restored, tmp_path / "o.zarr")
    chunk = out / "0" / "1" / "1" / "1"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    chunk.write_bytes(bytes(raw))
    with pytest.raises(Exception, match="(?i)error|check"):  # zlib's Adler-32 or its stream check
        zarr.open_array(out / "0", mode="r")[2:4, 8:16, 8:16]


# ------------------------------------------------------------------------------------------
# Every OME-Zarr of a workflow run


def _zarr_stores(root: Path) -> list[Path]:
    """Top-level Zarr stores (groups) under ``root``, not the arrays and groups inside them."""
    stores = []
    for meta in sorted(root.rglob("*")):
        if meta.name in ("zarr.json", ".zgroup") and not any(
                (p / "zarr.json").is_file() or (p / ".zgroup").is_file() for p in meta.parent.parents):
            stores.append(meta.parent)
    return stores


def check_every_ome_zarr_of_the_workflow(results: Path) -> None:
    """Every store of a workflow run's results validated (the test is in test_workflow.py, beside the
    other tests of the tiny run, which `make test` keeps on one worker)."""
    stores = {str(p.relative_to(results)): p for p in _zarr_stores(results)}
    assert set(stores) == {"input.ome.zarr", "predict/predicted.ome.zarr", "predict/uncertainty.ome.zarr",
                           "restored.ome.zarr", "restored.ngff04.zarr"}, stores
    # the labels are NGFF labels of the restored image
    v05.ImageLabel.from_zarr(zarr.open_group(stores["restored.ome.zarr"] / "labels" / "nuclei", mode="r"))
    for name, path in stores.items():
        group = zarr.open_group(path, mode="r")
        if name.endswith(".ngff04.zarr"):
            continue
        image = v05.Image.from_zarr(group)  # NGFF 0.5, validated by the spec's models
        assert ome_zarr_models.open_ome_zarr(group).__class__ is v05.Image, name
        (multiscale,) = image.attributes.ome.multiscales
        for level, dataset in enumerate(multiscale.datasets):
            scale = dataset.coordinateTransformations[0].scale
            assert tuple(scale) == pytest.approx(read_ome_zarr(path, level)[1]), (name, level)
        (node, *_) = _ome_zarr_py_nodes(path, ome_zarr_format.FormatV05())
        assert len(node.data) == len(multiscale.datasets), name
        np.testing.assert_array_equal(np.asarray(node.data[-1]), read_ome_zarr(path, len(node.data) - 1)[0][:])

    export = stores["restored.ngff04.zarr"]
    image = v04.Image.from_zarr(zarr.open_group(export, mode="r"))
    v04.ImageLabel.from_zarr(zarr.open_group(export / "labels" / "nuclei", mode="r"))
    restored = stores["restored.ome.zarr"]
    assert len(image.attributes.multiscales[0].datasets) == len(_levels(restored))
    np.testing.assert_array_equal(read_ome_zarr(export)[0][:], read_ome_zarr(restored)[0][:])
    np.testing.assert_array_equal(read_ome_zarr(export / "labels" / "nuclei")[0][:],
                                  read_ome_zarr(stores["restored.ome.zarr"] / "labels" / "nuclei")[0][:])


def test_ngff04_export_takes_the_labels_the_image_holds(restored_and_labels, tmp_path):
    """NGFF labels inside the image (``<image>/labels/<name>``) are exported without being named."""
    restored, labels = restored_and_labels
    (restored / "labels").mkdir()
    shutil.copytree(labels, restored / "labels" / "cells")
    group = zarr.open_group(restored / "labels", mode="a", zarr_format=3)
    group.update_attributes({"ome": {"version": "0.5", "labels": ["cells"]}})
    out = export_ngff04(restored, tmp_path / "o.zarr")
    assert zarr.open_group(out / "labels", mode="r").attrs["labels"] == ["cells"]
    v04.ImageLabel.from_zarr(zarr.open_group(out / "labels" / "cells", mode="r"))
    np.testing.assert_array_equal(read_ome_zarr(out / "labels" / "cells", 1)[0][:], _levels(labels)[1])
    raises_one_line("given twice", export_ngff04, restored, tmp_path / "p.zarr", [("cells", labels)])
