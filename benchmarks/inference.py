"""IsoNet-2 forward-pass speed and accuracy: fp32 vs channels-last vs bf16 autocast.

Prints slices per second for 512² slices (batch 4) in each mode and the largest deviation of
bf16 from fp32 (in units of the normalised intensity range) on a realistic input.

    python benchmarks/inference.py [--size 512] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from isonet.nets import build_network


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    x = torch.rand(args.batch, 1, args.size, args.size, device=dev)
    results = {}
    for name, channels_last, bf16 in [("fp32", False, False), ("fp32 channels-last", True, False),
                                      ("bf16 channels-last", True, True)]:
        torch.manual_seed(0)
        net = build_network("isonet2").eval().to(dev)
        xi = x
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            xi = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = net(xi)  # warm-up
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                out = net(xi)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        results[name] = out.float().cpu().numpy()
        print(f"{name:22s} {args.batch * args.repeats / dt:7.2f} slices/s ({args.size}², {dev})")
    ref = results["fp32"]
    for name, out in results.items():
        print(f"max |{name} - fp32| = {np.abs(out - ref).max():.2e} (input range 1)")


if __name__ == "__main__":
    main()
