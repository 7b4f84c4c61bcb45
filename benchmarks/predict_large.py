"""Block-wise prediction throughput and peak memory on a volume larger than one block.

Writes a random-texture acquired volume (default 64 × 512 × 512, σ = 4) as OME-Zarr, saves an
untrained IsoNet-2 model file, runs the predict stage, and prints voxels/s and peak RSS.
Peak memory should follow the block size, not the volume size.

    python benchmarks/predict_large.py [--shape 64 512 512] [--block 128 256 256] [--workdir /tmp/isonet-bench]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from isonet.modelfile import save_model
from isonet.nets import build_network
from isonet.patches import Normalization
from isonet.stages.predict import predict_stage
from isonet.storage import create_ome_zarr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[64, 512, 512])
    p.add_argument("--block", type=int, nargs=3, default=[128, 256, 256])
    p.add_argument("--precision", default="auto")
    p.add_argument("--workdir", default="/tmp/isonet-bench")
    args = p.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _, arr = create_ome_zarr(work / "in.ome.zarr", args.shape, np.uint16, (16, 256, 256), (0.8, 0.2, 0.2))
    for z in range(0, args.shape[0], 16):
        arr[z : z + 16] = rng.integers(100, 1000, (min(16, args.shape[0] - z), *args.shape[1:]), dtype=np.uint16)
    torch.manual_seed(0)
    save_model(work / "model.safetensors", build_network("isonet2"), "isonet2", 4, Normalization(100.0, 1000.0))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    info = predict_stage(work / "in.ome.zarr", work / "model.safetensors", work / "out.ome.zarr", chunks=(64, 128, 128),
                         block=tuple(args.block), precision=args.precision)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = int(np.prod(info["shape"]))
    print(f"output {info['shape']} ({n / 1e6:.1f} M voxels) in {dt:.1f} s: {n / dt / 1e6:.2f} M voxels/s, "
          f"{info['blocks']} blocks of {tuple(args.block)}")
    print(f"peak RSS {rss:.0f} MiB (before predict {rss0:.0f} MiB); "
          f"output float32 would be {n * 4 / 2**20:.0f} MiB in memory")


if __name__ == "__main__":
    main()
