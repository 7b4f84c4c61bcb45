"""`isonet verify`: every kind of damage listed, one line each, exit 1; a sound store passes."""

import json
import logging
import shutil

import numpy as np
import pytest
import tifffile
import zarr

from isonet.cli import main
from isonet.errors import InputError
from isonet.stages.convert import convert
from isonet.stages.verify import verify_store
from isonet.storage import create_ome_zarr

VS = (1.0, 0.25, 0.25)
SHAPE, CHUNKS = (12, 40, 40), (4, 16, 16)  # level 0: 3x3x3 chunks; level 1 (6, 20, 20): 2x2x2


def truncate(f):
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def flip_bit(f):
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x08
    f.write_bytes(bytes(data))


def empty(f):
    f.write_bytes(b"")


def delete(f):
    f.unlink()


DAMAGE = {truncate: "damaged (checksum mismatch)", flip_bit: "damaged (checksum mismatch)",
          empty: "damaged (checksum mismatch)", delete: "missing"}


@pytest.fixture(scope="module")
def sound(tmp_path_factory):
    """A store written by `isonet convert` (random data: no chunk compresses to nothing)."""
    d = tmp_path_factory.mktemp("sound")
    data = np.random.default_rng(0).integers(0, 4000, SHAPE, dtype=np.uint16)
    data[:4, :16, :16] = 0  # a chunk of fill value: stored all the same
    tifffile.imwrite(d / "in.tif", data, imagej=True, resolution=(1 / VS[2], 1 / VS[1]),
                     metadata={"axes": "ZYX", "spacing": VS[0], "unit": "um"})
    convert(d / "in.tif", d / "img.zarr", chunks=CHUNKS, n_levels=2, log=lambda m: None)
    return d / "img.zarr"


@pytest.fixture
def store(sound, tmp_path):
    copy = tmp_path / "img.zarr"
    shutil.copytree(sound, copy)
    return copy


def test_sound_store_passes_with_summary_and_progress(sound, capsys, caplog):
    assert (sound / "0" / "c" / "0" / "0" / "0").is_file()  # the all-zero chunk is stored
    with caplog.at_level(logging.INFO):
        assert main(["verify", str(sound)]) == 0
    out = capsys.readouterr().out
    assert out == "2 arrays, 35 chunks verified, no problems\n"
    assert any("verify: chunks: 35/35 (100 %)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("damage", list(DAMAGE), ids=lambda f: f.__name__)
def test_each_kind_of_chunk_damage_is_listed(store, damage, capsys):
    damage(store / "0" / "c" / "1" / "2" / "0")
    report = verify_store(store, log=lambda m: None)
    assert report["problems"] == [f"{store}: array '0' chunk c/1/2/0: {DAMAGE[damage]}"]
    assert report["chunks"] == 35
    assert main(["verify", str(store)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == report["problems"][0]
    assert lines[1].startswith("2 arrays, 35 chunks checked, 1 problem(s); run `isonet convert` again")


def test_every_problem_is_listed(store, capsys):
    damaged = {("0", "c/0/0/1"): truncate, ("0", "c/2/2/2"): flip_bit, ("0", "c/1/1/1"): delete,
               ("1", "c/1/0/1"): flip_bit, ("1", "c/0/1/0"): empty}
    for (array, key), damage in damaged.items():
        damage(store / array / key)
    assert main(["verify", str(store)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(damaged) + 1
    assert sorted(lines[:-1]) == sorted(
        f"{store}: array '{a}' chunk {k}: {DAMAGE[d]}" for (a, k), d in damaged.items()
    )
    assert "5 problem(s)" in lines[-1]


def test_every_chunk_of_every_level_is_checked(store):
    """A bit flipped in every chunk of both levels: all 35 listed, each by its key."""
    expected = []
    for array in ("0", "1"):
        for chunk in sorted(p for p in (store / array / "c").rglob("*") if p.is_file()):
            flip_bit(chunk)
            key = chunk.relative_to(store / array).as_posix()
            expected.append(f"{store}: array '{array}' chunk {key}: damaged (checksum mismatch)")
    assert len(expected) == 35
    assert verify_store(store, log=lambda m: None)["problems"] == expected


@pytest.mark.parametrize("metadata", ["zarr.json", "0/zarr.json", "1/zarr.json"])
def test_garbage_metadata_is_listed(store, metadata, capsys):
    (store / metadata).write_text('{"zarr_format": 3, "node_type": "gr')
    assert main(["verify", str(store)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{store / metadata}: zarr metadata")
    assert "damaged" in lines[0] and len(lines) == 2


def test_inconsistent_multiscales_are_listed(store):
    group = zarr.open_group(store, mode="r+")
    ome = group.attrs.asdict()["ome"]
    ome["multiscales"][0]["datasets"].append({"path": "2", "coordinateTransformations": [
        {"type": "scale", "scale": [4.0, 1.0, 1.0]}]})
    group.update_attributes({"ome": ome})
    shutil.rmtree(store / "1")
    group.create_array("1", shape=(6, 21, 20), dtype="uint8", chunks=(4, 16, 16), fill_value=0)[:] = 1
    problems = verify_store(store, log=lambda m: None)["problems"]
    assert f"{store}: level 1 array '1' has dtype uint8, level 0 uint16" in problems
    assert any(p.startswith(f"{store}: level 1 array '1' has shape (6, 21, 20), but level 0 (12, 40, 40)")
               for p in problems)
    assert f"{store}: level 2 array '2' is listed in the multiscales metadata but missing" in problems
    assert len(problems) == 3


def test_multiscales_axes_and_scales_are_checked(store):
    group = zarr.open_group(store, mode="r+")
    ome = group.attrs.asdict()["ome"]
    ome["multiscales"][0]["axes"] = [{"name": n, "type": "space"} for n in ("t", "y", "x")]
    ome["multiscales"][0]["datasets"][1]["coordinateTransformations"] = [{"type": "scale", "scale": [1, -1]}]
    group.update_attributes({"ome": ome})
    problems = verify_store(store, log=lambda m: None)["problems"]
    assert problems[0].startswith(f"{store}: multiscales axes")
    assert problems[1] == f"{store}: level 1 array '1': no valid scale transformation (one positive value per axis)"
    assert len(problems) == 2
    group.update_attributes({"ome": {"version": "0.5"}})
    assert verify_store(store, log=lambda m: None)["problems"] == [
        f"{store}: no OME-Zarr multiscales metadata in the group attributes"]


def test_reads_one_chunk_at_a_time(store, monkeypatch):
    largest = []
    getitem = zarr.Array.__getitem__

    def spy(self, selection):
        out = getitem(self, selection)
        largest.append(np.asarray(out).size)
        return out

    monkeypatch.setattr(zarr.Array, "__getitem__", spy)
    assert verify_store(store, log=lambda m: None)["problems"] == []
    assert len(largest) == 35 and max(largest) == np.prod(CHUNKS)


def test_stores_from_elsewhere(tmp_path):
    """Without checksums or isonet's attribute, an absent chunk is fill value; v2 keys are named."""
    plain = zarr.create_array(tmp_path / "v2.zarr", shape=(4, 8, 8), dtype="int16", chunks=(2, 8, 8), zarr_format=2)
    plain[:2] = 5
    report = verify_store(tmp_path / "v2.zarr", log=lambda m: None)
    assert report["problems"] == [] and report["absent"] == 1 and report["unchecksummed"] == ["/"]
    assert report["summary"] == "1 arrays, 2 chunks verified, no problems (1 chunks not stored, read as fill value)"
    truncate(tmp_path / "v2.zarr" / "0.0.0")
    (problem,) = verify_store(tmp_path / "v2.zarr", log=lambda m: None)["problems"]
    assert problem.startswith(f"{tmp_path / 'v2.zarr'}: array '/' chunk 0.0.0: damaged, does not decode (")

    _, a = create_ome_zarr(tmp_path / "sharded.zarr", (8, 32, 32), "uint16", (2, 16, 16), VS, shards=(4, 32, 32))
    a[:] = 3
    assert verify_store(tmp_path / "sharded.zarr", log=lambda m: None)["summary"] == \
        "1 arrays, 2 chunks verified, no problems"
    flip_bit(tmp_path / "sharded.zarr" / "0" / "c" / "1" / "0" / "0")
    assert verify_store(tmp_path / "sharded.zarr", log=lambda m: None)["problems"] == [
        f"{tmp_path / 'sharded.zarr'}: array '0' chunk c/1/0/0: damaged (checksum mismatch)"]


def test_not_a_store(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope.zarr")]) == 2
    assert "nope.zarr: no such file" in capsys.readouterr().err
    (tmp_path / "dir.zarr").mkdir()
    assert verify_store(tmp_path / "dir.zarr", log=lambda m: None)["problems"] == [
        f"{tmp_path / 'dir.zarr'}: not a zarr store (no zarr.json, .zgroup or .zarray)"]
    with pytest.raises(InputError):
        verify_store(tmp_path / "missing")
    assert json.loads(json.dumps(verify_store(tmp_path / "dir.zarr", log=lambda m: None)))


# ---------------------------------------------------------------------------------------------
# reading a damaged store through a stage: exit 2, one line naming store, array and chunk key


def _stage_args(name, store, out):
    """Command line of stage ``name`` reading ``store`` first, writing into the folder ``out``."""
    return {
        "patches": ["patches", str(store), str(out / "psf.npz"), str(out / "patches.npz"), "--patch-size", "16"],
        "convert": ["convert", str(store), str(out / "again.zarr")],
        "stitch": ["stitch", str(store), str(out / "final.zarr"), "--tiff", str(out / "final.tif")],
        "segment": ["segment", str(store), str(out / "labels.zarr")],
        "evaluate": ["evaluate", str(store), str(store), str(store), str(out / "m.json"), str(out / "m.md")],
        "export-tiff": ["export-tiff", str(store), str(out / "x.tif")],
        "orthoviews": ["orthoviews", str(out / "o.png"), "--input", str(store), "--restored", str(store)],
    }[name]


def _one_error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("stage", ["patches", "convert", "stitch", "segment", "evaluate", "export-tiff",
                                   "orthoviews"])
def test_stages_name_the_damaged_chunk(store, tmp_path, stage, capsys):
    import re

    damaged = [p for p in (store / "0" / "c").rglob("*") if p.is_file()]
    for chunk in damaged:
        flip_bit(chunk)
    out = tmp_path / "out"
    out.mkdir()
    np.savez(out / "psf.npz", kernel=np.ones((3, 3)) / 9)
    before = sorted(p.name for p in out.iterdir())
    assert main(["--log-level", "ERROR", *_stage_args(stage, store, out)]) == 2
    line = _one_error_line(capsys)
    m = re.fullmatch(rf"isonet {stage}: error: {re.escape(str(store))}: chunk (c/\d/\d/\d) of array '0' is damaged "
                     rf"\(checksum mismatch\); run `isonet convert` again to rewrite {re.escape(str(store))} "
                     rf"\(`isonet verify {re.escape(str(store))}` lists every damaged chunk\)", line)
    assert m, line
    assert store / "0" / m.group(1) in damaged
    assert sorted(p.name for p in out.iterdir()) == before  # no output, not even a temporary one


def test_stages_name_a_missing_chunk_and_damaged_metadata(store, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    np.savez(out / "psf.npz", kernel=np.ones((3, 3)) / 9)
    (store / "0" / "c" / "2" / "1" / "0").unlink()
    assert main(["--log-level", "ERROR", *_stage_args("patches", store, out)]) == 2
    assert _one_error_line(capsys).startswith(
        f"isonet patches: error: {store}: chunk c/2/1/0 of array '0' is missing (the store is incomplete); "
        "run `isonet convert` again")
    (store / "0" / "zarr.json").write_text("{garbage")
    assert main(["--log-level", "ERROR", *_stage_args("patches", store, out)]) == 2
    assert _one_error_line(capsys).startswith(
        f"isonet patches: error: {store / '0' / 'zarr.json'}: zarr metadata of level 0 is damaged (")
    (store / "zarr.json").write_text("{garbage")
    assert main(["--log-level", "ERROR", *_stage_args("patches", store, out)]) == 2
    assert _one_error_line(capsys).startswith(
        f"isonet patches: error: {store / 'zarr.json'}: zarr metadata is damaged (")
    assert not (out / "patches.npz").exists()


def test_predict_names_the_damaged_chunk(store, tmp_path, capsys):
    """The issue's case: a truncated input chunk given to `isonet predict`."""
    import torch

    from isonet.modelfile import save_model
    from isonet.nets import build_network
    from isonet.patches import Normalization

    torch.manual_seed(0)
    save_model(tmp_path / "m.pt", build_network("isonet2"), "isonet2", 4, Normalization(0.0, 4000.0), dropout=0.2)
    truncate(store / "0" / "c" / "1" / "1" / "1")
    out = tmp_path / "restored.zarr"
    args = ["--log-level", "ERROR", "predict", str(store), str(tmp_path / "m.pt"), str(out), "--threads", "1"]
    assert main(args) == 2
    assert _one_error_line(capsys) == (
        f"isonet predict: error: {store}: chunk c/1/1/1 of array '0' is damaged (checksum mismatch); "
        f"run `isonet convert` again to rewrite {store} (`isonet verify {store}` lists every damaged chunk)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.zarr", "m.pt"]  # not even <output>.partial
