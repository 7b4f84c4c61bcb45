"""Peak memory of the segment and evaluate stages on a volume and on one 8x larger (issue 8).

Each stage runs in a fresh Python process, which reports its peak resident memory
(``VmHWM``) and its resident memory after the imports, so the figures are the stage's own.
The larger volume is the smaller one tiled 2 x 2 x 2 (the same nuclei, density and sizes), so the
per-voxel work is the same. For comparison, ``in-memory segment`` is the former stage: the whole
volume read and segmented by :func:`isonet.segment.segment_nuclei`.

    python benchmarks/segment_memory.py --shape 64 128 128 --block 32 64 64 --halo 24 --out seg-mem.json

With the defaults, the block's window (block + 2 halo per axis, clipped to the volume) is about
the size of the smaller volume, so the stages' peak memory should be nearly the same for both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FACTOR = 2
VOXEL = 0.2


def _status_mb(key: str) -> float:
    """A memory figure of this process from /proc (``VmRSS``: now, ``VmHWM``: peak), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(stage: str, root: Path, block: list[int], halo: int) -> dict:
    """Run one stage on the volumes in ``root``; called in a fresh process."""
    import logging

    from isonet.stages.evaluate import evaluate_stage
    from isonet.stages.segment import segment_stage
    from isonet.storage import atomic_path, create_ome_zarr, read_ome_zarr

    logging.disable(logging.WARNING)
    base = _status_mb("VmRSS")
    t0, cpu0 = time.perf_counter(), time.process_time()
    if stage == "segment":
        summary = segment_stage(root / "restored.ome.zarr", root / "labels.ome.zarr", root / "labels.json",
                                min_size=20, block=block, halo=halo)
        result = {"n_objects": summary["n_objects"]}
    elif stage == "in-memory segment":
        from isonet.segment import segment_nuclei

        array, voxel_size = read_ome_zarr(root / "restored.ome.zarr")
        labels = segment_nuclei(np.asarray(array[:], dtype=np.float32), min_size=20)
        with atomic_path(root / "labels-in-memory.ome.zarr") as tmp:
            _, level0 = create_ome_zarr(tmp, labels.shape, np.int32, array.chunks, voxel_size)
            level0[:] = labels
        result = {"n_objects": int(labels.max())}
    else:
        metrics = evaluate_stage(root / "input.ome.zarr", root / "restored.ome.zarr", root / "labels.ome.zarr",
                                 root / "metrics.json", root / "metrics.md", gt=root / "gt.ome.zarr",
                                 iso_gt=root / "iso_gt.ome.zarr", gt_labels=root / "gt_labels.ome.zarr",
                                 min_size=20, block=block, halo=halo, z_margin=8)
        result = {"seg": metrics["seg"], "psnr": metrics["psnr"]}
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child forked from a large parent
    # would report the parent's size
    peak = _status_mb("VmHWM")
    return {"stage": stage, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak,
            "rss_after_imports_mb": base, **result}


def make_volumes(root: Path, shape: tuple[int, int, int], tiles: int, chunks: tuple[int, int, int]) -> None:
    """Phantom nuclei, an acquisition (every FACTOR-th plane of a z-blur), a 'restoration' and references."""
    from scipy import ndimage as ndi

    from isonet.storage import create_ome_zarr
    from isonet.synthetic import nuclei_phantom

    truth, labels = nuclei_phantom(shape, n_nuclei=max(1, int(np.prod(shape)) // 17000), radius=(4, 9), seed=0)
    if tiles > 1:
        n = int(labels.max())
        pieces = []
        for k in range(tiles**3):
            pieces.append(np.where(labels > 0, labels + k * n, 0))
        labels = np.block([[[pieces[(i * tiles + j) * tiles + m] for m in range(tiles)] for j in range(tiles)]
                           for i in range(tiles)])
        truth = np.tile(truth, (tiles,) * 3)
    truth = truth.astype(np.float32)
    iso = ndi.gaussian_filter(truth, 1.0)
    acquired = (ndi.gaussian_filter(truth, (2.0, 1.0, 1.0))[::FACTOR] * 900 + 100).astype(np.float32)
    grid = (acquired.shape[0] - 1) * FACTOR + 1
    restored = (iso[:grid] + np.random.default_rng(1).normal(0, 0.05, iso[:grid].shape)).astype(np.float32)

    def write(name, data, vz):
        _, level0 = create_ome_zarr(root / name, data.shape, data.dtype, chunks, (vz, VOXEL, VOXEL),
                                    provenance={"stage": "benchmark"})
        level0[:] = data

    write("input.ome.zarr", acquired, VOXEL * FACTOR)
    write("restored.ome.zarr", restored, VOXEL)
    write("gt.ome.zarr", truth, VOXEL)
    write("iso_gt.ome.zarr", iso, VOXEL)
    write("gt_labels.ome.zarr", labels.astype(np.int32), VOXEL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128], help="the smaller volume (z y x)")
    p.add_argument("--chunks", type=int, nargs=3, default=[32, 64, 64])
    p.add_argument("--block", type=int, nargs=3, default=[32, 64, 64])
    p.add_argument("--halo", type=int, default=24)
    p.add_argument("--stages", nargs="+", default=["segment", "evaluate", "in-memory segment"])
    p.add_argument("--out", default=None, help="JSON file for the figures")
    p.add_argument("--child", nargs=2, metavar=("STAGE", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.block, args.halo)))
        return

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for tiles in (1, 2):
            root = Path(tmp) / f"x{tiles ** 3}"
            root.mkdir()
            make_volumes(root, tuple(args.shape), tiles, tuple(args.chunks))
            shape = [s * tiles for s in args.shape]
            for stage in args.stages:
                cmd = [sys.executable, __file__, "--child", stage, str(root), "--block", *map(str, args.block),
                       "--halo", str(args.halo)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                run = {"shape": shape, "voxels": int(np.prod(shape)), **json.loads(out.strip().splitlines()[-1])}
                # CPU time, not wall time: on a shared machine wall time measures the neighbours
                run["us_per_voxel"] = 1e6 * run["cpu_seconds"] / run["voxels"]
                runs.append(run)
                print(f"{stage:18s} {'x'.join(map(str, shape)):12s} peak RSS {run['peak_rss_mb']:7.0f} MB "
                      f"(after imports {run['rss_after_imports_mb']:.0f} MB), {run['seconds']:6.1f} s wall, "
                      f"{run['cpu_seconds']:6.1f} s CPU, {run['us_per_voxel']:.2f} CPU µs/voxel", flush=True)
    ratios = {}
    for stage in args.stages:
        small, large = (r for r in runs if r["stage"] == stage)
        ratios[stage] = {"peak_rss": large["peak_rss_mb"] / small["peak_rss_mb"],
                         "stage_rss": (large["peak_rss_mb"] - large["rss_after_imports_mb"])
                         / (small["peak_rss_mb"] - small["rss_after_imports_mb"]),
                         "time_per_voxel": large["us_per_voxel"] / small["us_per_voxel"]}
        print(f"{stage:18s} 8x the voxels: peak RSS x{ratios[stage]['peak_rss']:.2f} "
              f"(above imports x{ratios[stage]['stage_rss']:.2f}), "
              f"CPU time per voxel x{ratios[stage]['time_per_voxel']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": {"shape": args.shape, "chunks": args.chunks,
                                                           "block": args.block, "halo": args.halo},
                                              "runs": runs, "ratios": ratios}, indent=2) + "\n")


if __name__ == "__main__":
    main()
