"""The predict stage: its pipeline, resuming a killed run, input regenerated at the same path,
shards that split one volume's prediction, and the windows each axial pass reads."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch
import zarr

import isonet.stages.predict as predict_module
from isonet.errors import InputError
from isonet.modelfile import save_model
from isonet.nets import build_network
from isonet.patches import Normalization
from isonet.pipeline import run_pipeline
from isonet.predict import predict_slices, prepare_model, read_block_windows
from isonet.stages.predict import predict_stage
from isonet.storage import create_ome_zarr

# output 17 x 24 x 40 in chunks (8, 24, 8): blocks of (8, 24, 16) give 3 x 1 x 3 = 9 blocks
GRID = {"chunks": (8, 24, 8), "block": (8, 24, 16), "threads": 1}
RESTORE_WINDOWS = predict_module.restore_windows


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, no ``except Exception`` catches it."""


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    net = build_network("isonet1", seed=0, zero_init=False)  # random output layer: not the identity
    save_model(path, net, "isonet1", 4, Normalization(100.0, 1100.0))
    return path


def write_input(path, seed=0):
    _, level0 = create_ome_zarr(path, (5, 24, 40), np.float32, (5, 24, 40), (0.8, 0.2, 0.2))
    level0[:] = (np.random.default_rng(seed).random((5, 24, 40)) * 1000 + 100).astype(np.float32)
    return path


def restored(path) -> np.ndarray:
    return np.asarray(zarr.open_array(path / "0")[:])


def counting_restore(monkeypatch, kill_after=None):
    """Count the blocks the stage computes; raise Killed on block number ``kill_after + 1``."""
    calls = []

    def restore(model, windows, **options):
        if kill_after is not None and len(calls) == kill_after:
            raise Killed
        calls.append(windows.ranges)
        return RESTORE_WINDOWS(model, windows, **options)

    monkeypatch.setattr(predict_module, "restore_windows", restore)
    return calls


def test_killed_predict_resumes_only_unfinished_blocks_to_the_clean_result(tmp_path, model_file, monkeypatch):
    image = write_input(tmp_path / "in.ome.zarr")
    predict_stage(image, model_file, tmp_path / "clean.ome.zarr", **GRID)
    out = tmp_path / "out.ome.zarr"

    counting_restore(monkeypatch, kill_after=4)
    with pytest.raises(Killed):
        predict_stage(image, model_file, out, **GRID)
    done = {int(p.name) for p in (tmp_path / "out.ome.zarr.partial" / ".isonet-done").iterdir()}
    assert 1 <= len(done) <= 4 and not out.exists()  # blocks whose write had finished

    calls = counting_restore(monkeypatch)
    info = predict_stage(image, model_file, out, **GRID)
    assert info["blocks"] == 9 and len(calls) == 9 - len(done)
    assert restored(out).tobytes() == restored(tmp_path / "clean.ome.zarr").tobytes()


def test_input_regenerated_at_the_same_path_discards_the_partial_result(tmp_path, model_file, monkeypatch):
    image = write_input(tmp_path / "in.ome.zarr", seed=0)
    out = tmp_path / "out.ome.zarr"
    counting_restore(monkeypatch, kill_after=4)
    with pytest.raises(Killed):
        predict_stage(image, model_file, out, **GRID)
    assert any((tmp_path / "out.ome.zarr.partial" / ".isonet-done").iterdir())

    shutil.rmtree(image)
    write_input(image, seed=1)  # regenerated: same path, same shape, other content
    calls = counting_restore(monkeypatch)
    predict_stage(image, model_file, out, **GRID)
    assert len(calls) == 9  # nothing of the first input's blocks was kept
    monkeypatch.undo()
    write_input(tmp_path / "other.ome.zarr", seed=1)
    predict_stage(tmp_path / "other.ome.zarr", model_file, tmp_path / "clean.ome.zarr", **GRID)
    assert restored(out).tobytes() == restored(tmp_path / "clean.ome.zarr").tobytes()


def test_shards_running_at_once_give_the_unsharded_result(tmp_path, model_file):
    image = write_input(tmp_path / "in.ome.zarr")
    predict_stage(image, model_file, tmp_path / "whole.ome.zarr", **GRID)
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(InputError, match=r"out.ome.zarr.partial: no store .* --init first"):
        predict_stage(image, model_file, out, step="shard", shard=(0, 3), **GRID)
    predict_stage(image, model_file, out, step="init", done_file=tmp_path / "init.json", **GRID)
    assert (tmp_path / "init.json").is_file() and not out.exists()

    errors = []

    def shard(i):
        try:
            predict_stage(image, model_file, out, step="shard", shard=(i, 4), done_file=tmp_path / f"{i}.json", **GRID)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=shard, args=(i,)) for i in (0, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with pytest.raises(InputError, match=r"2 of 9 blocks not done \(first: 1\)"):  # shard 1/4 has not run
        predict_stage(image, model_file, out, step="finish", **GRID)
    shard(1)
    predict_stage(image, model_file, out, step="finish", **GRID)
    assert restored(out).tobytes() == restored(tmp_path / "whole.ome.zarr").tobytes()
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == ["out.ome.zarr"]


def test_each_pass_window_has_a_halo_only_in_its_plane():
    source = np.random.default_rng(0).random((9, 30, 40)).astype(np.float32)
    w = read_block_windows(source, 4, ((8, 16), (4, 12), (20, 32)), Normalization(0.0, 1.0), 12)
    assert w.xz.shape == (8 + 24, 8, 12 + 24)  # z and x halo, block rows in y
    assert w.yz.shape == (8 + 24, 8 + 24, 12)  # z and y halo, block columns in x
    assert w.origin == (-4, -8, 8)  # the z and y halos reach past the volume's start (mirrored)
    np.testing.assert_array_equal(w.xz[:, :, 12:24], w.yz[:, 12:20, :])  # the block itself, in both
    np.testing.assert_allclose(w.xz[12 + 4, :, 12:24], source[3, 4:12, 20:32], atol=1e-6)  # plane 12 = acquired 3


def test_pipeline_overlaps_stages_keeps_memory_bounded_and_raises_the_first_error():
    events, lock = [], threading.Lock()

    def log(what, i):
        with lock:
            events.append((what, i))

    def read(i):
        log("read", i)
        return i

    written = run_pipeline(range(8), read, lambda x: x * 10, lambda i, y: log("write", y), depth=1)
    assert written == 8 and [y for what, y in events if what == "write"] == [i * 10 for i in range(8)]
    for k in range(8):  # reading runs ahead of writing by at most the queues and the stages in between
        reads_before = sum(1 for what, i in events[: events.index(("write", k * 10))] if what == "read")
        assert reads_before <= k + 5

    def failing(x):
        if x == 3:
            raise Killed
        return x

    out = []
    with pytest.raises(Killed):
        run_pipeline(range(100), lambda i: i, failing, lambda i, y: out.append(y))
    assert out == [0, 1, 2]

    def bad_write(i, y):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        run_pipeline(range(100), lambda i: i, lambda x: x, bad_write, workers=2)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_is_close_to_fp32(precision):
    net = prepare_model(build_network("isonet2", seed=0, zero_init=False), torch.device("cpu"))
    s = np.random.default_rng(0).random((2, 40, 36)).astype(np.float32)
    try:
        low = predict_slices(net, s, precision=precision)
    except RuntimeError as err:  # an autocast this CPU build does not offer
        pytest.skip(f"{precision} autocast on CPU: {err}")
    ref = predict_slices(net, s, precision="fp32")
    assert 0 < np.abs(low - ref).max() <= 0.02  # input range 1
