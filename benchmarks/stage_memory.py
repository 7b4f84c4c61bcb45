"""Peak resident memory of the I/O stages (convert, patches, stitch, export-tiff, export-ngff04) on a
volume and on one 8x larger: the growth should be ~1 (bounded by chunk and block sizes).

Each stage runs as its own ``isonet`` process, as in the workflow; its peak RSS is the child's
``ru_maxrss`` from ``os.wait4``, taken by a small launcher process. The inputs are written here: an acquired uint16 TIFF (σ = 4) for
convert and patches, and a float32 OME-Zarr on the isotropic grid in the predict stage's chunks
(64 × 128 × 128) for stitch and the exports, so that predict itself (measured by
benchmarks/scale.py) is not needed.

    python benchmarks/stage_memory.py [--acquired 32 256 256] [--workdir /tmp/isonet-stage-memory] [--json out.json]
        [--stages convert patches]

``--stages`` runs only the named stages (convert and patches need no predicted volume, which is
then not written: at ``--acquired 32 1024 1024`` the 8x one would be 4 GiB of float32).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from isonet.storage import create_ome_zarr

SIGMA = 4
VOXEL = (0.8, 0.2, 0.2)
STAGES = ("convert", "patches", "stitch", "export_tiff", "export_ngff04")
#: stages that read the float32 "predicted" volume (or what stitch makes of it)
NEED_PREDICTED = {"stitch", "export_tiff", "export_ngff04"}


# Linux carries a process's peak RSS across exec, and a forked child starts from its parent's:
# the command is started by a small launcher process, so that its figure is its own.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; its wall time (s) and peak RSS (MiB: ``ru_maxrss`` of that process alone)."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], stdout=out, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    *messages, peak = result.stderr.strip().splitlines() or [""]
    with open(log, "a") as out:
        out.write("\n".join(messages) + "\n")
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}); see {log}")
    return {"s": round(seconds, 2), "max_rss_mib": round(int(peak) / 1024, 1)}


def write_inputs(work: Path, acquired: tuple[int, int, int], predicted: bool = True) -> None:
    rng = np.random.default_rng(0)
    with tifffile.TiffWriter(work / "acquired.tif", imagej=True) as tif:
        planes = (rng.integers(100, 4000, acquired[1:], dtype=np.uint16) for _ in range(acquired[0]))
        tif.write(planes, shape=acquired, dtype=np.uint16, resolution=(1 / VOXEL[2], 1 / VOXEL[1]),
                  metadata={"axes": "ZYX", "spacing": VOXEL[0], "unit": "um"})
    if not predicted:
        return
    iso = (acquired[0] * SIGMA, *acquired[1:])
    _, level0 = create_ome_zarr(work / "predicted.ome.zarr", iso, np.float32, (64, 128, 128), (VOXEL[2],) * 3,
                                provenance={"stage": "predict"})
    for z0 in range(0, iso[0], 64):
        z1 = min(z0 + 64, iso[0])
        level0[z0:z1] = rng.random((z1 - z0, *iso[1:]), dtype=np.float32)


def measure(work: Path, acquired: tuple[int, int, int], only: Sequence[str] = STAGES) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_inputs(work, acquired, predicted=bool(NEED_PREDICTED & set(only)))
    isonet = [sys.executable, "-m", "isonet.cli"]
    w = str(work)
    run_measured([*isonet, "psf", "--out-npz", f"{w}/psf.npz", "--out-json", f"{w}/psf.json", "--kind", "gaussian",
                  "--params", json.dumps({"sigma_xy": 2.0, "sigma_z": 8.0})], work / "psf.log")
    stages = {
        "convert": ["convert", f"{w}/acquired.tif", f"{w}/input.ome.zarr", "--chunks", "32", "256", "256"],
        "patches": ["patches", f"{w}/input.ome.zarr", f"{w}/psf.npz", f"{w}/patches.npz", "--n-patches", "500",
                    "--patch-size", "32", "--camera", "none"],
        "stitch": ["stitch", f"{w}/predicted.ome.zarr", f"{w}/restored.ome.zarr", "--levels", "3"],
        "export_tiff": ["export-tiff", f"{w}/restored.ome.zarr", f"{w}/restored.tif"],
        "export_ngff04": ["export-ngff04", f"{w}/restored.ome.zarr", f"{w}/restored.ngff04.zarr"],
    }
    out = {}
    for name, args in stages.items():
        if name not in only:
            continue
        out[name] = run_measured([*isonet, *args], work / f"{name}.log")
        print(f"  {name:14s} {out[name]['max_rss_mib']:8.1f} MiB {out[name]['s']:7.1f} s", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--acquired", type=int, nargs=3, default=[32, 256, 256], help="smaller acquired volume (z y x)")
    p.add_argument("--workdir", default="/tmp/isonet-stage-memory")
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                   help="run only these stages (default: all)")
    args = p.parse_args()
    small = tuple(args.acquired)
    large = tuple(2 * s for s in small)
    runs = {}
    for label, shape in (("1x", small), ("8x", large)):
        iso_bytes = shape[0] * SIGMA * shape[1] * shape[2] * 4
        print(f"{label}: acquired {shape}, restored float32 {iso_bytes / 2**20:.0f} MiB", flush=True)
        runs[label] = {"acquired_shape": list(shape), "acquired_mib": round(int(np.prod(shape)) * 2 / 2**20, 1),
                       "restored_mib": round(iso_bytes / 2**20, 1),
                       "stages": measure(Path(args.workdir) / label, shape, args.stages)}
    growth = {name: round(runs["8x"]["stages"][name]["max_rss_mib"] / runs["1x"]["stages"][name]["max_rss_mib"], 3)
              for name in runs["1x"]["stages"]}
    print("memory growth 8x / 1x: " + ", ".join(f"{k} {v:.2f}" for k, v in growth.items()))
    result = {"memory_growth": growth, "runs": runs, "command": " ".join(sys.argv),
              "larger_acquired_exceeds_smaller_peak": runs["8x"]["acquired_mib"] > max(
                  s["max_rss_mib"] for s in runs["1x"]["stages"].values()),
              "larger_restored_exceeds_smaller_peak": runs["8x"]["restored_mib"] > max(
                  s["max_rss_mib"] for s in runs["1x"]["stages"].values()),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
