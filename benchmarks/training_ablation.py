"""Ablation of the training path (issue 7): each change measured on the same stacks and seeds.

Usage: nice python benchmarks/training_ablation.py OUT.json ROW [ROW ...] [--seeds 0,1,2] [--threads 1] [--no-tta]
       python benchmarks/training_ablation.py --table OUT.json [OUT2.json ...]

Nuclei phantom 128x136x136 (32 acquired planes; 136 leaves room for 128² patches), gaussian PSF sigma 2/8, σ = 4, the benchmark's
camera (200 photons, read noise 2, offset 100). Stack ``k`` and training seed ``k`` for each seed
``k``. Every row trains IsoNet-2 for a fixed budget (200 optimiser steps of 4×64² pixels, one pass over the
patches) on one torch thread and
reports PSNR (affine fit) of the restored volume against GT and iso-GT, and SEG on the interior
(ground-truth nuclei whose centroid lies at least 16 isotropic planes from either z-end; every
volume thresholded by Otsu's rule) next to the input's (cubic) and iso-GT's SEG. Rows are
cumulative: each adds one change to the row before it (see ``ROWS``). Results are appended to
OUT.json (one record per row and seed); ``--table`` prints the mean ± std table in Markdown.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from isonet import psf as P
from isonet.baselines import cubic_upsample
from isonet.benchmark import stack_seed
from isonet.metrics import psnr_affine, seg_score
from isonet.segment import segment_nuclei

SHAPE = (128, 136, 136)
FACTOR = 4
CAMERA = {"gain": 1.0, "offset": 100.0, "read_noise": 2.0}
INTERIOR = 16

#: Cumulative rows: name -> settings that differ from the row before.
ROWS = {
    # the code before issue 7 (noise on the upsampled inputs, drawn once; 64² patches; random
    # output layer, 100 warm-up steps; validation patches from the training planes); measured
    # with train_restore_baseline on the code of commit d54cc59
    "baseline": {},
    # noise on the acquired samples, then cubic upsampling; redrawn every epoch; known camera
    "acquisition_noise": {"noise": "acquired", "camera": "known", "patch_size": 64, "batch_size": 4,
                          "zero_init": False, "warmup_steps": 100, "validation": "patches"},
    # the camera estimated from the stack instead of the simulation's
    "estimated_camera": {"camera": "estimated"},
    # 128² patches (twice IsoNet-2's receptive field), batch 1: the same pixels per step
    "context_128": {"patch_size": 128, "batch_size": 1},
    # zero-initialised residual output, network seeded, no warm-up
    "zero_init": {"zero_init": True, "warmup_steps": 0},
    # validation on held-out lateral planes
    "heldout_planes": {"validation": "planes", "tta": True},
    # not cumulative: acquisition_noise's settings with the split kernel h_split (h_rot = h_iso * h_split),
    # whose training inputs carry the axial slices' blur exactly for a gaussian PSF (full: h_xy * h_rot)
    "split_kernel": {"noise": "acquired", "camera": "known", "patch_size": 64, "batch_size": 4, "zero_init": False,
                     "warmup_steps": 100, "validation": "patches", "tta": False, "kernel": "split"},
    # not cumulative: acquisition_noise's settings with the benchmark's tuned IsoNet-2 rate and dropout
    "tuned_lr_dropout": {"noise": "acquired", "camera": "known", "patch_size": 64, "batch_size": 4,
                         "zero_init": False, "warmup_steps": 100, "validation": "patches", "tta": False,
                         "kernel": "full", "learning_rate": 3e-3, "dropout": 0.1},
}
STEPS = 200
PIXELS = 800 * 64**2  # training patches' pixels: 200 steps of 4 patches of 64² is one pass


def row_settings(name: str) -> dict:
    settings: dict = {}
    for row, change in ROWS.items():
        settings.update(change)
        if row == name:
            return settings
    raise SystemExit(f"unknown row {name!r}; rows: {', '.join(ROWS)}")


def make_stack(seed: int, kernel_kind: str = "full"):
    from isonet.synthetic import make_dataset

    h = P.gaussian_psf(2, 8)
    ds = make_dataset("nuclei", SHAPE, h, P.isotropic_psf(h), FACTOR, seed=stack_seed("nuclei", "ablation", seed),
                      photons=200, read_noise=CAMERA["read_noise"], offset=CAMERA["offset"])
    h_rot = P.rotate_psf_to_lateral(h)
    h_train = P.split_psf(h_rot, P.isotropic_psf(h)) if kernel_kind == "split" else h_rot
    kernel = P.lateral_plane_kernel(h_train)
    return ds, kernel, P.commuting_flips(kernel)


def interior_labels(labels: np.ndarray) -> np.ndarray:
    """Ground-truth labels with the nuclei centred within ``INTERIOR`` planes of a z-end removed."""
    ids = np.arange(1, int(labels.max()) + 1)
    zc = np.array(ndimage.center_of_mass(labels > 0, labels, ids))[:, 0]
    keep = ids[(zc >= INTERIOR) & (zc < labels.shape[0] - INTERIOR)]
    return np.where(np.isin(labels, keep), labels, 0)


def seg_interior(volume: np.ndarray, gt_interior: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    seg = segment_nuclei(volume, threshold=float(threshold_otsu(volume)), min_distance=5, min_size=64)
    return seg_score(gt_interior, seg)


def train_restore_baseline(acq, kernel, flips, seed, steps):
    """Today's code (before issue 7): the benchmark's train_and_restore with a step budget."""
    from isonet.benchmark import add_camera_noise
    from isonet.nets import build_network, halo_for
    from isonet.patches import fit_normalization, sample_training_pairs
    from isonet.predict import prepare_model, restore_volume
    from isonet.train import TrainConfig, fit

    norm = fit_normalization(acq)
    planes = [norm.apply(p) for p in acq]
    thr = float(np.percentile(np.stack(planes), 90))
    X, Y = sample_training_pairs(planes, kernel, FACTOR, PIXELS // 64**2 * 10 // 9, 64, thr, seed=seed)
    X = add_camera_noise(X, norm, CAMERA["offset"], CAMERA["read_noise"], seed)
    epochs = -(-steps // -(-int(len(X) * 0.9) // 4))
    net = build_network("isonet2", dropout=0.2, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=4, learning_rate=5e-3, flip_axes=flips, seed=seed, device="cpu",
                         precision="fp32")
    t0 = time.perf_counter()
    state = fit(net, X, Y, config, log=lambda m: None)
    t_train = time.perf_counter() - t0
    net.load_state_dict(state.best_model)
    net = prepare_model(net, torch.device("cpu"))
    t0 = time.perf_counter()
    restored = restore_volume(net, acq, FACTOR, norm, halo_for(net), precision="fp32")
    return restored, {"train_s": t_train, "predict_s": time.perf_counter() - t0,
                      "steps": epochs * -(-int(len(X) * 0.9) // 4)}


def train_restore(acq, kernel, flips, seed, settings, steps=STEPS):
    """The training path of this branch, with the row's settings."""
    from isonet.camera import Camera, estimate_camera
    from isonet.nets import build_network, halo_for
    from isonet.patches import fit_normalization, sample_training_pairs, split_planes
    from isonet.predict import prepare_model, restore_volume, tta_flips
    from isonet.train import TrainConfig, fit

    norm = fit_normalization(acq)
    planes = [norm.apply(p) for p in acq]
    thr = float(np.percentile(np.stack(planes), 90))
    camera = Camera(**CAMERA, source="synthetic") if settings["camera"] == "known" else estimate_camera(list(acq))
    ps = settings["patch_size"]
    n = PIXELS // ps**2 * 10 // 9  # 9 in 10 train, as with a validation_fraction of 0.1
    validation = None
    if settings["validation"] == "planes":
        train_idx, val_idx = split_planes(len(planes), 0.1)
        pairs = sample_training_pairs([planes[i] for i in train_idx], kernel, FACTOR, n, ps, thr, seed=seed,
                                      camera=camera, norm=norm)
        val = sample_training_pairs([planes[i] for i in val_idx], kernel, FACTOR, max(1, n // 10), ps, thr,
                                    seed=seed + 1, camera=camera, norm=norm)
        validation = (val.inputs(np.arange(len(val)), np.random.default_rng([seed, 1 << 20])), val.targets)
    else:
        pairs = sample_training_pairs(planes, kernel, FACTOR, n, ps, thr, seed=seed, camera=camera, norm=norm)
    net = build_network("isonet2", dropout=settings.get("dropout", 0.2), seed=seed, zero_init=settings["zero_init"])
    config = TrainConfig(steps=steps, batch_size=settings["batch_size"], learning_rate=settings.get("learning_rate", 5e-3), flip_axes=flips,
                         seed=seed, device="cpu", precision="fp32", warmup_steps=settings["warmup_steps"])
    t0 = time.perf_counter()
    state = fit(net, pairs, pairs.targets, config, log=lambda m: None, validation=validation)
    t_train = time.perf_counter() - t0
    net.load_state_dict(state.best_model)
    net = prepare_model(net, torch.device("cpu"))
    t0 = time.perf_counter()
    restored = restore_volume(net, acq, FACTOR, norm, halo_for(net), precision="fp32")
    info = {"train_s": t_train, "predict_s": time.perf_counter() - t0, "steps": state.step,
            "best_epoch": int(np.argmin([h["val_loss"] for h in state.history])) + 1, "epochs": state.epoch,
            "camera": camera.to_dict()}
    extra = {}
    if settings.get("tta") and seed == 0:  # 4x the prediction time: measured on the first stack only
        t0 = time.perf_counter()
        extra["tta"] = restore_volume(net, acq, FACTOR, norm, halo_for(net), precision="fp32", tta=tta_flips(flips))
        info["tta_predict_s"] = time.perf_counter() - t0
    return restored, info, extra


def run(row: str, seed: int, steps: int = STEPS, tta: bool = True) -> dict:
    settings = row_settings(row)
    if not tta:
        settings = {**settings, "tta": False}
    ds, kernel, flips = make_stack(seed, settings.get("kernel", "full"))
    acq = ds.acquired.astype(np.float32)
    n = (acq.shape[0] - 1) * FACTOR + 1
    gt, iso_gt = ds.gt[:n], ds.iso_gt[:n]
    gt_int = interior_labels(ds.labels[:n])
    extra = {}
    if row == "baseline":
        restored, info = train_restore_baseline(acq, kernel, flips, seed, steps)
    else:
        restored, info, extra = train_restore(acq, kernel, flips, seed, settings, steps)
    cubic = cubic_upsample(acq, FACTOR)
    rec = {
        "row": row, "seed": seed, "settings": settings,
        "psnr_gt": psnr_affine(restored, gt), "psnr_iso_gt": psnr_affine(restored, iso_gt),
        "seg_interior": seg_interior(restored, gt_int),
        "cubic_psnr_gt": psnr_affine(cubic, gt), "seg_interior_input": seg_interior(cubic, gt_int),
        "seg_interior_iso_gt": seg_interior(iso_gt, gt_int),
        **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in info.items()},
    }
    for name, volume in extra.items():
        rec[f"{name}_psnr_gt"] = psnr_affine(volume, gt)
        rec[f"{name}_psnr_iso_gt"] = psnr_affine(volume, iso_gt)
        rec[f"{name}_seg_interior"] = seg_interior(volume, gt_int)
    return rec


def table(records: list[dict]) -> str:
    rows: dict[str, list[dict]] = {}
    for r in records:
        rows.setdefault(r["row"], []).append(r)
    out = ["| row | seeds | PSNR vs GT (dB) | PSNR vs iso-GT (dB) | SEG interior | SEG gap closed | train s | predict s |",
           "|---|---|---|---|---|---|---|---|"]
    for name, rs in rows.items():
        def ms(key, digits=2):
            v = np.array([r[key] for r in rs], float)
            return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0:.{digits}f}"

        gap = np.array([(r["seg_interior"] - r["seg_interior_input"])
                        / (r["seg_interior_iso_gt"] - r["seg_interior_input"]) for r in rs])
        out.append(f"| {name} | {len(rs)} | {ms('psnr_gt')} | {ms('psnr_iso_gt')} | {ms('seg_interior', 3)} | "
                   f"{100 * gap.mean():.0f} ± {100 * (gap.std(ddof=1) if len(gap) > 1 else 0):.0f} % | "
                   f"{ms('train_s', 0)} | {ms('predict_s', 0)} |")
    for r in records:
        if "tta_psnr_gt" in r:
            out.append("")
            out.append(f"TTA ({r['row']}, seed {r['seed']}): PSNR vs GT {r['tta_psnr_gt']:.2f} dB (without: "
                       f"{r['psnr_gt']:.2f}), vs iso-GT {r['tta_psnr_iso_gt']:.2f} ({r['psnr_iso_gt']:.2f}), SEG "
                       f"interior {r['tta_seg_interior']:.3f} ({r['seg_interior']:.3f}); prediction "
                       f"{r['tta_predict_s']:.0f} s (without: {r['predict_s']:.0f} s)")
    r0 = records[0]
    out.append("")
    out.append(f"cubic: PSNR vs GT {np.mean([r['cubic_psnr_gt'] for r in records]):.2f} dB; SEG interior: input "
               f"{np.mean([r['seg_interior_input'] for r in records]):.3f}, iso-GT "
               f"{np.mean([r['seg_interior_iso_gt'] for r in records]):.3f} (mean over the records; seed 0: "
               f"{r0['seg_interior_input']:.3f} / {r0['seg_interior_iso_gt']:.3f})")
    return "\n".join(out)


def main(argv):
    if argv and argv[0] == "--table":
        records = [r for p in argv[1:] for r in json.loads(Path(p).read_text())]
        print(table(records))
        return
    seeds = [0, 1, 2]
    if "--seeds" in argv:
        i = argv.index("--seeds")
        seeds = [int(s) for s in argv[i + 1].split(",")]
        argv = argv[:i] + argv[i + 2:]
    threads = 1
    if "--threads" in argv:
        i = argv.index("--threads")
        threads = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    no_tta = "--no-tta" in argv
    argv = [a for a in argv if a != "--no-tta"]
    out, rows = Path(argv[0]), argv[1:]
    torch.set_num_threads(threads)
    for row in rows:
        for seed in seeds:
            t0 = time.perf_counter()
            rec = run(row, seed, tta=not no_tta)
            rec["wall_s"] = round(time.perf_counter() - t0, 1)
            rec["threads"] = threads
            records = json.loads(out.read_text()) if out.exists() else []
            records.append(rec)
            out.write_text(json.dumps(records, indent=1))
            print(f"{row} seed {seed}: PSNR vs GT {rec['psnr_gt']:.2f} dB (cubic {rec['cubic_psnr_gt']:.2f}), "
                  f"vs iso-GT {rec['psnr_iso_gt']:.2f}; SEG interior {rec['seg_interior']:.3f} "
                  f"(input {rec['seg_interior_input']:.3f}, iso-GT {rec['seg_interior_iso_gt']:.3f}); "
                  f"{rec['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
