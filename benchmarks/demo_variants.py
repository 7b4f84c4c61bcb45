"""The demo under training variants, several seeds each: what `make demo` restores and segments.

Each (variant, seed) is a whole workflow run of the demo sample in its own directory
(``WORKDIR/<variant>_s<seed>/``): this repository's workflow and ``config/config.yaml`` with the
variant's keys set under ``overrides.demo`` and ``train.seed`` = seed. A variant whose name ends
in ``_tta`` reuses the trained model of the variant without the suffix (its directory is copied,
so only predict and what follows run again; likewise ``_p32``). Figures come from the run's own records:
``results/demo/metrics.json`` (PSNR after the affine fit vs GT and iso-GT, SEG of all nuclei and of
the interior ones, gap closed), the train log (steps, best validation PSNR, training seconds) and
Snakemake's benchmark records (seconds per rule), plus the whole run's wall time.

Usage (from the repository root; the runs take ~10 min each on 2 CPU cores)::

    python benchmarks/demo_variants.py WORKDIR OUT.json cos600 plat600 --seeds 0 1 2
    python benchmarks/demo_variants.py WORKDIR OUT.json --records-only   # tabulate finished runs

Variants are defined in ``VARIANTS`` below (the overrides each one sets).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

#: the default since the eighth session: two rounds, 300 + 200 steps, 96 restored planes
_R2S300 = {"steps": 300, "schedule": "cosine", "dropout": 0.0, "rounds": 2, "refine_steps": 200, "refine_planes": 96}

VARIANTS = {
    # the defaults before the cosine schedule: 1800 steps at a constant rate (halved on a plateau)
    "plat1800": {"train": {"steps": 1800, "schedule": "plateau", "dropout": 0.2}},
    "plat600": {"train": {"steps": 600, "schedule": "plateau", "dropout": 0.2}},
    "cos600": {"train": {"steps": 600, "schedule": "cosine", "dropout": 0.2}},
    "cos600_tta": {"train": {"steps": 600, "schedule": "cosine", "dropout": 0.2}, "predict": {"tta": True}},
    # (a variant without train.rounds runs one round: all ran before the key existed)
    # without dropout: the default since the fifth session (the variants above pin the paper's 0.2,
    # the default they ran with)
    "cos600d0": {"train": {"steps": 600, "schedule": "cosine", "dropout": 0.0}},
    # without dropout, 128² patches at batch 4 (the same pixels per step; twice the receptive field)
    "cos600d0p128": {"train": {"steps": 600, "schedule": "cosine", "dropout": 0.0, "batch_size": 4},
                     "patches": {"patch_size": 128, "n_patches": 2000}},
    # cos600d0mse (without dropout, the batch's mean squared error as the objective instead of the
    # per-patch PSNR) needs train.loss, which only commit ccd48b6 has (reverted: no gain)
    # the split training kernel (h_rot = h_iso * h_split): blur only along the axial direction
    "cos600split": {"train": {"steps": 600, "schedule": "cosine", "dropout": 0.2},
                    "psf": {"kind": "gaussian", "params": {"sigma_xy": 2.0, "sigma_z": 8.0}, "mode": "split", "file": ""}},
    # sixth session, without dropout: the same samples in twice the steps at half the batch, and the split kernel
    "cos600d0b8": {"train": {"steps": 1200, "schedule": "cosine", "dropout": 0.0, "batch_size": 8, "warmup_steps": 200}},
    "cos600d0split": {"train": {"steps": 600, "schedule": "cosine", "dropout": 0.0},
                      "psf": {"kind": "gaussian", "params": {"sigma_xy": 2.0, "sigma_z": 8.0}, "mode": "split", "file": ""}},
    # eighth session: half the steps, the first of two self-supervised rounds (benchmarks/demo_oracle.py --bootstrap)
    "cos300d0": {"train": {"steps": 300, "schedule": "cosine", "dropout": 0.0, "rounds": 1}},
    # two self-supervised rounds (train.rounds): 300 steps, then 200 on 96 restored central planes
    "r2s300": {"train": dict(_R2S300)},
    # ninth session: a third round, the split kernel with two rounds, and twice the first round with three
    "r3s300": {"train": {**_R2S300, "rounds": 3}},
    "r2s300split": {"train": dict(_R2S300),
                    "psf": {"kind": "gaussian", "params": {"sigma_xy": 2.0, "sigma_z": 8.0}, "mode": "split", "file": ""}},
    "r3s600": {"train": {**_R2S300, "steps": 600, "rounds": 3}},
    # tenth session: the warm-up (both rounds), float32 training, and (suffix _p32) the default's
    # model restored again in float32. Two more ran with code that was not kept (no gain):
    # r2s300l1 (the mean absolute error as the objective) and r2s300carry (the later round keeps the
    # round before's Adam state and has no warm-up)
    **{f"r2s300w{w}": {"train": {**_R2S300, "warmup_steps": w}} for w in (0, 20, 150, 200)},
    # fourteenth session: four times the default's training (1200 + 400 + 400 steps, three rounds).
    # One more ran with code that was not kept (no gain): r2s300axial (round 2's pairs from the
    # xz and yz slices of the restored central planes, degraded along their lateral axis only)
    "r3s1200": {"train": {**_R2S300, "steps": 1200, "rounds": 3, "refine_steps": 400}},
    "r2s300t32": {"train": {**_R2S300, "precision": "fp32"}},
    "r2s300_p32": {"train": dict(_R2S300), "predict": {"precision": "fp32"}},
}

#: variants whose name ends in one of these restore the model of the variant without the suffix again
REUSE_MODEL_SUFFIXES = ("_tta", "_p32")


def run_variant(workdir: Path, variant: str, seed: int, snakemake: str) -> None:
    run = workdir / f"{variant}_s{seed}"
    base = variant
    for suffix in REUSE_MODEL_SUFFIXES:
        base = base.removesuffix(suffix)
    if base != variant:  # same model, restored again with the variant's predict settings
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(workdir / f"{base}_s{seed}", run, symlinks=True)
        (run / "wall.txt").unlink(missing_ok=True)
    else:
        shutil.rmtree(run, ignore_errors=True)
        (run / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "samples.tsv", run / "config" / "samples.tsv")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    overrides = json.loads(json.dumps(VARIANTS[variant]))
    overrides.setdefault("train", {})["seed"] = seed
    overrides["train"].setdefault("rounds", 1)  # variants without the key ran before train.rounds existed
    config["samples"] = "config/samples.tsv"
    config["overrides"] = {"demo": overrides}
    (run / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    t0 = time.time()
    with open(run / "snake.log", "w") as log:
        subprocess.run([snakemake, "-s", str(REPO / "workflow" / "Snakefile"), "--cores", "2", "--rerun-incomplete"],
                       cwd=run, stdout=log, stderr=subprocess.STDOUT, check=True)
    (run / "wall.txt").write_text(f"wall {time.time() - t0:.0f}\n")


def records(run: Path) -> dict:
    """The figures of one finished run."""
    m = json.loads((run / "results/demo/metrics.json").read_text())
    seg, inner = m["seg"], m["seg_interior"]
    log = (run / "logs/demo/train.log").read_text()
    rule_s = {}
    for tsv in sorted((run / "logs/benchmarks/demo").glob("*.tsv")):
        rule_s[tsv.stem] = float(tsv.read_text().splitlines()[1].split("\t")[0])
    wall = (run / "wall.txt").read_text().split()[1] if (run / "wall.txt").exists() else None
    return {
        "psnr_gt": m["psnr"]["gt"]["restored"], "psnr_iso_gt": m["psnr"]["iso_gt"]["restored"],
        "psnr_gt_cubic": m["psnr"]["gt"]["cubic"], "psnr_iso_gt_cubic": m["psnr"]["iso_gt"]["cubic"],
        "seg": seg["restored"], "seg_input": seg["input"], "seg_iso_gt": seg["iso_gt"], "gap_closed": seg["gap_closed"],
        "seg_interior": inner["restored"], "seg_interior_input": inner["input"], "seg_interior_iso_gt": inner["iso_gt"],
        "gap_closed_interior": (inner["restored"] - inner["input"]) / (inner["iso_gt"] - inner["input"]),
        "interior_nuclei": inner["n_objects"], "z_margin": inner["z_margin"],
        "best_val_psnr": -float(re.findall(r"best validation loss (-?[\d.]+)", log)[-1]),
        "steps": int(re.findall(r"step (\d+)/", log)[-1]),
        "rule_seconds": rule_s, "wall_seconds": float(wall) if wall else None,
    }


def object_shapes(run: Path) -> dict:
    """How the restored segmentation's nuclei differ in shape from the ground truth's.

    Each GT nucleus is matched to the restored label that covers most of it; returned are the
    medians over nuclei of (restored / GT) voxel count and extent along z and along y, and how
    many GT nuclei have no match or share their match with another GT nucleus.
    """
    import numpy as np
    import tifffile
    import zarr
    from scipy import ndimage as ndi

    gt = tifffile.imread(run / "resources/synthetic/demo/labels.tif")
    pred = np.asarray(zarr.open_array(str(run / "results/demo/restored.ome.zarr/labels/nuclei/0")))
    gt = gt[: pred.shape[0]]
    ratios = {"volume": [], "z_extent": [], "y_extent": []}
    matched, unmatched = [], 0
    for i, box in enumerate(ndi.find_objects(gt), 1):
        if box is None:
            continue
        box = tuple(slice(max(0, b.start - 12), b.stop + 12) for b in box)
        g = gt[box] == i
        hits = pred[box][g]
        hits = hits[hits > 0]
        if not len(hits):
            unmatched += 1
            continue
        q = int(np.bincount(hits).argmax())
        p = pred[box] == q
        matched.append(q)
        ratios["volume"].append(p.sum() / g.sum())
        for axis, key in ((0, "z_extent"), (1, "y_extent")):
            other = tuple(a for a in range(3) if a != axis)
            extent = [np.ptp(np.nonzero(m.any(axis=other))[0]) + 1 for m in (p, g)]
            ratios[key].append(extent[0] / extent[1])
    shared = len(matched) - len(set(matched))
    return {**{f"median_{k}_ratio": float(np.median(v)) for k, v in ratios.items()},
            "gt_nuclei": len(matched) + unmatched, "unmatched": unmatched, "sharing_a_label": shared}


def summarise(runs: dict) -> dict:
    keys = ("psnr_gt", "psnr_iso_gt", "seg", "gap_closed", "seg_interior", "gap_closed_interior", "best_val_psnr")
    out = {}
    for variant in sorted({n.rsplit("_s", 1)[0] for n in runs}):
        rs = [r for n, r in runs.items() if n.rsplit("_s", 1)[0] == variant]
        out[variant] = {"n": len(rs), **{k: {"mean": statistics.mean(r[k] for r in rs),
                                              "std": statistics.stdev(r[k] for r in rs) if len(rs) > 1 else None}
                                          for k in keys}}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("out_json", type=Path)
    ap.add_argument("variants", nargs="*", help=f"any of {', '.join(sorted(VARIANTS))}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--records-only", action="store_true", help="tabulate the finished runs in WORKDIR")
    ap.add_argument("--shapes", action="store_true", help="also compare nucleus shapes with the GT labels")
    ap.add_argument("--snakemake", default=str(Path(sys.executable).with_name("snakemake")))
    a = ap.parse_args()
    unknown = sorted(set(a.variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    if not a.records_only:
        for seed in a.seeds:
            for variant in a.variants:
                run_variant(a.workdir, variant, seed, a.snakemake)
    runs = {p.name: records(p) for p in sorted(a.workdir.iterdir())
            if re.fullmatch(r".+_s\d+", p.name) and (p / "results/demo/metrics.json").exists()}
    if a.shapes:
        for name in runs:
            runs[name]["object_shapes"] = object_shapes(a.workdir / name)
    summary = summarise(runs)
    for name, r in runs.items():
        print(f"{name:18s} GT {r['psnr_gt']:.2f} iso-GT {r['psnr_iso_gt']:.2f} SEG {r['seg']:.3f} "
              f"({100 * r['gap_closed']:.0f} %) interior {r['seg_interior']:.3f} ({100 * r['gap_closed_interior']:.0f} %) "
              f"val {r['best_val_psnr']:.2f} train {r['rule_seconds'].get('train', float('nan')):.0f} s "
              f"predict {r['rule_seconds'].get('predict', float('nan')):.0f} s wall {r['wall_seconds']}"
              + (f" shapes {r['object_shapes']}" if "object_shapes" in r else ""))
    for variant, s in summary.items():
        print(variant, s["n"], {k: (round(v["mean"], 3), v["std"] and round(v["std"], 3))
                                for k, v in s.items() if k != "n"})
    a.out_json.write_text(json.dumps({"variants": VARIANTS, "runs": runs, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
