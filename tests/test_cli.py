import subprocess
import sys

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


def test_non_integer_anisotropy_is_an_error():
    from isonet.errors import InputError
    from isonet.stages.common import axial_factor

    assert axial_factor((0.8, 0.2, 0.2)) == 4
    assert axial_factor((0.7, 0.2, 0.2), subsample=3) == 3
    with pytest.raises(InputError, match="not an integer"):
        axial_factor((0.7, 0.2, 0.2))
