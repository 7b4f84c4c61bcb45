import json

import numpy as np
import pytest
import tifffile
import zarr

from isonet.storage import (
    SqueezedArray,
    atomic_path,
    build_pyramid,
    create_ome_zarr,
    export_tiff,
    open_volume,
    read_ome_zarr,
    write_json,
    write_text,
)
from _assertions import raises_one_line, skip_if_permissions_ignored

VS = (2.0, 0.25, 0.25)


def write_imagej(path, data, voxel_size=VS, unit="micron", **kwargs):
    tifffile.imwrite(
        path, data, imagej=True, resolution=(1 / voxel_size[2], 1 / voxel_size[1]),
        metadata={"axes": "ZYX", "spacing": voxel_size[0], "unit": unit}, **kwargs,
    )


def visible(directory):
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_path_exception_leaves_nothing(tmp_path):
    target = tmp_path / "out.zarr"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith("out.zarr")
            zarr.create_array(tmp, shape=(4,), dtype="uint8")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_existing_only_on_success(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "new").write_text("new")
            raise KeyboardInterrupt
    assert visible(tmp_path) == ["store"] and visible(target) == ["old"]

    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert visible(tmp_path) == ["store"] and visible(target) == ["new"]

    f = tmp_path / "a.txt"
    f.write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(f) as tmp:
            tmp.write_text("half")
            raise ValueError
    assert f.read_text() == "old"
    with atomic_path(f) as tmp:
        tmp.write_text("new")
    assert f.read_text() == "new" and visible(tmp_path) == ["a.txt", "store"]


def test_atomic_path_requires_something_written(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "a.txt"):
            pass


def test_atomic_path_creates_missing_parents(tmp_path):
    write_text(tmp_path / "a" / "b" / "c.txt", "x")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "x"


def test_atomic_path_parent_is_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    target = tmp_path / "file.txt" / "out.zarr"
    message = raises_one_line("out.zarr", atomic_path(target).__enter__)
    assert "file.txt" in message


def test_atomic_path_unwritable_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        skip_if_permissions_ignored(locked)
        raises_one_line("out.zarr", atomic_path(locked / "out.zarr").__enter__)
    finally:
        locked.chmod(0o755)


def test_write_json_and_text(tmp_path):
    p = write_json(tmp_path / "s.json", {"shape": (2, 3), "v": np.float32(0.5), "a": np.arange(2)})
    assert json.loads(p.read_text()) == {"shape": [2, 3], "v": 0.5, "a": [0, 1]}
    write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    assert visible(tmp_path) == ["s.json", "t.txt"]


# ---------------------------------------------------------------------------------------------
# OME-Zarr


def test_create_ome_zarr_metadata_and_codec(tmp_path):
    path = tmp_path / "a.zarr"
    group, level0 = create_ome_zarr(path, (5, 40, 30), "float32", (2, 16, 16), VS, name="cells",
                                    compression_level=5, provenance={"stage": "test"})
    assert level0.shape == (5, 40, 30) and level0.chunks == (2, 16, 16) and level0.dtype == np.float32
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert ms["name"] == "cells"
    assert ms["axes"] == [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    assert ms["datasets"] == [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(VS)}]}]
    assert meta["attributes"]["isonet"] == {"stage": "test"}
    codecs = json.loads((path / "0" / "zarr.json").read_text())["codecs"]
    assert codecs[1:] == [{"name": "zstd", "configuration": {"level": 5, "checksum": False}}, {"name": "crc32c"}]
    raises_one_line("a.zarr", create_ome_zarr, path, (5, 40, 30), "float32", (2, 16, 16), VS)
    raises_one_line("b.zarr", create_ome_zarr, tmp_path / "b.zarr", (5, 4, 3), "uint8", (1, 4, 3), (0, 1, 1))


def test_create_ome_zarr_with_shards(tmp_path):
    _, a = create_ome_zarr(tmp_path / "s.zarr", (8, 32, 32), "uint16", (2, 16, 16), VS, shards=(4, 32, 32))
    a[:] = 7
    assert a.shards == (4, 32, 32) and a.chunks == (2, 16, 16)
    arr, vs = read_ome_zarr(tmp_path / "s.zarr")
    assert vs == VS and int(arr[:].sum()) == 7 * 8 * 32 * 32


def test_read_ome_zarr_errors_and_plain_arrays(tmp_path):
    raises_one_line("missing.zarr", read_ome_zarr, tmp_path / "missing.zarr")
    (tmp_path / "empty.zarr").mkdir()
    raises_one_line("empty.zarr", read_ome_zarr, tmp_path / "empty.zarr")
    zarr.open_group(tmp_path / "bare.zarr", mode="w")
    assert "voxel" in raises_one_line("bare.zarr", read_ome_zarr, tmp_path / "bare.zarr")
    g, _ = create_ome_zarr(tmp_path / "a.zarr", (3, 4, 5), "uint8", (3, 4, 5), VS)
    raises_one_line("a.zarr", read_ome_zarr, tmp_path / "a.zarr", level=1)
    ms = dict(g.attrs["ome"])
    ms["multiscales"][0]["datasets"][0]["coordinateTransformations"] = []
    g.update_attributes({"ome": ms})
    assert "scales" in raises_one_line("a.zarr", read_ome_zarr, tmp_path / "a.zarr")

    for fmt in (2, 3):
        p = tmp_path / f"v{fmt}.zarr"
        zarr.create_array(p, shape=(3, 4, 5), dtype="int16", chunks=(1, 4, 5), zarr_format=fmt)[:] = 3
        arr, vs = read_ome_zarr(p)
        assert vs is None and arr.shape == (3, 4, 5) and int(arr[:].sum()) == 180


def test_read_ome_zarr_ngff_04_in_nanometres(tmp_path):
    g = zarr.open_group(tmp_path / "old.zarr", mode="w", zarr_format=2)
    g.create_array("0", shape=(1, 3, 4, 5), dtype="uint8", chunks=(1, 3, 4, 5))
    g.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": "c", "type": "channel"}] + [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 500, 100, 100]}]}],
    }]
    arr, vs = read_ome_zarr(tmp_path / "old.zarr")
    assert arr.shape == (1, 3, 4, 5) and vs == pytest.approx((0.5, 0.1, 0.1))
    volume, vs2, close = open_volume(tmp_path / "old.zarr")
    assert volume.shape == (3, 4, 5) and vs2 == vs
    close()


def test_build_pyramid_odd_shape_mean(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 1000, (5, 7, 9)).astype(np.float32)
    path = tmp_path / "p.zarr"
    _, a = create_ome_zarr(path, data.shape, data.dtype, (2, 4, 4), VS)
    a[:] = data
    shapes = build_pyramid(path, n_levels=3)
    assert shapes == [(5, 7, 9), (3, 4, 5), (2, 2, 3)]
    g = zarr.open_group(path, mode="r")
    level1 = g["1"][:]
    assert level1.shape == (3, 4, 5) and g["1"].chunks == (2, 4, 4)
    assert level1[0, 0, 0] == pytest.approx(data[:2, :2, :2].mean())
    assert level1[1, 2, 3] == pytest.approx(data[2:4, 4:6, 6:8].mean())
    # edge blocks of odd axes average the voxels that exist
    assert level1[2, 3, 4] == pytest.approx(data[4:5, 6:7, 8:9].mean())
    assert level1[2, 1, 4] == pytest.approx(data[4:, 2:4, 8:].mean())
    expected = np.zeros((3, 4, 5))
    for i, j, k in np.ndindex(3, 4, 5):
        expected[i, j, k] = data[2 * i:2 * i + 2, 2 * j:2 * j + 2, 2 * k:2 * k + 2].mean()
    np.testing.assert_allclose(level1, expected, rtol=1e-6)
    datasets = g.attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2"]
    for i, d in enumerate(datasets):
        assert d["coordinateTransformations"][0] == {"type": "scale", "scale": [v * 2**i for v in VS]}
    assert read_ome_zarr(path, level=2)[1] == tuple(v * 4 for v in VS)
    assert build_pyramid(path, n_levels=2) == shapes[:2]  # fewer levels: level 2 removed
    assert sorted(zarr.open_group(path, mode="r").keys()) == ["0", "1"]
    raises_one_line("p.zarr", read_ome_zarr, path, level=2)


def test_build_pyramid_integer_rounding_and_labels(tmp_path):
    labels = np.zeros((4, 6, 6), np.uint16)
    labels[:, :3, :3] = 7
    labels[:, 3:, 3:] = 9
    labels[0, 0, 0] = 1
    path = tmp_path / "l.zarr"
    _, a = create_ome_zarr(path, labels.shape, labels.dtype, (2, 3, 3), VS)
    a[:] = labels
    build_pyramid(path, method="nearest")
    g = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(g["1"][:], labels[::2, ::2, ::2])
    assert g["1"].dtype == np.uint16
    assert set(np.unique(g["1"][:])) <= set(np.unique(labels))
    assert len(g["1"].attrs) == 0 and "translation" not in json.dumps(dict(g.attrs))

    build_pyramid(path, method="mean")  # replaces level 1
    level1 = zarr.open_group(path, mode="r")["1"][:]
    assert level1.dtype == np.uint16 and level1[0, 0, 0] == round((7 * 7 + 1) / 8)
    ms = zarr.open_group(path, mode="r").attrs["ome"]["multiscales"][0]
    assert ms["type"] == "mean"
    assert ms["datasets"][1]["coordinateTransformations"][1] == {
        "type": "translation", "translation": [v / 2 for v in VS]}


def test_build_pyramid_blocks_stay_within_budget(tmp_path, monkeypatch):
    import isonet.storage.omezarr as storage

    monkeypatch.setattr(storage, "PYRAMID_BLOCK_BYTES", 8 * 1 * 4 * 4 * 4)  # one 1x4x4 uint32 chunk per block
    blocks = list(storage._pyramid_blocks((2, 9, 10), (1, 4, 4), (2, 2, 2), 4))
    assert len(blocks) == 2 * 3 * 3
    assert all(b.stop - b.start <= c for block in blocks for b, c in zip(block, (1, 4, 4)))
    data = np.arange(3 * 17 * 19, dtype=np.uint32).reshape(3, 17, 19)
    path = tmp_path / "b.zarr"
    _, a = create_ome_zarr(path, data.shape, data.dtype, (1, 4, 4), VS)
    a[:] = data
    build_pyramid(path, method="nearest")
    np.testing.assert_array_equal(zarr.open_group(path, mode="r")["1"][:], data[::2, ::2, ::2])
    build_pyramid(path, method="mean")
    level1 = zarr.open_group(path, mode="r")["1"][:]
    assert level1[1, 8, 9] == round(data[2:, 16:, 18:].mean()) and level1[0, 1, 1] == round(data[:2, 2:4, 2:4].mean())


# ---------------------------------------------------------------------------------------------
# checksummed chunks and reads that name a damaged chunk


def _pyramid_store(path, data, chunks=(2, 8, 8), provenance=None):
    _, a = create_ome_zarr(path, data.shape, data.dtype, chunks, VS, provenance=provenance)
    a[:] = data
    build_pyramid(path, n_levels=2)
    return path


def test_every_level_is_checksummed_and_stores_empty_chunks(tmp_path):
    data = np.zeros((4, 16, 16), np.uint16)
    data[2:, 8:, 8:] = 3
    path = _pyramid_store(tmp_path / "e.zarr", data)
    for level, n_chunks in (("0", 8), ("1", 1)):
        meta = json.loads((path / level / "zarr.json").read_text())
        assert [c["name"] for c in meta["codecs"]] == ["bytes", "zstd", "crc32c"]
        assert len([p for p in (path / level / "c").rglob("*") if p.is_file()]) == n_chunks
    assert json.loads((path / "zarr.json").read_text())["attributes"]["isonet"] == {}


def test_ome_zarr_readers_open_our_stores(tmp_path):
    """ome-zarr-py's reader (napari-ome-zarr's) and ome-zarr-models read the checksummed store."""
    ome_zarr_reader = pytest.importorskip("ome_zarr.reader")
    ome_zarr_io = pytest.importorskip("ome_zarr.io")
    ome_zarr_models = pytest.importorskip("ome_zarr_models")
    data = np.random.default_rng(2).integers(0, 60000, (6, 20, 18), dtype=np.uint16)
    path = _pyramid_store(tmp_path / "r.zarr", data, chunks=(4, 8, 8), provenance={"stage": "test"})
    (node,) = list(ome_zarr_reader.Reader(ome_zarr_io.parse_url(path))())
    np.testing.assert_array_equal(np.asarray(node.data[0]), data)
    np.testing.assert_array_equal(np.asarray(node.data[1]), zarr.open_array(path / "1")[:])
    assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]

    image = ome_zarr_models.open_ome_zarr(zarr.open_group(path, mode="r"))
    datasets = image.attributes.ome.multiscales[0].datasets
    assert [d.path for d in datasets] == ["0", "1"]
    assert datasets[0].coordinateTransformations[0].scale == list(VS)
    np.testing.assert_array_equal(zarr.open_group(path, mode="r")[datasets[0].path][:], data)


@pytest.mark.parametrize("selection,key", [
    ((slice(None),), "c/1/0/1"), ((3,), "c/1/0/1"), ((slice(2, 4), 5, slice(None, None, 3)), "c/1/0/1"),
    ((Ellipsis, slice(8, 16)), "c/1/0/1"), ((-1, slice(-8, None), 9), "c/1/1/1"),
])
def test_damaged_chunk_read_names_store_array_and_key(tmp_path, selection, key):
    data = np.random.default_rng(3).integers(0, 1000, (4, 16, 16), dtype=np.uint16)
    path = _pyramid_store(tmp_path / "d.zarr", data, provenance={"stage": "convert"})
    array, _ = read_ome_zarr(path)
    np.testing.assert_array_equal(array[selection], data[selection])  # sound: same values as zarr
    for k in ("c/1/0/1", "c/1/1/1"):
        blob = bytearray((path / "0" / k).read_bytes())
        blob[len(blob) // 2] ^= 1
        (path / "0" / k).write_bytes(bytes(blob))
    array, _ = read_ome_zarr(path)
    message = raises_one_line("d.zarr", array.__getitem__, selection)
    assert message == (f"{path}: chunk {key} of array '0' is damaged (checksum mismatch); run `isonet convert` "
                       f"again to rewrite {path} (`isonet verify {path}` lists every damaged chunk)")
    np.testing.assert_array_equal(array[:2], data[:2])  # sound chunks still read
    with pytest.raises(IndexError):  # a wrong selection is a programming error, not damage
        array[5]


def test_missing_chunk_read_and_stores_from_elsewhere(tmp_path):
    data = np.random.default_rng(4).integers(0, 1000, (4, 16, 16), dtype=np.uint16)
    path = _pyramid_store(tmp_path / "m.zarr", data)
    (path / "0" / "c" / "0" / "1" / "0").unlink()
    array, _ = read_ome_zarr(path)
    np.testing.assert_array_equal(array[:, :8], data[:, :8])
    assert "chunk c/0/1/0 of array '0' is missing (the store is incomplete); restore " in raises_one_line(
        "m.zarr", array.__getitem__, (slice(None), 8))
    # a plain zarr without checksums: an absent chunk is fill value, a truncated one does not decode
    plain = zarr.create_array(tmp_path / "p.zarr", shape=(4, 8), dtype="int32", chunks=(2, 8))
    plain[:2] = 7
    array, _ = read_ome_zarr(tmp_path / "p.zarr")
    assert array[:].sum() == 7 * 16
    blob = (tmp_path / "p.zarr" / "c" / "0" / "0").read_bytes()
    (tmp_path / "p.zarr" / "c" / "0" / "0").write_bytes(blob[:5])
    message = raises_one_line("p.zarr", array.__getitem__, slice(None))
    assert message.startswith(f"{tmp_path / 'p.zarr'}: chunk c/0/0 of array '/' is damaged, does not decode (")


# ---------------------------------------------------------------------------------------------
# reading volumes


def test_open_imagej_tiff_memmapped(tmp_path):
    data = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5)
    write_imagej(tmp_path / "a.tif", data, voxel_size=(1.5, 0.1625, 0.1625))
    volume, vs, close = open_volume(tmp_path / "a.tif")
    assert isinstance(volume, np.memmap) and volume.shape == (4, 6, 5)
    assert vs == pytest.approx((1.5, 0.1625, 0.1625), rel=1e-7)
    np.testing.assert_array_equal(volume[1:3], data[1:3])
    close()


@pytest.mark.parametrize("unit,scale", [("um", 1.0), ("\\u00B5m", 1.0), ("nm", 1e-3), ("mm", 1e3)])
def test_open_imagej_units(tmp_path, unit, scale):
    write_imagej(tmp_path / "u.tif", np.zeros((2, 3, 4), np.uint8), voxel_size=(3.0, 2.0, 1.0), unit=unit)
    _, vs, close = open_volume(tmp_path / "u.tif")
    close()
    assert vs == pytest.approx((3.0 * scale, 2.0 * scale, 1.0 * scale))


def test_open_compressed_tiff_lazily(tmp_path):
    data = np.random.default_rng(0).random((6, 20, 10)).astype(np.float32)
    write_imagej(tmp_path / "c.tif", data, compression="zlib")
    volume, vs, close = open_volume(tmp_path / "c.tif")
    assert not isinstance(volume, np.ndarray) and volume.shape == (6, 20, 10) and vs == VS
    np.testing.assert_array_equal(np.asarray(volume[2:5]), data[2:5])
    close()


def test_open_ome_tiff_5d_nanometres(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (1, 1, 3, 8, 9), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.ome.tif", data, metadata={
        "axes": "TCZYX", "PhysicalSizeZ": 800, "PhysicalSizeZUnit": "nm",
        "PhysicalSizeY": 100, "PhysicalSizeYUnit": "nm", "PhysicalSizeX": 100, "PhysicalSizeXUnit": "nm"})
    volume, vs, close = open_volume(tmp_path / "a.ome.tif")
    assert volume.shape == (3, 8, 9) and vs == pytest.approx((0.8, 0.1, 0.1))
    np.testing.assert_array_equal(np.asarray(volume[:]), data[0, 0])
    close()


def test_open_plain_zarr_squeezes_leading_axes(tmp_path):
    data = np.arange(2 * 3 * 4).reshape(1, 1, 2, 3, 4).astype(np.int32)
    zarr.create_array(tmp_path / "a.zarr", data=data, chunks=(1, 1, 1, 3, 4))
    volume, vs, close = open_volume(tmp_path / "a.zarr")
    assert isinstance(volume, SqueezedArray) and volume.shape == (2, 3, 4) and vs is None
    np.testing.assert_array_equal(volume[1], data[0, 0, 1])
    np.testing.assert_array_equal(volume[..., 1], data[0, 0, :, :, 1])
    np.testing.assert_array_equal(np.asarray(volume), data[0, 0])
    close()


def test_open_volume_rejects(tmp_path):
    raises_one_line("missing.tif", open_volume, tmp_path / "missing.tif")
    (tmp_path / "empty.tif").write_bytes(b"")
    raises_one_line("empty.tif", open_volume, tmp_path / "empty.tif")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + b"\xff" * 64)
    raises_one_line("junk.tif", open_volume, tmp_path / "junk.tif")
    (tmp_path / "text.tif").write_text("not a tiff\nat all\n")
    raises_one_line("text.tif", open_volume, tmp_path / "text.tif")
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((512, 512), np.uint16))
    message = raises_one_line("flat.tif", open_volume, tmp_path / "flat.tif")
    assert "2D (512, 512)" in message and "3D z-stack" in message
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 16, 16, 3), np.uint8), photometric="rgb")
    assert "RGB" in raises_one_line("rgb.tif", open_volume, tmp_path / "rgb.tif")
    tifffile.imwrite(tmp_path / "multi.ome.tif", np.zeros((2, 3, 8, 8), np.uint8), metadata={"axes": "CZYX"})
    assert "4D (2, 3, 8, 8)" in raises_one_line("multi.ome.tif", open_volume, tmp_path / "multi.ome.tif")
    (tmp_path / "a.png").write_bytes(b"x")
    raises_one_line("a.png", open_volume, tmp_path / "a.png")


def test_tiff_without_voxel_size(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((3, 4, 5), np.uint16), photometric="minisblack")
    volume, vs, close = open_volume(tmp_path / "plain.tif")
    assert volume.shape == (3, 4, 5) and vs is None
    close()
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((3, 4, 5), np.uint16), imagej=True, metadata={"axes": "ZYX"})
    _, vs, close = open_volume(tmp_path / "ij.tif")
    assert vs is None
    close()


# ---------------------------------------------------------------------------------------------
# TIFF export


@pytest.mark.parametrize("dtype,fmt,imagej", [
    ("uint16", "auto", True), ("float32", "imagej", True), ("uint32", "auto", False), ("uint8", "ome", False),
])
def test_export_tiff_round_trip(tmp_path, dtype, fmt, imagej):
    data = (np.random.default_rng(2).random((7, 12, 10)) * 200).astype(dtype)
    path = tmp_path / "src.zarr"
    _, a = create_ome_zarr(path, data.shape, data.dtype, (3, 12, 10), VS)
    a[:] = data
    out = export_tiff(a, tmp_path / "out.tif", VS, chunk_planes=3, tiff_format=fmt)
    assert visible(tmp_path) == ["out.tif", "src.zarr"]
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej == imagej and tif.is_ome == (not imagej)
        assert tif.is_bigtiff == (not imagej) and len(tif.pages) == 7
    volume, vs, close = open_volume(out)
    assert vs == pytest.approx(VS) and volume.dtype == data.dtype
    np.testing.assert_array_equal(np.asarray(volume[:]), data)
    close()


def test_export_tiff_imagej_rejects_unsupported_dtype(tmp_path):
    raises_one_line("x.tif", export_tiff, np.zeros((2, 3, 4), np.int64), tmp_path / "x.tif", VS, tiff_format="imagej")
    assert visible(tmp_path) == []
