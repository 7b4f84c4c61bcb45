"""Training choices of the benchmark, on one stack: training-input noise, dropout, learning rate.

Usage: python benchmarks/training_ablation.py [phantom] [arch:noise:dropout:lr:epochs ...]
e.g.   python benchmarks/training_ablation.py nuclei isonet2:1:0.2:0.005:8 isonet2:0:0.2:0.005:8

Nuclei phantom 64x128x128, gaussian PSF 2/8, σ = 4, 512 patches of 64², the benchmark's
stack 0 seed. Prints validation PSNR on the training pairs and PSNR (affine) of the restored
volume against iso-GT and GT: the two disagree when training pairs and axial slices differ.
"""

import sys
import time

import numpy as np
import torch

from isonet import psf as P
from isonet.baselines import cubic_upsample
from isonet.benchmark import add_camera_noise, stack_seed
from isonet.metrics import psnr_affine
from isonet.nets import build_network, halo_for
from isonet.patches import fit_normalization, sample_training_pairs
from isonet.predict import prepare_model, resolve_precision, restore_volume
from isonet.synthetic import make_dataset
from isonet.train import TrainConfig, fit


def main(phantom="nuclei", *specs):
    torch.set_num_threads(1)
    specs = specs or ("isonet2:1:0.2:0.005:8", "isonet2:0:0.2:0.005:8")
    h = P.gaussian_psf(2, 8)
    ds = make_dataset(phantom, (64, 128, 128), h, P.isotropic_psf(h), 4, seed=stack_seed(phantom, "gaussian", 0),
                      photons=200, read_noise=2, offset=100)
    acq = ds.acquired.astype(np.float32)
    n = (acq.shape[0] - 1) * 4 + 1
    norm = fit_normalization(acq)
    planes = [norm.apply(p) for p in acq]
    thr = float(np.percentile(np.stack(planes), 90))
    X, Y = sample_training_pairs(planes, P.lateral_plane_kernel(P.rotate_psf_to_lateral(h)), 4, 512, 64, thr, seed=1)
    print(f"{phantom}: cubic vs iso-GT {psnr_affine(cubic_upsample(acq, 4), ds.iso_gt[:n]):.2f} dB")
    for spec in specs:
        arch, noise, dropout, lr, epochs = spec.split(":")
        Xn = add_camera_noise(X, norm, 100, 2, 0) if noise == "1" else X
        net = build_network(arch, dropout=float(dropout), seed=0)  # TrainConfig.seed is 0 too
        t0 = time.perf_counter()
        st = fit(net, Xn, Y, TrainConfig(epochs=int(epochs), learning_rate=float(lr), flip_axes=(0, 1), device="cpu"),
                 log=lambda m: None)
        net.load_state_dict(st.best_model)
        net = prepare_model(net, torch.device("cpu"))
        r = restore_volume(net, acq, 4, norm, halo_for(net), precision=resolve_precision("auto", torch.device("cpu")))
        print(f"{spec}: val {-st.best_val_loss:.2f} dB, volume vs iso-GT {psnr_affine(r, ds.iso_gt[:n]):.2f}, "
              f"vs GT {psnr_affine(r, ds.gt[:n]):.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
