import json

import numpy as np
import pytest

from isonet.benchmark import (
    METHODS,
    CellSettings,
    format_mean_std,
    gap_closed,
    resample_corner_aligned_z,
    seg_whole_and_interior,
    segment_volumes,
    table_markdown,
    training_kernels,
)
from isonet.errors import InputError
from isonet.metrics import interior_label_ids
from isonet.stages.benchmark import benchmark_cell_stage, benchmark_table_stage, benchmark_tune_stage

TINY = {
    "shape": [24, 48, 48], "n_patches": 16, "patch_size": 32, "train_steps": 2, "batch_size": 8,
    "rl_iterations": 2, "seg_min_size": 8, "seg_min_distance": 3, "seg_z_margin": 4,
}
GAUSS = {"sigma_xy": 1.0, "sigma_z": 3.0}


def test_tiny_cell_end_to_end_writes_all_methods_and_the_threshold_rule(tmp_path):
    out, npz = tmp_path / "cell.json", tmp_path / "stack.npz"
    benchmark_cell_stage(out, "nuclei", "gaussian", "gaussian", GAUSS, 0, TINY, threads=1, stack_npz=npz)
    r = json.loads(out.read_text())
    assert r["acquired_shape"] == [6, 48, 48] and r["n_iso_planes"] == 21
    for ref in ("iso_gt", "gt"):
        assert set(r["psnr"][ref]) == set(METHODS)
        assert all(np.isfinite(v) for v in r["psnr"][ref].values())
    assert set(r["seg"]) == {"whole", "interior"}
    assert set(r["seg"]["whole"]) == {"iso_gt", "input", *METHODS} - {"cubic"}
    # one rule for every volume of the cell, recorded with each volume's threshold
    th = r["seg_threshold"]
    assert th["rule"] in ("intermodes", "otsu") and th["requested"] == "intermodes"
    assert (th["reason"] is None) == (th["rule"] == "intermodes")
    assert set(th["values"]) == set(r["seg"]["whole"])
    assert r["seg_z_margin"] == 4 and r["seg_objects"]["interior"] <= r["seg_objects"]["whole"]
    # every network got the same step budget: 14 training patches, batch 8 -> 2 steps an epoch
    assert {t["steps"] for t in r["training"].values()} == {2}
    assert r["training"]["isonet1_full"]["learning_rate"] == 1e-3
    assert r["training"]["isonet2_full"]["dropout"] == 0.2
    with np.load(npz) as z:
        assert z["acquired"].shape == (6, 48, 48) and z["gt"].shape == z["labels"].shape == (21, 48, 48)
        assert int(z["subsample"]) == 4 and z["kernel_full"].ndim == 2


def test_tune_chooses_per_architecture_and_the_cell_uses_it(tmp_path):
    tuned = tmp_path / "tuned.json"
    settings = {**TINY, "methods": ["isonet1_full"]}
    t = benchmark_tune_stage(tuned, "both", "gaussian", "gaussian", GAUSS,
                             {"learning_rate": [1e-3, 2e-3], "dropout": [0.0]}, settings, threads=1)
    assert [(x["architecture"], x["learning_rate"]) for x in t["trials"]] == [
        ("isonet1", 1e-3), ("isonet1", 2e-3), ("isonet2", 1e-3), ("isonet2", 2e-3)]
    for arch in ("isonet1", "isonet2"):
        trials = [x for x in t["trials"] if x["architecture"] == arch]
        best = max(trials, key=lambda x: x["psnr"]["gt"])
        assert t["chosen"][arch] == {"learning_rate": best["learning_rate"], "dropout": 0.0}
    r = benchmark_cell_stage(tmp_path / "cell.json", "membranes", "gaussian", "gaussian", GAUSS, 0, settings,
                             threads=1, tuned=tuned)
    assert r["settings"]["hyper"] == t["chosen"] and r["hyper_source"] == str(tuned)
    assert r["training"]["isonet1_full"]["learning_rate"] == t["chosen"]["isonet1"]["learning_rate"]
    with pytest.raises(InputError, match="learning_rate and dropout"):
        benchmark_tune_stage(tuned, "both", "gaussian", "gaussian", GAUSS, {"learning_rate": [1e-3]}, settings)


def test_settings_reject_unknown_keys_methods_rules_and_hyper():
    with pytest.raises(InputError, match="epochs"):
        CellSettings.from_dict({"epochs": 3})
    with pytest.raises(InputError, match="methods"):
        CellSettings.from_dict({"methods": ["cubic", "magic"]})
    with pytest.raises(InputError, match="seg_threshold"):
        CellSettings.from_dict({"seg_threshold": "triangle"})
    with pytest.raises(InputError, match="hyper"):
        CellSettings.from_dict({"hyper": {"isonet2": {"learning_rate": 1e-3}}})
    s = CellSettings.from_dict({"hyper": {"isonet2": {"learning_rate": 1e-3, "dropout": 0.0}}})
    assert s.hyper["isonet1"] == {"learning_rate": 1e-3, "dropout": 0.0}  # the other keeps its default


def test_cell_training_follows_the_schedule_setting(monkeypatch):
    import isonet.benchmark as bench
    from isonet.psf import gaussian_psf

    seen = {}

    def stop_at_fit(net, X, Y, config, **kw):
        seen["config"] = config
        raise RuntimeError("stopped before training")

    monkeypatch.setattr(bench, "fit", stop_at_fit)
    s = CellSettings.from_dict({"schedule": "cosine", "warmup_steps": 5, "train_steps": 3, "n_patches": 8,
                                "patch_size": 32})
    acquired = np.random.default_rng(0).poisson(50, (12, 48, 48)).astype(np.float32) + 100
    kernel = training_kernels(gaussian_psf(1.0, 3.0))["full"]
    with pytest.raises(RuntimeError, match="stopped"):
        bench.train_and_restore(acquired, kernel, "isonet2", s, seed=0)
    assert (seen["config"].schedule, seen["config"].warmup_steps, seen["config"].steps) == ("cosine", 5, 3)
    assert CellSettings().schedule == "plateau"  # the default keeps the published cells reproducible
    with pytest.raises(InputError, match="schedule"):
        CellSettings.from_dict({"schedule": "step"})


def test_cell_rounds_fine_tune_isonet_but_not_srcnn(monkeypatch):
    import isonet.benchmark as bench
    from isonet.psf import gaussian_psf

    calls = []
    real_fit = bench.fit

    def recording_fit(net, X, Y, config, **kw):
        calls.append((config.steps, len(X), kw.get("validation") is not None))
        return real_fit(net, X, Y, config, **kw)

    monkeypatch.setattr(bench, "fit", recording_fit)
    s = CellSettings.from_dict({"train_steps": 2, "n_patches": 8, "patch_size": 16, "rounds": 3, "refine_steps": 1,
                                "refine_planes": 16, "precision": "fp32"})
    acquired = np.random.default_rng(0).poisson(50, (8, 32, 32)).astype(np.float32) + 100
    kernels = training_kernels(gaussian_psf(1.0, 3.0))
    restored, info = bench.train_and_restore(acquired, kernels["full"], "isonet1", s, seed=0)
    # the first round on the acquisition's patches (validation split from them), two more on restored planes
    assert calls == [(2, 8, False), (1, 8, True), (1, 8, True)] and info["steps"] == 4
    assert restored.shape == (29, 32, 32)
    calls.clear()
    bench.train_and_restore(acquired, kernels["delta"], "isonet1", s, seed=0)  # SRCNN: one round
    assert calls == [(2, 8, False)]
    with pytest.raises(InputError, match="refine_planes"):
        CellSettings.from_dict({"rounds": 2, "refine_planes": 2})


def test_every_restoration_of_a_cell_uses_the_settings_edge_rule(monkeypatch):
    """The final restoration and each later round's restoration follow ``edges`` (the workflow's clip by default)."""
    import isonet.benchmark as bench
    from isonet.psf import gaussian_psf

    seen = []
    real_block, real_volume = bench.restore_block, bench.restore_volume

    def block(*a, **kw):
        seen.append(("block", kw.get("edges")))
        return real_block(*a, **kw)

    def volume(*a, **kw):
        seen.append(("volume", kw.get("edges")))
        return real_volume(*a, **kw)

    monkeypatch.setattr(bench, "restore_block", block)
    monkeypatch.setattr(bench, "restore_volume", volume)
    acquired = np.random.default_rng(0).poisson(50, (8, 32, 32)).astype(np.float32) + 100
    kernel = training_kernels(gaussian_psf(1.0, 3.0))["full"]
    base = {"train_steps": 1, "n_patches": 8, "patch_size": 16, "rounds": 2, "refine_steps": 1, "refine_planes": 16,
            "precision": "fp32"}
    assert CellSettings().edges == "clip"
    out = {}
    for edges in ("clip", "mirror"):
        seen.clear()
        out[edges], _ = bench.train_and_restore(acquired, kernel, "isonet1", CellSettings.from_dict(
            dict(base, edges=edges)), seed=0)
        assert seen == [("block", edges), ("volume", edges)]
    # the two rules give two restorations: the setting reaches the networks' input
    assert not np.allclose(out["clip"], out["mirror"])
    with pytest.raises(InputError, match="edges"):
        CellSettings.from_dict({"edges": "wrap"})


def test_interior_seg_on_a_toy_label_volume():
    gt = np.zeros((60, 8, 8), np.int32)
    gt[0:6, :4] = 1      # centroid z 2.5: at the top end
    gt[20:30, :4] = 2    # 24.5: interior
    gt[30:40, 4:] = 3    # 34.5: interior
    gt[55:60, 4:] = 4    # 57: at the bottom end
    assert interior_label_ids(gt, 10).tolist() == [2, 3]
    assert interior_label_ids(gt, 2).tolist() == [1, 2, 3, 4]  # 57 <= 59 - 2
    assert interior_label_ids(gt, 30).tolist() == []
    pred = np.zeros_like(gt)
    pred[20:30, :4] = 7          # object 2 exact: 1
    pred[30:38, 4:] = 9          # object 3: 8 of 10 planes, IoU 0.8
    pred[0:6, :4] = 5            # object 1 exact, object 4 missed
    seg = seg_whole_and_interior(gt, pred, z_margin=10)
    assert seg["whole"] == pytest.approx((1 + 1 + 0.8 + 0) / 4)
    assert seg["interior"] == pytest.approx((1 + 0.8) / 2)
    assert np.isnan(seg_whole_and_interior(gt, pred, z_margin=30)["interior"])
    # slab-wise counting gives the same ids
    assert interior_label_ids(gt, 10, chunk_size=7).tolist() == [2, 3]


def test_segment_volumes_uses_one_rule_for_all():
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:24, :24, :24]
    ball = ((z - 12) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 36).astype(np.float32)
    bimodal = ball * 100 + rng.normal(0, 3, ball.shape).astype(np.float32)
    # distinct values evenly spread: a flat histogram, on which Intermodes is undefined
    flat = np.linspace(0, 1, ball.size, dtype=np.float32).reshape(ball.shape)
    labels, th = segment_volumes({"a": bimodal, "b": bimodal + 5}, "intermodes", min_size=8)
    assert th["rule"] == "intermodes" and th["reason"] is None and set(th["values"]) == {"a", "b"}
    assert labels["a"].max() == 1
    labels, th = segment_volumes({"a": bimodal, "flat": flat}, "intermodes", min_size=8)
    assert th["rule"] == "otsu" and th["requested"] == "intermodes" and "flat" in th["reason"]
    from skimage.filters import threshold_otsu

    assert th["values"]["a"] == pytest.approx(threshold_otsu(bimodal))  # a too, not only the flat one
    with pytest.raises(InputError, match="rule"):
        segment_volumes({"a": bimodal}, "triangle")


def test_z_grid_alignment_puts_a_linear_ramp_on_our_grid():
    n_acq, factor = 9, 4
    # CSBDeep-style output: n_acq * factor planes spanning the acquired planes corner to corner,
    # holding the acquired z coordinate of each plane (a linear ramp in z)
    theirs = np.linspace(0, n_acq - 1, n_acq * factor, dtype=np.float64)
    vol = np.broadcast_to((2.0 * theirs + 5)[:, None, None], (n_acq * factor, 3, 2))
    ours = resample_corner_aligned_z(vol, n_acq, factor)
    assert ours.shape == ((n_acq - 1) * factor + 1, 3, 2) and ours.dtype == np.float32
    np.testing.assert_allclose(ours[:, 1, 1], 2.0 * np.arange(33) / factor + 5, atol=1e-5)
    # acquired plane k lands on isotropic plane k * factor
    np.testing.assert_allclose(ours[::factor, 0, 0], 2.0 * np.arange(n_acq) + 5, atol=1e-5)
    with pytest.raises(InputError, match="z-grid"):
        resample_corner_aligned_z(vol, 1, factor)


def cell(phantom, psf, stack, psnr_iso, seg=None, objects=None):
    return {"phantom": phantom, "psf": psf, "stack": stack, "settings": {},
            "psnr": {"iso_gt": psnr_iso, "gt": {k: v - 5 for k, v in psnr_iso.items()}},
            "seg": seg, "seg_objects": objects,
            "seg_threshold": {"rule": "intermodes"} if seg else None}


def peer(phantom, psf, stack, psnr, seg=None, rule="intermodes"):
    return {"peer": "csbdeep", "phantom": phantom, "psf": psf, "stack": stack,
            "psnr": {"iso_gt": {"csbdeep": psnr}, "gt": {"csbdeep": psnr - 5}}, "seg": seg,
            "seg_threshold": {"rule": rule} if seg else None,
            "training": {"budget_s": 60.0, "budget_from": "isonet2_full", "train_s": 61.0}}


def test_table_bolds_the_best_mean_and_has_the_peer_column(tmp_path):
    seg0 = {"whole": {"iso_gt": 0.9, "input": 0.5, "isonet2_full": 0.85},
            "interior": {"iso_gt": 0.95, "input": 0.55, "isonet2_full": 0.91}}
    seg1 = {"whole": {"iso_gt": 0.9, "input": 0.7, "isonet2_full": 0.85},
            "interior": {"iso_gt": 0.95, "input": 0.75, "isonet2_full": 0.91}}
    cells = [
        cell("nuclei", "gaussian", 0, {"cubic": 20.0, "rl": 21.0, "isonet2_full": 24.0}, seg0,
             {"whole": 10, "interior": 6}),
        cell("nuclei", "gaussian", 1, {"cubic": 22.0, "rl": 23.0, "isonet2_full": 26.0}, seg1,
             {"whole": 12, "interior": 7}),
        cell("membranes", "gaussian", 0, {"cubic": 30.0, "rl": 31.5, "isonet2_full": 31.0}),
    ]
    peers = [
        peer("nuclei", "gaussian", 0, 23.0, {"whole": {"csbdeep": 0.8}, "interior": {"csbdeep": 0.85}}),
        peer("nuclei", "gaussian", 1, 24.0, {"whole": {"csbdeep": 0.8}, "interior": {"csbdeep": 0.87}}),
        peer("membranes", "gaussian", 0, 32.0),
    ]
    md = table_markdown(cells + peers)
    lines = md.splitlines()
    rows = [line for line in lines if line.startswith("| nuclei | gaussian")]
    assert lines[2] == "| phantom | PSF | n | cubic | RL | IsoNet-2 full | CSBDeep iso |"
    # PSNR vs iso-GT: means 21 (1.41), 22 (1.41), 25 (1.41), peer 23.5 (0.71); std with ddof 1
    assert rows[0] == "| nuclei | gaussian | 2 | 21.00 (1.41) | 22.00 (1.41) | **25.00** (1.41) | 23.50 (0.71) |"
    assert "| membranes | gaussian | 1 | 30.00 (0.00) | 31.50 (0.00) | 31.00 (0.00) | **32.00** (0.00) |" in md
    assert md.index("against iso-GT") < md.index("against GT") < md.index("interior nuclei") < md.index("all nuclei")
    # interior: iso 0.95, input 0.65, IsoNet-2 0.91 -> 87 %; peer 0.86 -> 70 %
    assert rows[-2] == ("| nuclei | gaussian | 2 | 13 | 0.950 (0.000) | 0.650 (0.141) | 0.910 (0.000) · 87 % "
                        "| 0.860 (0.014) · 70 % |")
    # whole: iso 0.9, input 0.6, restored 0.85 -> 83 %; peer 0.8 -> 67 %
    assert rows[-1] == ("| nuclei | gaussian | 2 | 22 | 0.900 (0.000) | 0.600 (0.141) | 0.850 (0.000) · 83 % "
                        "| 0.800 (0.000) · 67 % |")
    assert "Threshold rule: intermodes for every segmentation of every stack (4 results)" in md
    # a peer with fewer stacks than the cell says so
    md1 = table_markdown(cells + peers[1:])
    assert "| 24.00 (0.00) [n=1] |" in md1
    # a deviating rule is listed, not hidden
    md2 = table_markdown(cells + [peers[0], peer("nuclei", "gaussian", 1, 24.0, peers[1]["seg"], rule="otsu")])
    assert "Threshold rule: intermodes in 3 results; otsu in nuclei/gaussian/1/csbdeep" in md2

    paths = []
    for i, c in enumerate(cells + peers):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(c))
    text = benchmark_table_stage(paths, tmp_path / "table1.md", notes="note")
    assert (tmp_path / "table1.md").read_text() == text and text.rstrip().endswith("note")
    assert "psnr_affine" in text and "Peer: CSBDeep IsotropicCARE" in text and "budgets 60 s, used 61 s" in text
    assert "the wall time IsoNet-2 full trained on the same stack" in text


def test_table_rejects_old_seg_format():
    old = cell("nuclei", "gaussian", 0, {"cubic": 20.0}, {"iso_gt": 0.9, "input": 0.5})
    with pytest.raises(InputError, match="old format"):
        table_markdown([old])


def test_formatting_helpers():
    assert format_mean_std(1.005, 0.0449) == "1.00 (0.04)" or format_mean_std(1.005, 0.0449) == "1.01 (0.04)"
    assert format_mean_std(3, 1, digits=1, bold=True) == "**3.0** (1.0)"
    assert gap_closed(0.5, 0.6, 0.6) is None
    assert gap_closed(0.9, 0.5, 0.9) == 1.0


def test_peer_scoring_aligns_its_grid_and_uses_the_cells_rule(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "csbdeep_peer", Path(__file__).resolve().parents[1] / "benchmarks" / "csbdeep_peer.py")
    peer_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer_mod)  # imports NumPy only: no TensorFlow needed here

    n_acq, factor = 12, 4
    n_iso = (n_acq - 1) * factor + 1
    z, y, x = np.ogrid[:n_iso, :32, :32]
    labels = (((z - 22) ** 2 + (y - 16) ** 2 + (x - 16) ** 2) <= 64).astype(np.int32)
    gt = labels * 100.0 + 10 + 0.5 * z  # a nucleus on a z-ramp background
    # the peer's output: the same volume sampled at its corner-aligned planes
    pos = np.arange(n_acq * factor) * (n_acq - 1) / (n_acq * factor - 1) * factor  # in our plane units
    lo = np.clip(np.floor(pos).astype(int), 0, n_iso - 2)
    w = (pos - lo)[:, None, None]
    theirs = gt[lo] * (1 - w) + gt[lo + 1] * w
    np.savez(tmp_path / "s.npz", acquired=np.zeros((n_acq, 32, 32), np.float32), gt=gt.astype(np.float32),
             iso_gt=gt.astype(np.float32), labels=labels, subsample=np.int64(factor))
    cell = {"settings": {"seg_min_size": 8, "seg_z_margin": 10}, "seg_threshold": {"rule": "otsu"},
            "seg": {"whole": {"input": 0.5, "iso_gt": 1.0}, "interior": {"input": 0.5, "iso_gt": 1.0}}}
    r = peer_mod.score(cell, tmp_path / "s.npz", theirs)
    assert r["psnr"]["gt"]["csbdeep"] > 33  # back on our grid, up to linear interpolation of a ball's edge
    assert r["seg_threshold"]["rule"] == "otsu"  # the cell's rule, not a default
    assert r["seg"]["interior"]["csbdeep"] > 0.9
    assert r["gap_closed"]["whole"]["csbdeep"] == pytest.approx((r["seg"]["whole"]["csbdeep"] - 0.5) / 0.5)
    # scored plane by plane without the alignment it would be worse
    from isonet.metrics import psnr_affine

    assert psnr_affine(theirs[:n_iso], gt) < r["psnr"]["gt"]["csbdeep"] - 10  # 20.9 vs 37.0 dB
