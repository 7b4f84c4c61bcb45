import hashlib
import json
import os

import numpy as np
import pytest
import tifffile
import zarr

from isonet.stages.convert import convert, stored_dtype
from isonet.storage import create_ome_zarr, open_volume, read_ome_zarr
from _assertions import raises_one_line, skip_if_permissions_ignored

VS = (2.0, 0.25, 0.25)
CHUNKS = (4, 16, 16)


def write_imagej(path, data, voxel_size=VS):
    tifffile.imwrite(
        path, data, imagej=True, resolution=(1 / voxel_size[2], 1 / voxel_size[1]),
        metadata={"axes": "ZYX", "spacing": voxel_size[0], "unit": "micron"},
    )


def visible(directory):
    return sorted(p.name for p in directory.iterdir())


def volume(dtype, shape=(13, 40, 35), seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_imagej_tiff_round_trip(tmp_path, dtype):
    data = volume(dtype)
    write_imagej(tmp_path / "in.tif", data)
    lines = []
    summary = convert(tmp_path / "in.tif", tmp_path / "out.zarr", chunks=CHUNKS, log=lines.append)
    assert summary["shape"] == data.shape and summary["dtype"] == dtype
    assert summary["voxel_size"] == VS and summary["chunks"] == CHUNKS
    assert summary["level_shapes"] == [(13, 40, 35), (7, 20, 18)]
    assert [m for m in lines if "planes" in m] == [f"convert: planes {z}/13" for z in (4, 8, 12, 13)]
    assert visible(tmp_path) == ["in.tif", "out.zarr"]

    array, vs = read_ome_zarr(tmp_path / "out.zarr")
    assert vs == VS and array.dtype == np.dtype(dtype) and array.chunks == CHUNKS
    np.testing.assert_array_equal(array[:], data)  # bit-exact

    root = json.loads((tmp_path / "out.zarr" / "zarr.json").read_text())
    ome = root["attributes"]["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert ms["axes"] == [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1"]
    assert ms["datasets"][0]["coordinateTransformations"][0] == {"type": "scale", "scale": list(VS)}
    assert ms["datasets"][1]["coordinateTransformations"][0] == {"type": "scale", "scale": [4.0, 0.5, 0.5]}
    assert root["attributes"]["isonet"]["stage"] == "convert"

    level1, vs1 = read_ome_zarr(tmp_path / "out.zarr", level=1)
    assert level1.shape == (7, 20, 18) and vs1 == (4.0, 0.5, 0.5) and level1.dtype == np.dtype(dtype)
    np.testing.assert_allclose(level1[0, 0, 0], data[:2, :2, :2].mean(), rtol=1e-5, atol=0.5)
    for level in ("0", "1"):
        meta = json.loads((tmp_path / "out.zarr" / level / "zarr.json").read_text())
        assert "zstd" in [c["name"] for c in meta["codecs"]]
        assert meta["dimension_names"] == ["z", "y", "x"]


def test_ome_tiff_nanometres_and_5d_squeezed(tmp_path):
    data = volume("uint16", (1, 1, 6, 20, 24))
    tifffile.imwrite(tmp_path / "in.ome.tif", data, compression="zlib", metadata={
        "axes": "TCZYX", "PhysicalSizeZ": 1500, "PhysicalSizeZUnit": "nm",
        "PhysicalSizeY": 162.5, "PhysicalSizeYUnit": "nm", "PhysicalSizeX": 162.5, "PhysicalSizeXUnit": "nm"})
    summary = convert(tmp_path / "in.ome.tif", tmp_path / "out.zarr", chunks=(4, 8, 8))
    assert summary["shape"] == (6, 20, 24)
    assert summary["voxel_size"] == pytest.approx((1.5, 0.1625, 0.1625))
    array, vs = read_ome_zarr(tmp_path / "out.zarr")
    np.testing.assert_array_equal(array[:], data[0, 0])


def test_ome_zarr_input(tmp_path):
    data = volume("uint8", (5, 12, 12))
    _, a = create_ome_zarr(tmp_path / "in.zarr", data.shape, data.dtype, (5, 12, 12), VS)
    a[:] = data
    summary = convert(tmp_path / "in.zarr", tmp_path / "out.zarr", chunks=(2, 8, 8), n_levels=3)
    assert summary["voxel_size"] == VS and summary["level_shapes"] == [(5, 12, 12), (3, 6, 6), (2, 3, 3)]
    array, _ = read_ome_zarr(tmp_path / "out.zarr")
    assert array.chunks == (2, 8, 8)
    np.testing.assert_array_equal(array[:], data)


def test_voxel_size_argument_overrides_and_fills_in(tmp_path):
    data = volume("uint16", (4, 8, 8))
    tifffile.imwrite(tmp_path / "plain.tif", data, photometric="minisblack")
    message = raises_one_line("plain.tif", convert, tmp_path / "plain.tif", tmp_path / "out.zarr")
    assert "voxel_size" in message
    assert not (tmp_path / "out.zarr").exists()
    summary = convert(tmp_path / "plain.tif", tmp_path / "out.zarr", voxel_size=[1, 0.1, 0.1])
    assert summary["voxel_size"] == (1.0, 0.1, 0.1) and summary["voxel_size_source"] == "argument"
    write_imagej(tmp_path / "ij.tif", data)
    summary = convert(tmp_path / "ij.tif", tmp_path / "out.zarr", voxel_size=(3, 0.3, 0.3))
    assert read_ome_zarr(tmp_path / "out.zarr")[1] == (3.0, 0.3, 0.3)
    raises_one_line("ij.tif", convert, tmp_path / "ij.tif", tmp_path / "bad.zarr", voxel_size=(0, 1, 1))


def test_rejects_bad_inputs(tmp_path):
    out = tmp_path / "out.zarr"
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((64, 64), np.uint16))
    assert "2D" in raises_one_line("flat.tif", convert, tmp_path / "flat.tif", out, voxel_size=VS)
    raises_one_line("missing.tif", convert, tmp_path / "missing.tif", out, voxel_size=VS)
    (tmp_path / "empty.tif").write_bytes(b"")
    raises_one_line("empty.tif", convert, tmp_path / "empty.tif", out, voxel_size=VS)
    nan = np.ones((9, 8, 8), np.float32)
    nan[6, 3, 3] = np.nan
    write_imagej(tmp_path / "nan.tif", nan)
    assert "NaN values at z=6" in raises_one_line("nan.tif", convert, tmp_path / "nan.tif", out, chunks=(4, 8, 8))
    inf = np.ones((3, 8, 8), np.float32)
    inf[1, 0, 0] = -np.inf
    write_imagej(tmp_path / "inf.tif", inf)
    assert "infinite values at z=1" in raises_one_line("inf.tif", convert, tmp_path / "inf.tif", out)
    zarr.create_array(tmp_path / "complex.zarr", data=np.zeros((2, 3, 4), np.complex64))
    raises_one_line("complex.zarr", convert, tmp_path / "complex.zarr", out, voxel_size=VS)
    write_imagej(tmp_path / "ok.tif", np.zeros((2, 4, 4), np.uint8))
    raises_one_line("ok.tif", convert, tmp_path / "ok.tif", tmp_path / "ok.tif")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unwritable_output_location(tmp_path):
    write_imagej(tmp_path / "in.tif", np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "file.txt").write_text("x")
    message = raises_one_line("out.zarr", convert, tmp_path / "in.tif", tmp_path / "file.txt" / "out.zarr")
    assert "file.txt" in message


def test_read_only_output_directory(tmp_path):
    write_imagej(tmp_path / "in.tif", np.zeros((2, 4, 4), np.uint8))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        skip_if_permissions_ignored(locked)
        raises_one_line("out.zarr", convert, tmp_path / "in.tif", locked / "out.zarr")
    finally:
        locked.chmod(0o755)


def test_input_is_not_modified(tmp_path):
    for name, kwargs in (("raw.tif", {}), ("packed.tif", {"compression": "zlib"})):
        path = tmp_path / name
        tifffile.imwrite(path, volume("uint16", (6, 16, 16)), imagej=True, resolution=(4, 4),
                         metadata={"axes": "ZYX", "spacing": 2, "unit": "um"}, **kwargs)
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
        before = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns
        convert(path, tmp_path / f"{name}.zarr", chunks=(2, 8, 8))
        assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


def test_failed_run_keeps_previous_output(tmp_path):
    good = volume("float32", (4, 8, 8))
    write_imagej(tmp_path / "in.tif", good)
    convert(tmp_path / "in.tif", tmp_path / "out.zarr", chunks=(2, 8, 8))
    bad = good.copy()
    bad[3, 0, 0] = np.nan  # in the second slab: the first slab was already written
    write_imagej(tmp_path / "in.tif", bad)
    raises_one_line("in.tif", convert, tmp_path / "in.tif", tmp_path / "out.zarr", chunks=(2, 8, 8))
    assert visible(tmp_path) == ["in.tif", "out.zarr"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    np.testing.assert_array_equal(read_ome_zarr(tmp_path / "out.zarr")[0][:], good)


def test_bool_stored_as_uint8_and_chunks_clipped(tmp_path):
    mask = np.zeros((1, 1, 3, 5, 6), bool)
    mask[..., 1:, 2:] = True
    zarr.create_array(tmp_path / "mask.zarr", data=mask)
    summary = convert(tmp_path / "mask.zarr", tmp_path / "out.zarr", voxel_size=VS)
    assert summary["dtype"] == "uint8" and summary["chunks"] == (3, 5, 6)
    array, _ = read_ome_zarr(tmp_path / "out.zarr")
    np.testing.assert_array_equal(array[:], mask[0, 0].astype(np.uint8))
    assert stored_dtype(">f4", "x") == np.dtype("float32")


def test_converted_store_opens_as_volume(tmp_path):
    data = volume("uint16", (5, 9, 7))
    write_imagej(tmp_path / "in.tif", data)
    convert(tmp_path / "in.tif", tmp_path / "out.zarr", chunks=(2, 4, 4))
    v, vs, close = open_volume(tmp_path / "out.zarr")
    assert vs == VS
    np.testing.assert_array_equal(np.asarray(v[1:4]), data[1:4])
    close()


def test_big_endian_imagej_tiff(tmp_path):
    # Fiji saves TIFFs big-endian; the store holds native byte order
    data = volume("uint16", (3, 6, 7))
    tifffile.imwrite(tmp_path / "be.tif", data, byteorder=">", imagej=True, resolution=(4, 4),
                     metadata={"axes": "ZYX", "spacing": 2.0, "unit": "micron"})
    summary = convert(tmp_path / "be.tif", tmp_path / "out.zarr")
    assert summary["dtype"] == "uint16" and summary["voxel_size"] == VS
    array, _ = read_ome_zarr(tmp_path / "out.zarr")
    assert array.dtype == np.dtype("uint16")
    np.testing.assert_array_equal(array[:], data)


def digest(path):
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(str(p.relative_to(path.parent)).encode() + p.read_bytes() for p in files)).hexdigest()


def refused(tmp_path, source, *args, **kwargs):
    """convert must refuse `source` in one line naming it, write nothing, leave it byte-identical."""
    before = digest(source)
    out = tmp_path / "refused.zarr"
    message = raises_one_line(source.name, convert, source, out, *args, **kwargs)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert digest(source) == before
    return message


def test_constant_volume_refused(tmp_path):
    # near-constant volumes pass convert; the patches stage refuses them (test_cli)
    write_imagej(tmp_path / "const.tif", np.full((9, 8, 8), 7, np.uint16))
    assert "every voxel has the value 7" in refused(tmp_path, tmp_path / "const.tif", chunks=(4, 8, 8))
    write_imagej(tmp_path / "zeros.tif", np.zeros((3, 8, 8), np.float32))
    assert "every voxel has the value 0.0" in refused(tmp_path, tmp_path / "zeros.tif")


def test_int64_and_float16_tiffs(tmp_path):
    for dtype in ("int64", "float16"):
        data = volume(dtype if dtype != "float16" else "float32", (5, 8, 9)).astype(dtype)
        tifffile.imwrite(tmp_path / f"{dtype}.tif", data)
        summary = convert(tmp_path / f"{dtype}.tif", tmp_path / f"{dtype}.zarr", voxel_size=VS)
        assert summary["dtype"] == dtype
        np.testing.assert_array_equal(read_ome_zarr(tmp_path / f"{dtype}.zarr")[0][:], data)


def test_truncated_tiffs_refused(tmp_path):
    write_imagej(tmp_path / "whole.tif", volume("uint16", (8, 32, 32)))
    tifffile.imwrite(tmp_path / "tiled.tif", volume("uint16", (8, 32, 32)), compression="zlib", tile=(16, 16))
    for name in ("whole.tif", "tiled.tif"):
        raw = (tmp_path / name).read_bytes()
        for cut in (4, 8, 100, len(raw) // 3, len(raw) // 2) + ((len(raw) - 10,) if name == "tiled.tif" else ()):
            cut_file = tmp_path / f"cut{cut}-{name}"
            cut_file.write_bytes(raw[:cut])
            message = refused(tmp_path, cut_file, voxel_size=VS)
            assert "truncated" in message or "not a readable TIFF" in message or "holds no image" in message \
                or "damaged or incomplete" in message, message


def test_three_pixel_wide_tiff_is_named_by_its_samples(tmp_path):
    tifffile.imwrite(tmp_path / "narrow.tif", volume("uint16", (16, 64, 3)))  # tifffile stores it as RGB
    assert "3 samples per pixel" in refused(tmp_path, tmp_path / "narrow.tif", voxel_size=VS)


def test_damaged_zarr_refused(tmp_path):
    def ome(name):
        path = tmp_path / name
        _, level0 = create_ome_zarr(path, (4, 8, 8), "uint16", (2, 8, 8), VS)
        level0[:] = volume("uint16", (4, 8, 8))
        return path

    ome("cut-group.zarr")
    text = (tmp_path / "cut-group.zarr" / "zarr.json").read_text()
    (tmp_path / "cut-group.zarr" / "zarr.json").write_text(text[: len(text) // 2])
    assert "zarr metadata is damaged" in refused(tmp_path, tmp_path / "cut-group.zarr")
    ome("cut-array.zarr")
    (tmp_path / "cut-array.zarr" / "0" / "zarr.json").write_bytes(b"\x00\xff{")
    assert "zarr metadata of level 0 is damaged" in refused(tmp_path, tmp_path / "cut-array.zarr")
    for name, key, value in (("datasets.zarr", "datasets", "0"), ("axes.zarr", "axes", [{"name": ["z"]}] * 3)):
        group = zarr.open_group(ome(name), mode="r+")
        attrs = dict(group.attrs)
        attrs["ome"]["multiscales"][0][key] = value
        group.attrs.put(attrs)
        refused(tmp_path, tmp_path / name)
    chunk = next(p for p in sorted((ome("chunk.zarr") / "0").rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:5])
    assert "chunk c/0/0/0 of array '0' is damaged" in refused(tmp_path, tmp_path / "chunk.zarr")
    zarr.create_array(tmp_path / "empty.zarr", shape=(0, 8, 8), dtype="uint16")
    assert "holds no pixels" in refused(tmp_path, tmp_path / "empty.zarr", voxel_size=VS)


def test_output_paths_that_are_not_replaced(tmp_path):
    write_imagej(tmp_path / "in.tif", volume("uint16", (2, 4, 4)))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert "not a Zarr store" in raises_one_line("mine", convert, tmp_path / "in.tif", mine)
    assert (mine / "notes.txt").read_text() == "keep"
    (tmp_path / "file.zarr").write_text("x")
    raises_one_line("file.zarr", convert, tmp_path / "in.tif", tmp_path / "file.zarr")
    assert (tmp_path / "file.zarr").read_text() == "x"
    convert(tmp_path / "in.tif", tmp_path / "a.zarr")
    before = digest(tmp_path / "a.zarr")
    assert "inside the input" in raises_one_line("a.zarr", convert, tmp_path / "a.zarr", tmp_path / "a.zarr" / "b.zarr")
    assert digest(tmp_path / "a.zarr") == before


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc, where writes fail even for root")
def test_write_failure_is_one_line_with_exit_status_1(tmp_path, capsys):
    from isonet.cli import main

    write_imagej(tmp_path / "in.tif", volume("uint16", (2, 4, 4)))
    assert main(["convert", str(tmp_path / "in.tif"), "/proc/isonet.zarr"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith("isonet convert: error: /proc/") and "run the same command again" in err[0]


def test_ome_zarr_with_spatial_axes_out_of_order_refused(tmp_path):
    group = zarr.open_group(tmp_path / "xyz.zarr", mode="w")
    group.create_array("0", data=volume("uint16", (4, 6, 8)))
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "xyz"],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.25, 0.25, 2.0]}]}],
    }]}
    assert "order x, y, z" in refused(tmp_path, tmp_path / "xyz.zarr")
