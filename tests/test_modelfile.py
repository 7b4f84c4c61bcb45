"""Model files and checkpoints hold data, never code: crafted pickle files are refused by every loader."""

import json
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from isonet.cli import main
from isonet.errors import InputError
from isonet.modelfile import (
    CHECKPOINT_FORMAT,
    MODEL_FORMAT,
    convert_legacy_model,
    load_checkpoint,
    load_model,
    read_tensor_file,
    save_checkpoint,
    save_model,
    weights_sha256,
)
from isonet.nets import build_network
from isonet.patches import Normalization
from isonet.storage import create_ome_zarr
from _assertions import raises_one_line


class CreatesFile:
    """Unpickling this object opens ``path`` for writing, i.e. creates the file: the marker of code run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _legacy_payload(net, extra=None):
    payload = {
        "format": "isonet-model/1", "architecture": "isonet2",
        "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "factor": 4, "normalization": {"low": 1.0, "high": 9.0, "percentiles": [1.0, 99.8]},
        "receptive_radius": 36, "halo": 36, "dropout": 0.2, "training": {"epochs": 3, "flip_axes": [0, 1]},
    }
    payload.update(extra or {})
    return payload


@pytest.fixture
def crafted(tmp_path):
    """Old-format model files and a checkpoint whose loading would create ``marker``."""
    marker = tmp_path / "code-ran"
    net = build_network("isonet2", seed=0)
    files = {"model": tmp_path / "evil-model.pt", "bare_pickle": tmp_path / "evil.pkl",
             "checkpoint": tmp_path / "evil-checkpoint.pt", "named_safetensors": tmp_path / "evil.safetensors"}
    torch.save(_legacy_payload(net, {"psf": CreatesFile(marker)}), files["model"])
    files["bare_pickle"].write_bytes(pickle.dumps({"format": "isonet-model/1", "psf": CreatesFile(marker)}))
    torch.save({"fingerprint": "0" * 16, "state": {"epoch": 1, "history": [CreatesFile(marker)]}}, files["checkpoint"])
    files["named_safetensors"].write_bytes(files["model"].read_bytes())
    return marker, files


@pytest.mark.parametrize("kind", ["model", "bare_pickle", "named_safetensors", "checkpoint"])
def test_every_loader_refuses_crafted_pickles_without_running_them(crafted, kind):
    marker, files = crafted
    path = files[kind]
    for load in (load_model, load_checkpoint, lambda p: read_tensor_file(p, MODEL_FORMAT),
                 lambda p: read_tensor_file(p, CHECKPOINT_FORMAT)):
        message = raises_one_line(path.name, load, path)
        assert "old pickle format" in message and "can run code" in message
    assert "convert-model" in raises_one_line(path.name, load_model, path)
    assert not marker.exists()


def test_crafted_file_really_runs_code_when_unpickled(crafted, tmp_path):
    # guards the refusals above against passing trivially: full unpickling does run the payload
    marker, files = crafted
    with pytest.raises(InputError, match="--trust"):
        convert_legacy_model(files["model"], tmp_path / "new.safetensors")
    assert not marker.exists() and not (tmp_path / "new.safetensors").exists()
    with pytest.raises(InputError):  # the marker object is no plain data: nothing is written
        convert_legacy_model(files["model"], tmp_path / "new.safetensors", trust=True)
    assert marker.exists() and not (tmp_path / "new.safetensors").exists()


def _one_error_line(stderr):
    lines = [line for line in stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_cli_predict_train_and_convert_refuse_crafted_files(crafted, tmp_path, capsys):
    marker, files = crafted
    image = tmp_path / "in.ome.zarr"
    _, level0 = create_ome_zarr(image, (6, 16, 16), np.float32, (6, 16, 16), (0.8, 0.2, 0.2))
    level0[:] = 1.0
    r = subprocess.run([sys.executable, "-m", "isonet.cli", "predict", str(image), str(files["model"]),
                        str(tmp_path / "out.ome.zarr")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "evil-model.pt" in _one_error_line(r.stderr) and "convert-model" in r.stderr
    assert not (tmp_path / "out.ome.zarr").exists() and not (tmp_path / "out.ome.zarr.partial").exists()

    patches = tmp_path / "patches.npz"
    from test_train import _pairs_file

    _pairs_file(patches, 8, factor=4)
    (tmp_path / "psf.json").write_text("{}")
    model = tmp_path / "model.safetensors"
    assert main(["train", str(patches), str(tmp_path / "psf.json"), str(model), str(tmp_path / "curve.tsv"),
                 "--checkpoint", str(files["checkpoint"]), "--epochs", "1"]) == 2
    assert "evil-checkpoint.pt" in _one_error_line(capsys.readouterr().err)
    assert not model.exists()

    assert main(["convert-model", str(files["model"]), str(tmp_path / "new.safetensors")]) == 2
    assert "--trust" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "new.safetensors").exists()
    assert not marker.exists()


def test_convert_model_round_trip_gives_identical_weights(tmp_path, capsys):
    net = build_network("isonet2", seed=3)
    old, new = tmp_path / "model.pt", tmp_path / "model.safetensors"
    torch.save(_legacy_payload(net), old)
    assert main(["convert-model", str(old), str(new)]) == 0
    loaded, meta = load_model(new)
    reference = net.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    assert all(torch.equal(loaded.state_dict()[k], reference[k]) for k in reference)
    assert meta["factor"] == 4 and meta["normalization"] == Normalization(1.0, 9.0)
    assert meta["training"] == {"epochs": 3, "flip_axes": [0, 1]}
    assert meta["converted_from"] == {"path": str(old), "format": "isonet-model/1"}
    assert meta["weights_sha256"] == weights_sha256(reference)


def test_model_file_is_safetensors_with_json_metadata(tmp_path):
    net = build_network("isonet1", seed=0)
    path = tmp_path / "m.safetensors"
    save_model(path, net, "isonet1", 3, Normalization(0.0, 2.0), dropout=0.1, note={"a": [1, 2]})
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])  # the whole header is JSON: tensors' offsets + metadata
    info = json.loads(header["__metadata__"]["isonet"])
    assert info["format"] == MODEL_FORMAT
    assert info["architecture"] == "isonet1" and info["factor"] == 3 and info["note"] == {"a": [1, 2]}
    assert info["weights_sha256"] == weights_sha256(net.state_dict())
    loaded, meta = load_model(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    assert meta["dropout"] == 0.1 and meta["halo"] >= net.receptive_radius


def test_a_header_length_that_starts_with_a_pickle_byte_still_loads(tmp_path):
    """A safetensors header length whose first byte is 0x80 (a pickle's first byte) is not a pickle."""
    net = build_network("isonet1", seed=0)
    path = tmp_path / "m.safetensors"
    for pad in range(0, 400):  # the header grows in steps of 8 with the padding: one length ends in 0x80
        save_model(path, net, "isonet1", 3, Normalization(0.0, 2.0), note="x" * pad)
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    loaded, meta = load_model(path)
    assert meta["note"] == "x" * pad
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))


def test_model_and_checkpoint_are_not_interchangeable(tmp_path):
    net = build_network("isonet2", seed=0)
    save_model(tmp_path / "m.safetensors", net, "isonet2", 4, Normalization(0.0, 1.0))
    save_checkpoint(tmp_path / "c.safetensors", "f" * 16, {"epoch": 1, "model": net.state_dict()})
    assert "not an isonet training checkpoint" in raises_one_line("m.safetensors", load_checkpoint,
                                                                   tmp_path / "m.safetensors")
    assert "not an isonet model file" in raises_one_line("c.safetensors", load_model, tmp_path / "c.safetensors")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes((tmp_path / "m.safetensors").read_bytes()[:5000])
    assert "damaged" in raises_one_line("t.safetensors", load_model, truncated)


def test_checkpoint_round_trip_keeps_optimizer_and_generator_states(tmp_path):
    net = build_network("isonet2", seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.rand(2, 1, 16, 16)).mean().backward()
    opt.step()
    rng = np.random.default_rng(5)
    rng.random(3)
    state = {"epoch": 2, "history": [{"epoch": 1, "val_loss": float("nan")}], "best_val_loss": math.inf,
             "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(), "numpy_rng": rng.bit_generator.state,
             "cuda_rng": None}
    save_checkpoint(tmp_path / "c.safetensors", "abc", state)
    fingerprint, back = load_checkpoint(tmp_path / "c.safetensors")
    assert fingerprint == "abc" and back["epoch"] == 2 and back["best_val_loss"] == math.inf
    assert math.isnan(back["history"][0]["val_loss"]) and back["cuda_rng"] is None
    assert torch.equal(back["torch_rng"], state["torch_rng"])
    assert back["numpy_rng"] == rng.bit_generator.state
    assert set(back["optimizer"]["state"]) == set(opt.state_dict()["state"])  # integer keys stay integers
    for i, s in opt.state_dict()["state"].items():
        assert all(torch.equal(back["optimizer"]["state"][i][k], s[k]) for k in s)
    opt2 = torch.optim.Adam(build_network("isonet2").parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    assert tuple(opt2.param_groups[0]["betas"]) == opt.param_groups[0]["betas"]


def test_model_file_mode_follows_the_umask(tmp_path):
    import os

    from isonet.modelfile import save_model
    from isonet.nets import build_network
    from isonet.patches import Normalization

    old = os.umask(0o022)
    try:
        save_model(tmp_path / "m.safetensors", build_network("isonet1", seed=0), "isonet1", 4, Normalization(0.0, 1.0))
    finally:
        os.umask(old)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644
