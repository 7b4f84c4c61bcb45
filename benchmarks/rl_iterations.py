"""Richardson-Lucy iteration count for the benchmark: PSNR against iso-GT and GT per iteration.

Usage: python benchmarks/rl_iterations.py [config/benchmark.yaml] [max_iterations]

For each PSF of the benchmark config, a validation stack of the "both" phantom (its own seed, not
one of the benchmark's stacks) at the configured size is simulated, cubic-upsampled and
deconvolved; the curve is printed with the best iteration count per reference.
"""

import sys
import time

import numpy as np
import yaml

from isonet import psf as psf_models
from isonet.baselines import cubic_upsample, richardson_lucy
from isonet.degrade import upsampled_length
from isonet.metrics import psnr_affine
from isonet.synthetic import make_dataset

VALIDATION_SEED = 987654321
RECORD = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100)


def main(config_path="config/benchmark.yaml", max_iterations=60):
    cfg = yaml.safe_load(open(config_path))
    bench = cfg["benchmark"]
    s = cfg["benchmark_sizes"][cfg.get("benchmark_size", "quick")]["settings"]
    record = [i for i in RECORD if i <= max_iterations]
    print(f"validation phantom 'both' {tuple(s['shape'])}, seed {VALIDATION_SEED}, subsample {s['subsample']}")
    for name, p in bench["psfs"].items():
        t0 = time.perf_counter()
        h = psf_models.make_psf(p["kind"], **p["params"])
        ds = make_dataset("both", tuple(s["shape"]), h, psf_models.isotropic_psf(h), s["subsample"],
                          seed=VALIDATION_SEED, photons=s["photons"], read_noise=s["read_noise"], offset=s["offset"])
        cubic = cubic_upsample(ds.acquired.astype(np.float32), s["subsample"])
        n = upsampled_length(ds.acquired.shape[0], s["subsample"])
        refs = {"iso_gt": ds.iso_gt[:n], "gt": ds.gt[:n]}
        curve = {0: {r: psnr_affine(cubic, v) for r, v in refs.items()}}

        def record_psnr(i, x):
            if i in record:
                curve[i] = {r: psnr_affine(x, v) for r, v in refs.items()}

        richardson_lucy(cubic, h, max(record), background=s["offset"], callback=record_psnr)
        print(f"\n{name}: PSNR (dB, affine fit) vs iterations ({time.perf_counter() - t0:.0f} s)")
        print("| iterations | vs iso-GT | vs GT |\n|---|---|---|")
        for i in sorted(curve):
            print(f"| {i} | {curve[i]['iso_gt']:.2f} | {curve[i]['gt']:.2f} |")
        for r in refs:
            best = max(curve, key=lambda i: curve[i][r])
            print(f"best vs {r}: {best} iterations ({curve[best][r]:.2f} dB)")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["config/benchmark.yaml"]), *(int(a) for a in sys.argv[2:3]))
