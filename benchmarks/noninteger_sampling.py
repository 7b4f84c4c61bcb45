"""Accuracy of a non-integer axial factor σ: acquisition between samples, and the grid it gives.

1. Acquiring at ``phase + k·σ`` between samples (:func:`isonet.degrade.subsample_axis`, a
   quintic spline) against the exact signal, next to the Keys cubic used as the acquisition
   instead: a cosine of period 16 samples (largest error over the signal and away from its
   ends, in units of the amplitude), and white noise blurred by gaussians of σ_blur 1 to 3
   samples (largest error in units of the signal's standard deviation; the truth comes from a
   10× finer grid).
2. A noise-free synthetic acquisition at σ = 4.5 (nuclei, gaussian PSF σ_xy 1, σ_z 3 voxels),
   upsampled by the cubic baseline with σ exact, shifted by one plane, and with σ rounded to 4
   and 5: PSNR against the blurred phantom on the isotropic grid.

    python benchmarks/noninteger_sampling.py --out noninteger-sampling.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.ndimage import gaussian_filter1d

from isonet.baselines import cubic_upsample
from isonet.degrade import keys_cubic_kernel, subsample_axis, subsampled_length, upsampled_length
from isonet.metrics import psnr
from isonet.psf import gaussian_psf
from isonet.synthetic import blur, nuclei_phantom, simulate_acquisition

SIGMAS = {"4.5": 4.5, "10/3": 10 / 3, "2.5": 2.5}


def _cubic_at(signal: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The Keys cubic through ``signal`` (last axis) at ``positions``, ends clamped."""
    n = signal.shape[-1]
    k = np.floor(positions).astype(int)
    taps = np.clip(k[:, None] + np.arange(-1, 3), 0, n - 1)
    return (keys_cubic_kernel(positions - k) * signal[..., taps]).sum(-1)


def cosine_errors(sigma: float, n: int = 200, period: float = 16) -> dict:
    x = np.arange(n, dtype=np.float64)
    positions = np.arange(subsampled_length(n, sigma)) * sigma
    truth = np.cos(2 * np.pi * positions / period + 0.3)
    signal = np.cos(2 * np.pi * x / period + 0.3)
    inner = (positions > 10) & (positions < n - 11)
    spline = np.abs(subsample_axis(signal, sigma) - truth)
    cubic = np.abs(_cubic_at(signal, positions) - truth)
    return {"spline_max": float(spline.max()), "spline_interior": float(spline[inner].max()),
            "cubic_max": float(cubic.max()), "cubic_interior": float(cubic[inner].max())}


def blurred_noise_errors(sigma: float, blur_sigma: float, seed: int = 0) -> dict:
    fine = np.random.default_rng(seed).random((20, 2560))
    b = gaussian_filter1d(fine, blur_sigma * 10, axis=1, mode="wrap", truncate=10)
    coarse = b[:, ::10]
    positions = np.arange(subsampled_length(coarse.shape[1], sigma)) * sigma
    truth = b[:, np.rint(positions * 10).astype(int)]
    spline = np.abs(subsample_axis(coarse, sigma, axis=1) - truth)
    cubic = np.abs(_cubic_at(coarse, positions) - truth)[:, 1:-1]
    return {"spline_max": float(spline.max() / b.std()), "cubic_max": float(cubic.max() / b.std())}


def grid_psnr(sigma: float = 4.5) -> dict:
    gt, _ = nuclei_phantom((64, 40, 40), seed=1)
    psf = gaussian_psf(1.0, 3.0)
    acquired = simulate_acquisition(gt, psf, sigma, photons=1e9, read_noise=0, offset=0, seed=0, dtype=np.float32)
    blurred = blur(gt, psf)
    scale, peak = 1e9 / float(blurred.max()), float(blurred.max())
    n = upsampled_length(len(acquired), sigma)
    cubic = cubic_upsample(acquired, sigma) / scale
    out = {"exact": psnr(cubic[1:-1], blurred[1 : n - 1], data_range=peak)}
    for d in (-1, 1):
        out[f"shifted {d:+d} plane"] = psnr(cubic[1:-1], blurred[1 + d : n - 1 + d], data_range=peak)
    for wrong in (int(np.floor(sigma)), int(np.ceil(sigma))):
        up = cubic_upsample(acquired, wrong) / scale
        k = min(len(up), n) - 1
        out[f"rounded to {wrong}"] = psnr(up[1:k], blurred[1:k], data_range=peak)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args()
    result = {"cosine_period_16": {}, "blurred_noise": {}, "grid_psnr_db_sigma_4.5": grid_psnr()}
    for name, sigma in SIGMAS.items():
        c = result["cosine_period_16"][name] = cosine_errors(sigma)
        print(f"σ {name:>4}  cosine, period 16: spline {c['spline_max']:.1e} (interior {c['spline_interior']:.1e}),"
              f" cubic {c['cubic_max']:.1e} (interior {c['cubic_interior']:.1e}) of the amplitude")
    for blur_sigma in (1.0, 1.5, 2.0, 3.0):
        e = result["blurred_noise"][str(blur_sigma)] = blurred_noise_errors(4.5, blur_sigma)
        print(f"σ  4.5  white noise blurred by σ_blur {blur_sigma}: spline {e['spline_max']:.1e}, "
              f"cubic {e['cubic_max']:.1e} of the signal's std")
    for name, value in result["grid_psnr_db_sigma_4.5"].items():
        print(f"cubic baseline at σ 4.5, {name}: {value:.1f} dB")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
