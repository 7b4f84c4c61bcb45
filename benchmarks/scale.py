"""Scale benchmark: memory growth per stage, per-voxel time of predict and segment, predict throughput.

Runs the workflow (Snakemake, this repository's workflow/Snakefile and config/config.yaml) on
synthetic phantoms of 1x, 2x, 4x and 8x the base volume (z doubled, then y, then x). Samples 1x
and 8x train their own model (so that every stage, patches and train included, runs at both
sizes); 2x and 4x are restored with the 1x model (``model_from``). Figures come from the
workflow's own benchmark records, ``logs/benchmarks/<sample>/<rule>.tsv`` (``s``, ``max_rss`` in
MB, sampled by Snakemake over the job's process tree):

- ``memory_growth``: per rule, max_rss at 8x / max_rss at 1x (target <= 1.2 when the 8x volume is
  larger than the 1x run's peak; ``larger_volume_exceeds_smaller_peak`` says whether it is);
- ``per_voxel_time_ratio``: for predict and segment, (s / voxel) at 8x / (s / voxel) at 1x,
  with the 2x and 4x points under ``per_voxel_time`` (target: flat, <= 1.2);
- ``throughput_ratio``: voxels/s of the predict rule at 8x over voxels/s of the bare network on
  slices of the same shape, same machine and threads (or the figure of benchmarks/predict_large.py
  when that script takes ``--json`` and reports ``throughput_ratio``).

    python benchmarks/scale.py [--base 64 256 256] [--cores 2] [--workdir /tmp/isonet-scale] [--json out.json]

A quick check: ``--base 32 128 128 --train-steps 20``; the reported figures: see docs/benchmark/scale.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
MULTIPLES = (1, 2, 4, 8)
MEASURED_RULES = ("convert", "patches", "train", "predict", "stitch", "export_tiff", "export_ngff04", "segment",
                  "evaluate")
SCALED_RULES = ("predict", "segment")


def scaled_shape(base: tuple[int, int, int], multiple: int) -> tuple[int, int, int]:
    """``base`` with z, then y, then x doubled until it holds ``multiple`` times the voxels."""
    shape = list(base)
    for axis in range(int(np.log2(multiple))):
        shape[axis % 3] *= 2
    return tuple(shape)


def deploy(work: Path, base: tuple[int, int, int], args: argparse.Namespace) -> None:
    (work / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config" / "config.yaml", work / "config" / "config.yaml")
    rows = ["sample\tinput\tmodel_from"]
    for m in args.multiples:
        rows.append(f"x{m}\tsynthetic\t{'x1' if m in (2, 4) else ''}")
    (work / "config" / "samples.tsv").write_text("\n".join(rows) + "\n")
    cores = args.cores
    overlay = {
        "samples": "config/samples.tsv",
        "overrides": {f"x{m}": {"synthetic": {"shape": list(scaled_shape(base, m))}} for m in args.multiples},
        "patches": {"n_patches": args.patches},
        "train": {"steps": args.train_steps, "epochs": 1, "model": args.model},
        "stitch": {"pyramid_levels": 3, "export_tiff": True, "export_ngff04": True},
        # every job takes all cores: one job at a time, so no job's time is shared with another's
        "resources": {"default": {"threads": cores, "mem_mb": 4000, "runtime": 600},
                      **{rule: {"threads": cores} for rule in ("train", "predict", "segment")}},
    }
    if args.predict_block:
        overlay["predict"] = {"block": args.predict_block}
    if args.segment_block:
        overlay["segment"] = {"block": args.segment_block}
    (work / "overlay.yaml").write_text(yaml.safe_dump(overlay))


def run_workflow(work: Path, cores: int) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(work),
           "--workflow-profile", str(REPO / "profiles" / "default"), "--configfile", "overlay.yaml",
           "--cores", str(cores)]
    t0 = time.perf_counter()
    with open(work / "snakemake.log", "w") as log:
        result = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"the workflow failed ({result.returncode}); see {work / 'snakemake.log'}")
    return time.perf_counter() - t0


def read_record(work: Path, sample: str, rule: str) -> dict | None:
    path = work / "logs" / "benchmarks" / sample / f"{rule}.tsv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        row = next(csv.DictReader(f, delimiter="\t"))
    return {"s": float(row["s"]), "max_rss_mb": float(row["max_rss"]), "cpu_time": float(row["cpu_time"])}


def restored_shape(work: Path, sample: str) -> tuple[int, ...]:
    meta = json.loads((work / "results" / sample / "restored.ome.zarr" / "0" / "zarr.json").read_text())
    return tuple(meta["shape"])


def bare_network_throughput(work: Path, shape: tuple[int, int, int], threads: int, batch_size: int,
                            precision: str, n_slices: int) -> dict:
    """Voxels/s of the network alone on xz slices of ``shape`` (each voxel is restored twice: xz and yz)."""
    import torch

    from isonet.modelfile import load_model
    from isonet.predict import auto_batch_size, predict_slices, prepare_model, resolve_precision

    torch.set_num_threads(threads)
    model, _ = load_model(work / "results" / "x1" / "train" / "model.safetensors")
    device = torch.device("cpu")
    model = prepare_model(model, device)
    slices = np.random.default_rng(0).random((n_slices, shape[0], shape[2]), dtype=np.float32)
    precision = resolve_precision(precision, device)
    if batch_size in (None, "auto"):  # as the predict stage sizes them
        batch_size = auto_batch_size((shape[0], shape[2]), device)
    predict_slices(model, slices[:batch_size], batch_size, device, precision)  # warm-up
    t0 = time.perf_counter()
    predict_slices(model, slices, batch_size, device, precision)
    seconds = time.perf_counter() - t0
    voxels_per_s = n_slices * shape[0] * shape[2] / seconds / 2
    return {"voxels_per_s": voxels_per_s, "slices": n_slices, "slice_shape": [shape[0], shape[2]],
            "seconds": seconds, "threads": threads, "precision": precision, "batch_size": batch_size}


def predfast_throughput(script: Path) -> dict | None:
    """``throughput_ratio`` from a predict benchmark script that writes JSON (``--json``), if there is one."""
    if not script.is_file():
        return None
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True).stdout
    if "--json" not in help_text:
        return None
    out = script.with_suffix(".scale-tmp.json")
    result = subprocess.run([sys.executable, str(script), "--json", str(out)], capture_output=True, text=True)
    if result.returncode or not out.is_file():
        return None
    figures = json.loads(out.read_text())
    out.unlink()
    return figures if "throughput_ratio" in figures else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=int, nargs=3, default=[64, 256, 256], help="1x phantom shape (z y x, isotropic grid)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=50, help="training steps (time is not what is measured)")
    p.add_argument("--patches", type=int, default=600)
    p.add_argument("--bare-slices", type=int, default=32, help="slices timed for the bare network")
    p.add_argument("--multiples", type=int, nargs="+", default=list(MULTIPLES), choices=MULTIPLES,
                   help="volumes to run (1 and 8 are needed; 2 and 4 only add per-voxel time points)")
    p.add_argument("--model", default="isonet2",
                   help="train.model; a memory run may use 'tiny' (memory does not depend on the network; "
                        "throughput and per-voxel time then describe that network, not the default)")
    p.add_argument("--predict-block", type=int, nargs=3, default=None,
                   help="predict.block (default: the config's), smaller so that x1 already spans several blocks")
    p.add_argument("--segment-block", type=int, nargs=3, default=None, help="segment.block (default: the config's)")
    p.add_argument("--workdir", default="/tmp/isonet-scale")
    p.add_argument("--keep", action="store_true", help="reuse finished jobs in --workdir")
    p.add_argument("--json", default=None)
    p.add_argument("--predict-large", action="store_true",
                   help="take throughput_ratio from benchmarks/predict_large.py (its own volumes) instead")
    p.add_argument("--records-only", action="store_true",
                   help="compute the figures from --workdir's benchmark records of an earlier run (no workflow run)")
    args = p.parse_args()
    work = Path(args.workdir)
    base = tuple(args.base)
    if args.records_only:
        wall = float("nan")
    else:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        deploy(work, base, args)
        wall = run_workflow(work, args.cores)

    records = {f"x{m}": {rule: read_record(work, f"x{m}", rule) for rule in MEASURED_RULES} for m in args.multiples}
    voxels = {f"x{m}": int(np.prod(restored_shape(work, f"x{m}"))) for m in args.multiples}
    growth = {}
    for rule in MEASURED_RULES:
        small, large = records["x1"][rule], records["x8"][rule]
        if small and large:
            growth[rule] = round(large["max_rss_mb"] / small["max_rss_mb"], 3)
    per_voxel = {rule: {s: records[s][rule]["s"] / voxels[s] for s in records if records[s][rule]}
                 for rule in SCALED_RULES}
    per_voxel_ratio = {rule: round(t["x8"] / t["x1"], 3) for rule, t in per_voxel.items() if {"x1", "x8"} <= set(t)}

    defaults = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config, segment_config = defaults["predict"], defaults["segment"]
    shape8 = restored_shape(work, "x8")
    bare = bare_network_throughput(work, shape8, args.cores, config["batch_size"], config["precision"],
                                   args.bare_slices)
    predict_vps = voxels["x8"] / records["x8"]["predict"]["s"]
    throughput = {"source": "benchmarks/scale.py", "predict_voxels_per_s": predict_vps,
                  "bare_network_voxels_per_s": bare["voxels_per_s"], "bare_network": bare,
                  "throughput_ratio": round(predict_vps / bare["voxels_per_s"], 3)}
    for script in ("predict_large.py", "inference.py") if args.predict_large else ():
        external = predfast_throughput(REPO / "benchmarks" / script)
        if external is not None:
            throughput = {"source": f"benchmarks/{script}", **external, "scale_py_measurement": throughput}
            break

    peak_small = max(r["max_rss_mb"] for r in records["x1"].values() if r)
    result = {
        "throughput_ratio": throughput["throughput_ratio"],
        "memory_growth": growth,
        "per_voxel_time_ratio": per_voxel_ratio,
        "per_voxel_time": {rule: {s: f"{t:.3e}" for s, t in v.items()} for rule, v in per_voxel.items()},
        "throughput": throughput,
        "larger_volume_exceeds_smaller_peak": voxels["x8"] * 4 / 1e6 > peak_small,
        "volumes": {s: {"restored_shape": list(restored_shape(work, s)), "voxels": v,
                        "restored_float32_mb": round(v * 4 / 1e6, 1)} for s, v in voxels.items()},
        "records": records,
        "settings": {"base": list(base), "cores": args.cores, "train_steps": args.train_steps,
                     "patches": args.patches, "multiples": args.multiples, "model": args.model,
                     "predict_block": args.predict_block or config["block"],
                     "segment_block": args.segment_block or segment_config["block"],
                     "segment_halo": segment_config["halo"], "workflow_wall_s": round(wall, 1)},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "load_average_after": os.getloadavg()},
    }
    print(f"volumes (restored voxels): {voxels}")
    print("memory growth 8x/1x: " + ", ".join(f"{k} {v:.2f}" for k, v in growth.items()))
    print("per-voxel time 8x/1x: " + ", ".join(f"{k} {v:.2f}" for k, v in per_voxel_ratio.items()))
    print(f"throughput ratio (predict / bare network): {result['throughput_ratio']:.3f} ({throughput['source']})")
    print(f"8x restored volume ({voxels['x8'] * 4 / 1e6:.0f} MB float32) > 1x peak RSS ({peak_small:.0f} MB): "
          f"{result['larger_volume_exceeds_smaller_peak']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
