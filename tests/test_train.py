import numpy as np
import pytest
import torch

from isonet.nets import build_network
from isonet.patches import sample_training_pairs
from isonet.psf import gaussian_psf, lateral_plane_kernel, rotate_psf_to_lateral
from isonet.train import TrainConfig, TrainState, fit, psnr_loss


def test_psnr_loss_value():
    target = torch.ones(2, 1, 4, 4)
    pred = target - 0.1  # MSE 0.01, max 1 -> PSNR 20 dB
    assert abs(psnr_loss(pred, target).item() + 20.0) < 1e-3


def _pairs(n=256, seed=0):
    rng = np.random.default_rng(seed)
    planes = []
    yy, xx = np.mgrid[:96, :96]
    for _ in range(6):
        p = np.zeros((96, 96), np.float32)
        for _ in range(12):
            cy, cx, r = rng.uniform(8, 88), rng.uniform(8, 88), rng.uniform(3, 8)
            p[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0.5, 1)
        planes.append(p)
    k = lateral_plane_kernel(rotate_psf_to_lateral(gaussian_psf(1.0, 3.0)))
    pairs = sample_training_pairs(planes, k, 3, n, patch_size=32, foreground_threshold=0.2, seed=seed)
    return pairs.inputs(np.arange(n)), pairs.targets


def test_short_training_lowers_validation_loss():
    X, Y = _pairs()
    torch.manual_seed(0)
    net = build_network("isonet2")
    state = fit(net, X, Y, TrainConfig(epochs=4, batch_size=16, seed=0, flip_axes=(0, 1)), log=lambda m: None)
    vals = [r["val_loss"] for r in state.history]
    assert len(vals) == 4
    assert min(vals[1:]) < vals[0] - 0.5  # at least half a dB better than after epoch 1
    assert state.best_val_loss == min(vals)
    # the best weights are the ones kept
    net.load_state_dict(state.best_model)


def test_resume_continues_from_saved_state():
    X, Y = _pairs(96, seed=1)
    saved = []
    cfg = TrainConfig(epochs=2, batch_size=16, seed=0, precision="fp32")
    torch.manual_seed(0)
    fit(build_network("isonet2"), X, Y, cfg, on_epoch_end=lambda s: saved.append(TrainState.from_dict(
        {k: (v.copy() if isinstance(v, list) else v) for k, v in s.to_dict().items()})), log=lambda m: None)
    assert [s.epoch for s in saved] == [1, 2]
    cfg3 = TrainConfig(epochs=3, batch_size=16, seed=0, precision="fp32")
    resumed = fit(build_network("isonet2"), X, Y, cfg3, state=saved[-1], log=lambda m: None)
    assert resumed.epoch == 3 and [r["epoch"] for r in resumed.history] == [1, 2, 3]


def test_warmup_ramps_the_learning_rate():
    X, Y = _pairs(96, seed=2)  # 86 training patches: 6 steps of 16 per epoch
    cfg = TrainConfig(epochs=2, batch_size=16, seed=0, precision="fp32", warmup_steps=10, learning_rate=1e-3)
    state = fit(build_network("isonet2"), X, Y, cfg, log=lambda m: None)
    lrs = [r["learning_rate"] for r in state.history]
    assert abs(lrs[0] - 1e-3 * 6 / 10) < 1e-9 and abs(lrs[1] - 1e-3) < 1e-9


def _pairs_file(path, n, seed=0, factor=3):
    """A patches file as the ``patches`` stage writes it: noise-free samples, offsets, targets."""
    import json

    from isonet.camera import Camera
    from isonet.patches import Normalization

    rng = np.random.default_rng(seed)
    planes = [rng.random((64, 64), dtype=np.float32) for _ in range(3)]
    k = lateral_plane_kernel(rotate_psf_to_lateral(gaussian_psf(1.0, 3.0)))
    norm = {"low": 0.0, "high": 1.0, "percentiles": [1.0, 99.8]}
    cam = Camera(1.0, 0.0, 0.01, "test")
    pairs = sample_training_pairs(planes, k, factor, n, patch_size=32, seed=seed, camera=cam,
                                  norm=Normalization.from_dict(norm))
    np.savez(path, S=pairs.samples, offsets=pairs.offsets, Y=pairs.targets, kernel=k,
             meta=json.dumps({"factor": factor, "normalization": norm, "camera": cam.to_dict()}))
    return path


def _train_files(tmp_path, n=64):
    import json

    patches = _pairs_file(tmp_path / "patches.npz", n, seed=4)
    (tmp_path / "psf.json").write_text(json.dumps({"commuting_flips": [0, 1]}))
    return patches, tmp_path / "psf.json"


def test_training_is_bit_identical_and_resume_continues_exactly(tmp_path):
    from isonet.modelfile import load_checkpoint, load_model
    from isonet.stages.train import train_stage

    patches, psf = _train_files(tmp_path, n=48)
    runs = {}
    for name, epochs in (("a", [2]), ("b", [2]), ("resumed", [1, 2])):
        (tmp_path / name).mkdir()
        for e in epochs:  # the second call resumes from the first one's checkpoint
            train_stage(patches, psf, tmp_path / name / "model.safetensors", tmp_path / name / "curve.tsv",
                        tmp_path / name / "checkpoint.safetensors", epochs=e, batch_size=16, precision="fp32",
                        warmup_steps=3, seed=7)
        runs[name] = load_model(tmp_path / name / "model.safetensors")[0].state_dict()
    for name in ("b", "resumed"):
        assert all(torch.equal(runs["a"][k], runs[name][k]) for k in runs["a"]), name
        assert (tmp_path / name / "model.safetensors").read_bytes() == (tmp_path / "a" / "model.safetensors").read_bytes()
    last = {name: load_checkpoint(tmp_path / name / "checkpoint.safetensors")[1] for name in ("a", "resumed")}
    for part in ("model", "best_model"):
        assert all(torch.equal(last["a"][part][k], last["resumed"][part][k]) for k in last["a"][part])
    assert torch.equal(last["a"]["torch_rng"], last["resumed"]["torch_rng"])
    assert last["a"]["numpy_rng"] == last["resumed"]["numpy_rng"]
    curves = [(tmp_path / n / "curve.tsv").read_text().splitlines() for n in ("a", "resumed")]
    assert [l.split("\t")[1:3] for l in curves[0]] == [l.split("\t")[1:3] for l in curves[1]]  # same losses
    # the seed reaches the initial weights
    assert not torch.equal(build_network("isonet2", seed=7, zero_init=False).out.weight,
                           build_network("isonet2", seed=8, zero_init=False).out.weight)


def test_model_file_records_settings_versions_and_input_hashes(tmp_path):
    from isonet.modelfile import load_model
    from isonet.provenance import file_sha256
    from isonet.stages.train import train_stage

    patches, psf = _train_files(tmp_path, n=32)
    train_stage(patches, psf, tmp_path / "m.safetensors", tmp_path / "c.tsv", epochs=1, seed=3, precision="fp32")
    prov = load_model(tmp_path / "m.safetensors")[1]["provenance"]
    assert prov["stage"] == "train"
    assert prov["inputs"]["patches"] == {"path": str(patches), "sha256": file_sha256(patches)}
    assert prov["inputs"]["psf"]["sha256"] == file_sha256(psf)
    assert prov["settings"]["seed"] == 3 and prov["settings"]["threads"] == torch.get_num_threads()
    assert prov["versions"]["torch"] == torch.__version__.split("+")[0] or prov["versions"]["torch"] == torch.__version__
    assert {"isonet", "numpy", "zarr", "safetensors", "python"} <= set(prov["versions"])


def test_step_budget_ends_training_mid_epoch_and_validates_there():
    X, Y = _pairs(96, seed=3)  # 86 training patches: 6 steps of 16 per epoch
    state = fit(build_network("isonet2", seed=0), X, Y, TrainConfig(steps=8, batch_size=16, precision="fp32"),
                log=lambda m: None)
    assert state.step == 8 and [r["step"] for r in state.history] == [6, 8]
    assert state.best_val_loss == min(r["val_loss"] for r in state.history)


def test_minutes_budget_stops_training():
    X, Y = _pairs(96, seed=3)
    state = fit(build_network("isonet2", seed=0), X, Y,
                TrainConfig(epochs=50, minutes=1e-6, batch_size=16, precision="fp32"), log=lambda m: None)
    assert state.step == 1 and len(state.history) == 1 and state.seconds > 0


def test_held_out_validation_pairs_are_used_as_given():
    X, Y = _pairs(64, seed=4)
    Xv, Yv = _pairs(16, seed=5)
    net = build_network("isonet2", seed=0, zero_init=True)
    state = fit(net, X, Y, TrainConfig(steps=1, batch_size=64, precision="fp32", learning_rate=1e-12),
                validation=(Xv, Yv), log=lambda m: None)
    # all 64 patches train (none split off) and the loss is measured on the given pairs: the
    # untrained zero-initialised network is the identity, so it is the inputs' own loss
    assert state.step == 1
    expected = psnr_loss(torch.from_numpy(Xv[:, None]), torch.from_numpy(Yv[:, None])).item()
    assert abs(state.best_val_loss - expected) < 1e-3


def test_training_pairs_are_degraded_anew_each_epoch():
    from isonet.camera import Camera
    from isonet.patches import Normalization

    k = lateral_plane_kernel(rotate_psf_to_lateral(gaussian_psf(1.0, 3.0)))
    plane = np.full((64, 64), 0.5, np.float32)
    pairs = sample_training_pairs([plane] * 2, k, 3, 16, patch_size=32, seed=0, camera=Camera(1.0, 0.0, 1.0),
                                  norm=Normalization(0.0, 100.0))
    seen = []

    class Spy:
        def __len__(self):
            return len(pairs)

        def inputs(self, idx, rng):
            x = pairs.inputs(idx, rng)
            seen.append((idx.copy(), x.copy()))
            return x

    fit(build_network("isonet2", seed=0), Spy(), pairs.targets,
        TrainConfig(epochs=2, batch_size=16, precision="fp32", validation_fraction=0.0), log=lambda m: None)
    (idx1, x1), (idx2, x2) = seen  # one batch of all 16 patches per epoch
    assert np.array_equal(idx1, idx2)
    noise1, noise2 = x1 - pairs.inputs(idx1), x2 - pairs.inputs(idx2)
    assert noise1.std() > 0.005 and abs(np.corrcoef(noise1.ravel(), noise2.ravel())[0, 1]) < 0.1


def test_network_seed_fixes_initial_weights_without_touching_global_state():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_network("isonet2", seed=7, zero_init=False)
    after = torch.rand(1)
    b = build_network("isonet2", seed=7, zero_init=False)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_untrained_isonet2_returns_its_input():
    net = build_network("isonet2").eval()
    x = torch.rand(2, 1, 32, 40)
    assert torch.equal(net(x), x)


def test_cosine_schedule_warms_up_then_anneals_to_zero_at_the_budget():
    from isonet.train import scheduled_rate

    cfg = TrainConfig(steps=110, warmup_steps=10, learning_rate=1e-3, schedule="cosine")
    rates = [scheduled_rate(cfg, s, 0.0, 110) for s in range(110)]
    assert abs(rates[0] - 1e-4) < 1e-12 and abs(rates[9] - 1e-3) < 1e-12  # linear ramp
    assert abs(rates[10] - 1e-3) < 1e-12 and abs(rates[60] - 0.5e-3) < 1e-12  # half-way: half the rate
    assert all(a >= b for a, b in zip(rates[10:], rates[11:])) and rates[-1] < 1e-6
    # a minutes budget that ends first drives the progress: half the time spent is half the rate
    timed = TrainConfig(steps=10_000, minutes=2.0, warmup_steps=10, learning_rate=1e-3, schedule="cosine")
    assert abs(scheduled_rate(timed, 20, 60.0, 10_000) - 0.5e-3) < 1e-9
    assert scheduled_rate(timed, 20, 500.0, 10_000) == 0.0
    # plateau leaves the rate to its scheduler after the warm-up
    assert scheduled_rate(TrainConfig(warmup_steps=10), 10, 0.0, 100) is None


def test_cosine_training_ends_annealed_and_an_interrupted_run_resumes_exactly():
    X, Y = _pairs(96, seed=5)  # 86 training patches: 6 steps of 16 per epoch
    cfg = TrainConfig(steps=15, batch_size=16, seed=0, precision="fp32", warmup_steps=3, learning_rate=2e-3,
                      schedule="cosine")
    whole = fit(build_network("isonet2", seed=0), X, Y, cfg, log=lambda m: None)
    assert [r["step"] for r in whole.history] == [6, 12, 15]
    assert whole.history[-1]["learning_rate"] < 1e-4 < whole.history[0]["learning_rate"]

    class Killed(Exception):
        pass

    saved = []

    def kill_after_first_epoch(state):
        saved.append(TrainState.from_dict({k: (v.copy() if isinstance(v, list) else v)
                                           for k, v in state.to_dict().items()}))
        raise Killed

    try:
        fit(build_network("isonet2", seed=0), X, Y, cfg, on_epoch_end=kill_after_first_epoch, log=lambda m: None)
    except Killed:
        pass
    resumed = fit(build_network("isonet2", seed=0), X, Y, cfg, state=saved[0], log=lambda m: None)
    assert [r["learning_rate"] for r in resumed.history] == [r["learning_rate"] for r in whole.history]
    assert all(torch.equal(whole.model[k], resumed.model[k]) for k in whole.model)


def test_unknown_schedule_is_a_one_line_error():
    import pytest

    from isonet.errors import InputError

    X, Y = _pairs(48, seed=6)
    with pytest.raises(InputError, match="train.schedule: 'linear' is not a schedule; give plateau or cosine"):
        fit(build_network("isonet2", seed=0), X, Y, TrainConfig(steps=1, schedule="linear"), log=lambda m: None)


def _restorable_input(tmp_path):
    """A 12 x 48 x 48 acquisition at σ = 4 (blurred blobs, OME-Zarr), its PSF files and patches."""
    from scipy import ndimage as ndi

    from isonet.stages.patches import patches_stage
    from isonet.stages.psf import psf_stage
    from isonet.storage import create_ome_zarr

    psf_stage(tmp_path / "psf.npz", tmp_path / "psf.json", "gaussian", {"sigma_xy": 1.0, "sigma_z": 3.0})
    rng = np.random.default_rng(0)
    iso = ndi.gaussian_filter((rng.random((48, 48, 48)) > 0.995).astype(np.float32), (3.0, 1.0, 1.0)) * 400 + 100
    _, a = create_ome_zarr(tmp_path / "in.zarr", (12, 48, 48), np.float32, (4, 48, 48), (0.8, 0.2, 0.2))
    a[:] = iso[::4]
    patches_stage(tmp_path / "in.zarr", tmp_path / "psf.npz", tmp_path / "patches.npz", n_patches=64,
                  patch_size=16, camera="none")
    return tmp_path / "in.zarr", tmp_path / "patches.npz", tmp_path / "psf.json"


def test_a_second_round_fine_tunes_on_restored_planes_and_is_reproducible(tmp_path, monkeypatch, caplog):
    import isonet.stages.train as train_module
    from isonet.errors import InputError
    from isonet.modelfile import load_model

    zarr, patches, psf = _restorable_input(tmp_path)
    drawn = []
    real_pairs = train_module.pairs_from_planes
    monkeypatch.setattr(train_module, "pairs_from_planes",
                        lambda planes, *a: drawn.append(np.asarray(planes)) or real_pairs(planes, *a))
    settings = dict(steps=6, batch_size=8, precision="fp32", warmup_steps=2, seed=1, dropout=0.0)
    models = {}
    for name, rounds in (("one", 1), ("two", 2), ("again", 2)):
        (tmp_path / name).mkdir()
        result = train_module.train_stage(patches, psf, tmp_path / name / "m.safetensors", tmp_path / name / "c.tsv",
                                          input_zarr=zarr, rounds=rounds, refine_steps=3, refine_planes=16, **settings)
        models[name] = load_model(tmp_path / name / "m.safetensors")
        assert len(result["rounds"]) == rounds
    # the second round's pairs come from 16 restored (isotropic) planes; the acquisition has only 12
    assert [d.shape for d in drawn] == [(16, 48, 48)] * 2
    info = models["two"][1]
    assert [r["round"] for r in info["rounds"]] == [1, 2]
    assert info["rounds"][1]["planes"] == [[12, 28], [0, 48], [0, 48]] and info["rounds"][1]["steps"] == 3
    assert info["training"]["rounds"] == 2 and info["steps_trained"] == 6
    one, two = models["one"][0].state_dict(), models["two"][0].state_dict()
    assert not all(torch.equal(one[k], two[k]) for k in one)  # the second round changed the weights
    assert (tmp_path / "two" / "m.safetensors").read_bytes() == (tmp_path / "again" / "m.safetensors").read_bytes()
    curve = [line.split("\t") for line in (tmp_path / "two" / "c.tsv").read_text().splitlines()]
    assert curve[0][-1] == "round" and {row[-1] for row in curve[1:]} == {"1", "2"}
    assert [int(row[0]) for row in curve[1:]] == list(range(1, len(curve)))
    # a re-run resumes each round from its checkpoint (a finished round neither restores nor trains
    # again); a longer first round retrains the second
    before = (tmp_path / "two" / "m.safetensors").read_bytes()
    for steps, resumed in ((6, True), (8, False)):
        caplog.clear()
        n_drawn = len(drawn)
        with caplog.at_level("INFO", logger="isonet.stages.train"):
            train_module.train_stage(patches, psf, tmp_path / "two" / "m.safetensors", tmp_path / "two" / "c.tsv",
                                     input_zarr=zarr, rounds=2, refine_steps=3, refine_planes=16,
                                     **{**settings, "steps": steps})
        assert ("round 2 already finished" in caplog.text) is resumed, caplog.text
        assert ("restored in" in caplog.text) is not resumed and len(drawn) == n_drawn + (not resumed)
        assert "train: resuming from" in caplog.text
        if resumed:
            assert (tmp_path / "two" / "m.safetensors").read_bytes() == before
    with pytest.raises(InputError, match="--input"):
        train_module.train_stage(patches, psf, tmp_path / "x.safetensors", tmp_path / "x.tsv", rounds=2, **settings)
    with pytest.raises(InputError, match="refine_planes 4"):
        train_module.train_stage(patches, psf, tmp_path / "x.safetensors", tmp_path / "x.tsv", input_zarr=zarr,
                                 rounds=2, refine_planes=4, **settings)
