import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from isonet.cli import main
from isonet.modelfile import load_model, save_model
from isonet.nets import build_network
from isonet.patches import Normalization


def _run(args):
    return subprocess.run([sys.executable, "-m", "isonet.cli", *args], capture_output=True, text=True)


def test_bad_input_gives_one_line_error_and_exit_2(tmp_path):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((64, 64), np.uint16))
    r = _run(["convert", str(flat), str(tmp_path / "out.zarr")])
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if "error" in l]
    assert len(lines) == 1 and "flat.tif" in lines[0] and "3D" in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out.zarr").exists()


def test_missing_file(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.tif"), str(tmp_path / "o.zarr")]) == 2
    err = capsys.readouterr().err
    assert "nope.tif" in err and err.count("\n") <= 2


def test_model_file_roundtrip_and_errors(tmp_path):
    net = build_network("isonet2", seed=0, zero_init=False)
    save_model(tmp_path / "m.pt", net, "isonet2", 4, Normalization(1.0, 9.0), dropout=0.2)
    loaded, meta = load_model(tmp_path / "m.pt")
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net.eval()(x))
    assert meta["factor"] == 4 and meta["normalization"] == Normalization(1.0, 9.0)
    assert meta["halo"] >= net.receptive_radius
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    from isonet.errors import InputError

    with pytest.raises(InputError, match="bad.pt"):
        load_model(bad)
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_non_integer_anisotropy_is_kept_exact():
    from isonet.errors import InputError
    from isonet.stages.common import axial_factor

    assert axial_factor((0.8, 0.2, 0.2)) == 4 and isinstance(axial_factor((0.8, 0.2, 0.2)), int)
    assert axial_factor((0.7, 0.2, 0.2), subsample=3) == 3
    assert axial_factor((0.7, 0.2, 0.2)) == 3.5  # not rounded
    assert axial_factor((0.9, 0.2, 0.2)) == 4.5 and axial_factor((1.3, 0.325, 0.325)) == 4
    assert axial_factor((1.0, 0.3, 0.3)) == 10 / 3 and axial_factor((1.0, 0.3, 0.3), subsample=10 / 3) == 10 / 3
    assert axial_factor((0.804, 0.2, 0.2)) == 4.02  # near an integer is not the integer
    with pytest.raises(InputError, match=r"z/x = 0.1/0.2 = 0.5 is below 1"):
        axial_factor((0.1, 0.2, 0.2))
    with pytest.raises(InputError, match="subsample must be a number >= 1"):
        axial_factor((0.8, 0.2, 0.2), subsample=0.5)


def _cli(argv, capsys):
    rc = main(["--log-level", "ERROR", *argv])
    return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _store(path, data, voxel_size=(2.0, 0.5, 0.5)):
    from isonet.storage import create_ome_zarr

    _, level0 = create_ome_zarr(path, data.shape, data.dtype, data.shape, voxel_size)
    level0[:] = data
    return path


def test_only_input_errors_become_one_line_exit_2(monkeypatch, capsys):
    import isonet.stages.convert
    from isonet.errors import InputError

    def fail(message, kind):
        def convert(*args, **kwargs):
            raise kind(message)
        return convert

    monkeypatch.setattr(isonet.stages.convert, "convert", fail("a.tif: bad\n  really bad", InputError))
    assert _cli(["convert", "a.tif", "b.zarr"], capsys) == (2, ["isonet convert: error: a.tif: bad really bad"])
    monkeypatch.setattr(isonet.stages.convert, "convert", fail("a bug", ValueError))
    with pytest.raises(ValueError, match="a bug"):  # a bug in isonet keeps its traceback
        main(["convert", "a.tif", "b.zarr"])


@pytest.fixture(scope="module")
def psf_npz(tmp_path_factory):
    from isonet.stages.psf import psf_stage

    d = tmp_path_factory.mktemp("psf")
    psf_stage(d / "psf.npz", d / "psf.json", "gaussian", {"sigma_xy": 0.8, "sigma_z": 1.5, "shape": [7, 5, 5]})
    return d / "psf.npz"


def test_patches_refuses_inputs_made_elsewhere(tmp_path, psf_npz, capsys):
    rng = np.random.default_rng(0)
    near = np.full((6, 32, 32), 7, np.uint16)
    near[2, 3, 4] = 9
    nan = rng.random((6, 32, 32)).astype(np.float32)
    nan[4, 1, 1] = np.nan
    cases = {
        "flat between its 1.0 and 99.8 percentiles": _store(tmp_path / "near.zarr", near),
        "too small for patch_size 16": _store(tmp_path / "small.zarr", rng.random((6, 12, 40)).astype(np.float32)),
        "NaN or infinite values at z=4": _store(tmp_path / "nan.zarr", nan),
        "without voxel sizes": zarr_array(tmp_path / "plain.zarr", rng.random((6, 32, 32)).astype(np.float32)),
    }
    out = tmp_path / "p.npz"
    for expected, store in cases.items():
        rc, lines = _cli(["patches", str(store), str(psf_npz), str(out), "--patch-size", "16"], capsys)
        assert rc == 2 and len(lines) == 1 and str(store) in lines[0] and expected in lines[0], lines
        assert not out.exists()
    good = _store(tmp_path / "good.zarr", rng.random((6, 32, 32)).astype(np.float32))
    for argv, expected in (
        ([str(good), str(tmp_path / "none.npz"), str(out)], "none.npz: PSF file not found"),
        ([str(good), str(psf_npz), str(out), "--patch-size", "10"], "patches.patch_size: 10 is not valid"),
        ([str(good), str(psf_npz), str(out), "--norm-percentiles", "99", "1"], "patches.norm_percentiles"),
        ([str(good), str(psf_npz), str(good / "p.npz")], "inside the input"),
    ):
        rc, lines = _cli(["patches", "--patch-size", "16", *argv], capsys)
        assert rc == 2 and len(lines) == 1 and expected in lines[0], lines
        assert not out.exists()


def zarr_array(path, data):
    import zarr

    zarr.create_array(path, data=data)
    return path


def test_later_stages_keep_directories_they_did_not_write(tmp_path, capsys):
    image = _store(tmp_path / "image.zarr", np.random.default_rng(0).random((4, 16, 16)).astype(np.float32))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    for argv in (["predict", str(image), str(tmp_path / "m.pt"), str(mine)], ["stitch", str(image), str(mine)],
                 ["segment", str(image), str(mine)], ["export-tiff", str(image), str(mine)]):
        rc, lines = _cli(argv, capsys)
        assert rc == 2 and len(lines) == 1 and str(mine) in lines[0], lines
        assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_train_refuses_damaged_patch_files(tmp_path, capsys):
    (tmp_path / "psf.json").write_text("{}")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 cut short")
    np.savez(tmp_path / "nox.npz", Y=np.zeros((2, 8, 8)))
    for name, expected in (("none.npz", "patches file not found"), ("bad.npz", "not a readable patches file"),
                           ("nox.npz", "not a readable patches file")):
        rc, lines = _cli(["train", str(tmp_path / name), str(tmp_path / "psf.json"), str(tmp_path / "m.pt"),
                          str(tmp_path / "c.tsv")], capsys)
        assert rc == 2 and len(lines) == 1 and name in lines[0] and expected in lines[0], lines
        assert not (tmp_path / "m.pt").exists()


def test_bad_argument_values_are_one_line_usage_errors(capsys):
    for argv, expected in (
        (["predict", "a.zarr", "m.pt", "o.zarr", "--chunks", "0", "8", "8"], "--chunks: '0' is not a positive integer"),
        (["predict", "a.zarr", "m.pt", "o.zarr", "--batch-size", "0"], "'0' is not a positive integer or auto"),
        (["predict", "a.zarr", "m.pt", "o.zarr", "--shard", "3/3"], "--shard: shard '3/3': I must lie in 0..N-1"),
        (["predict", "a.zarr", "m.pt", "o.zarr", "--init", "--finish"], "not allowed with argument"),
        (["train", "p.npz", "psf.json", "m.pt", "c.tsv", "--dropout", "1.5"], "--dropout: '1.5' is not a fraction"),
        (["convert", "a.tif", "b.zarr", "--compression-level", "99"], "is not a zstd level"),
        (["convert", "a.tif"], "required: output"),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and expected in lines[0], lines


_FREED_BLOCKS = """
import sys, numpy as np
from isonet.cli import return_large_frees_to_the_os
if sys.argv[1] == "set":
    assert return_large_frees_to_the_os()
def rss_mb():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) // 1024
big = np.ones(40 << 18, np.float32)  # above glibc's largest dynamic threshold: mapped, freed, returned
del big
pins = []
for _ in range(20):  # a stage's loop: a 4 MiB working block per step, small objects kept meanwhile
    block = np.ones(4 << 18, np.float32)
    pins.append(np.ones(16000))
    del block
before = rss_mb()
held = [np.ones(4 << 18, np.float32) for _ in range(10)]  # 40 MiB of working blocks at once, then freed
pins += [np.ones(16000) for _ in range(10)]
del held
print(rss_mb() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux", reason="glibc/Linux only")
def test_freed_working_blocks_leave_resident_memory_once_the_cli_sets_the_mmap_threshold():
    import subprocess

    def kept_mb(mode):
        out = subprocess.run([sys.executable, "-c", _FREED_BLOCKS, mode], capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert kept_mb("default") >= 30  # glibc's dynamic threshold: the 40 MiB freed stay in the heap
    assert kept_mb("set") <= 2  # what every isonet command now does first
