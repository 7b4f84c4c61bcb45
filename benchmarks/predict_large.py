"""Block-wise prediction against the bare network: throughput ratio, scaling and peak memory.

For each volume (the acquired ``--shape`` times each of ``--scales``, grown laterally: 2× doubles
x, 4× doubles y and x, 8× doubles y and quadruples x) the script writes a random-texture input
as OME-Zarr and an untrained IsoNet-2 model file, then in the same process times

* the full predict stage (read, upsample, both axial passes, combine, write; block-wise,
  pipelined), and
* the bare network's forward passes over the same voxels: every xz and every yz slice of the
  isotropic volume, without halo, in the same batches, precision and layout,

and prints voxels/s of each, their ratio (``throughput_ratio``: 1 means the predict runs at the
network's speed), the per-voxel time of the largest volume over that of the smallest
(``per_voxel_time_ratio``) and the peak RSS. ``network_work_ratio`` counts, without timing,
the pixels the bare network processes over those block-wise predict gives it (halos, padding):
the ratio's ceiling; ``--work-for`` counts it for other shapes. ``--json`` writes all figures.

    python benchmarks/predict_large.py [--shape 16 64 64] [--scales 1 2 4 8] [--block 256 512 512]
        [--edges mirror clip] [--precision auto] [--json out.json] [--workdir /tmp/isonet-bench]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from isonet.modelfile import save_model
from isonet.nets import build_network
from isonet.patches import Normalization
from isonet.predict import block_ranges, iso_shape, predict_tensor, prepare_model, resolve_precision
from isonet.stages.predict import predict_stage
from isonet.storage import create_ome_zarr

LATERAL = {1: (1, 1), 2: (1, 2), 4: (2, 2), 8: (2, 4), 16: (4, 4)}
FACTOR = 4


def write_volume(path: Path, shape, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    _, arr = create_ome_zarr(path, shape, np.uint16, (16, 256, 256), (0.2 * FACTOR, 0.2, 0.2))
    for z in range(0, shape[0], 16):
        arr[z : z + 16] = rng.integers(100, 1000, (min(16, shape[0] - z), *shape[1:]), dtype=np.uint16)


def network_seconds(net, out_shape, precision: str) -> float:
    """Seconds of the bare network over every xz and yz slice of a volume of ``out_shape``."""
    nz, ny, nx = out_shape
    volume = torch.rand(out_shape)
    t0 = time.perf_counter()
    predict_tensor(net, volume.permute(1, 2, 0), None, precision)  # xz slices (y, x, z)
    predict_tensor(net, volume.permute(2, 1, 0), None, precision)  # yz slices (x, y, z)
    return time.perf_counter() - t0


def network_pixels(out_shape, block, halo: int, edges: str, m: int = 4) -> tuple[int, int]:
    """Pixels the network processes in block-wise predict (slices padded to the size multiple,
    halos included) and in the bare passes over the same voxels: the work ratio, no timing."""
    def padded(n):
        return -(-n // m) * m

    def extent(a, b, n):
        return (max(0, a - halo), min(n, b + halo)) if edges == "clip" else (a - halo, b + halo)

    work = 0
    for r in block_ranges(out_shape, block):
        (z0, z1), (y0, y1), (x0, x1) = (extent(a, b, n) for (a, b), n in zip(r, out_shape))
        by, bx = r[1][1] - r[1][0], r[2][1] - r[2][0]
        work += by * padded(x1 - x0) * padded(z1 - z0) + bx * padded(y1 - y0) * padded(z1 - z0)
    nz, ny, nx = out_shape
    return work, ny * padded(nx) * padded(nz) + nx * padded(ny) * padded(nz)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[16, 64, 64], help="acquired volume of scale 1")
    p.add_argument("--scales", type=int, nargs="*", default=[1, 2, 4, 8], choices=sorted(LATERAL))
    p.add_argument("--block", type=int, nargs=3, default=[256, 512, 512])
    p.add_argument("--chunks", type=int, nargs=3, default=[64, 128, 128])
    p.add_argument("--edges", nargs="+", default=["mirror", "clip"], choices=["mirror", "clip"])
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--workdir", default="/tmp/isonet-bench")
    p.add_argument("--work-for", type=int, nargs=3, action="append", default=[], metavar=("Z", "Y", "X"),
                   help="also count (not time) the network's work for this acquired shape with --block")
    args = p.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.manual_seed(0)
    save_model(work / "model.safetensors", build_network("isonet2"), "isonet2", FACTOR, Normalization(100.0, 1000.0))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    precision = resolve_precision(args.precision, device)
    torch.manual_seed(0)
    net = prepare_model(build_network("isonet2"), device)
    network_seconds(net, (16, 16, 16), precision)  # warm-up

    runs = []
    for scale in args.scales:
        fy, fx = LATERAL[scale]
        shape = (args.shape[0], args.shape[1] * fy, args.shape[2] * fx)
        write_volume(work / f"in-{scale}.ome.zarr", shape)
        out_shape = iso_shape(shape, FACTOR)
        voxels = int(np.prod(out_shape))
        bare = network_seconds(net, out_shape, precision)
        for edges in args.edges:
            out = work / f"out-{scale}-{edges}.ome.zarr"
            t0 = time.perf_counter()
            info = predict_stage(work / f"in-{scale}.ome.zarr", work / "model.safetensors", out,
                                 chunks=tuple(args.chunks), block=tuple(args.block), precision=args.precision,
                                 device=args.device, edges=edges)
            seconds = time.perf_counter() - t0
            shutil.rmtree(out)
            pixels, bare_pixels = network_pixels(out_shape, tuple(args.block), 36, edges)
            run = {"scale": scale, "edges": edges, "acquired_shape": list(shape), "shape": list(out_shape),
                   "network_work_ratio": bare_pixels / pixels, "voxels": voxels, "blocks": info["blocks"], "predict_s": round(seconds, 3),
                   "network_s": round(bare, 3), "predict_voxels_per_s": voxels / seconds,
                   "network_voxels_per_s": voxels / bare, "throughput_ratio": bare / seconds,
                   "predict_s_per_voxel": seconds / voxels}
            runs.append(run)
            print(f"{scale}x {tuple(out_shape)} ({voxels / 1e6:.2f} M voxels, {info['blocks']} blocks, edges {edges}): "
                  f"predict {seconds:.1f} s = {run['predict_voxels_per_s'] / 1e6:.3f} M voxels/s, network "
                  f"{bare:.1f} s = {run['network_voxels_per_s'] / 1e6:.3f} M voxels/s, ratio {run['throughput_ratio']:.2f}",
                  flush=True)

    summary = {}
    for edges in args.edges:
        mine = [r for r in runs if r["edges"] == edges]
        if not mine:
            continue
        small, large = mine[0], mine[-1]
        summary[edges] = {"throughput_ratio": large["throughput_ratio"],
                          "per_voxel_time_ratio": large["predict_s_per_voxel"] / small["predict_s_per_voxel"]}
        print(f"edges {edges}: throughput_ratio {summary[edges]['throughput_ratio']:.2f} (largest volume), "
              f"per_voxel_time_ratio {summary[edges]['per_voxel_time_ratio']:.2f} ({large['scale']}x / {small['scale']}x)")
    counted = []
    for shape in args.work_for:
        out_shape = iso_shape(tuple(shape), FACTOR)
        for edges in args.edges:
            pixels, bare_pixels = network_pixels(out_shape, tuple(args.block), 36, edges)
            counted.append({"acquired_shape": shape, "shape": list(out_shape), "edges": edges,
                            "block": args.block, "network_work_ratio": bare_pixels / pixels})
            print(f"work for {tuple(out_shape)} in blocks of {tuple(args.block)}, edges {edges}: the bare network's "
                  f"pixels / predict's = {bare_pixels / pixels:.3f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB; {precision} on {device}, {torch.get_num_threads()} torch threads")
    if args.json:
        first = summary.get(args.edges[0], {"throughput_ratio": None, "per_voxel_time_ratio": None})
        record = {
            "throughput_ratio": first["throughput_ratio"], "per_voxel_time_ratio": first["per_voxel_time_ratio"],
            "edges": args.edges[0], "by_edges": summary, "runs": runs, "work_counted": counted, "peak_rss_mib": round(rss),
            "settings": {"block": args.block, "chunks": args.chunks, "precision": precision, "device": str(device),
                         "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()},
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
