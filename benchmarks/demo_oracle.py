"""How much of the demo's remaining SEG gap is the training pairs' fault? An oracle says.

The self-supervised network learns from lateral planes degraded to look like axial slices. This
script trains the same network, for the same budget, on the pairs a user can never have: real
axial slices of the demo (its acquisition, cubic-upsampled along z, exactly what inference feeds
the network) against the same slices of the noise-free isotropic reference (iso-GT). Both models,
the demo's own (self-supervised) and the oracle, are then applied, segmented and scored by the
same code here. If the oracle closes far more of the SEG gap, the pairs do not describe the
acquisition; if it closes about as much, the network and its budget are the limit.

    python benchmarks/demo_oracle.py RUN OUT.json [--steps 600] [--threads 1] [--seed 0] [--bootstrap] [--rules]

``--rules`` adds, for every model, the threshold diagnosis of ``demo_diagnosis.py --rules``
(Intermodes against iso-GT's, SEG at iso-GT's threshold and under Otsu, the edge profile by
surface direction) on the workflow's restored grid.

``--bootstrap`` adds a second self-supervised round a user could run: the same training, but with
pairs drawn from the lateral planes of the first round's restoration instead of the acquisition's
(every isotropic plane; the same kernel, camera noise and patch settings as the run's patches
stage). An acquired lateral plane carries the full axial blur of the PSF from out of its plane,
an axial slice at inference only the lateral one; the restored planes carry less.

RUN is a finished demo workflow directory (``resources/synthetic/demo`` and
``results/demo/train/model.safetensors``), e.g. a run of ``benchmarks/demo_variants.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from isonet.camera import Camera
from isonet.degrade import upsample_axis
from isonet.metrics import psnr_affine, seg_score
from isonet.modelfile import load_model
from isonet.nets import build_network, halo_for
from isonet.patches import fit_normalization, sample_training_pairs, split_planes
from isonet.predict import restore_volume
from isonet.segment import segment_nuclei
from isonet.train import TrainConfig, fit


def axial_patches(volume: np.ndarray, target: np.ndarray, rows: np.ndarray, n: int, size: int,
                  threshold: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` square patches (lateral, z) from the xz and yz slices at ``rows`` (half each).

    As the patches stage does, 80 % are centred on a target value above ``threshold``.
    """
    X = np.empty((n, size, size), np.float32)
    Y = np.empty_like(X)
    nz = volume.shape[0]
    for i in range(n):
        r = int(rng.choice(rows))
        if i % 2:
            xs, ys = volume[:, r, :].T, target[:, r, :].T  # xz slice as (x, z)
        else:
            xs, ys = volume[:, :, r].T, target[:, :, r].T  # yz slice as (y, z)
        for _ in range(50):
            a, z = int(rng.integers(xs.shape[0] - size + 1)), int(rng.integers(nz - size + 1))
            if i % 5 == 4 or ys[a + size // 2, z + size // 2] > threshold:
                break
        X[i], Y[i] = xs[a : a + size, z : z + size], ys[a : a + size, z : z + size]
    return X, Y


def demo_training(steps: int, seed: int):
    """An untrained IsoNet-2 and the demo's training settings (600 steps of 16, cosine, lr 5e-3, dropout 0)."""
    config = TrainConfig(steps=steps, batch_size=16, learning_rate=5e-3, warmup_steps=100, schedule="cosine",
                         seed=seed, device="cpu", precision="fp32", flip_axes=(0, 1))
    return build_network("isonet2", dropout=0.0, seed=seed), config


def bootstrap_round(restored: np.ndarray, patches_npz: Path, norm, factor: int, steps: int, seed: int,
                    warm: torch.nn.Module | None = None):
    """A second IsoNet-2 trained on pairs from the lateral planes of a first restoration.

    ``warm``: start from this network's weights (the first round's) instead of a fresh initialisation.
    """
    with np.load(patches_npz) as z:
        kernel, meta = z["kernel"], json.loads(str(z["meta"]))
    camera = Camera.from_dict(meta["camera"]) if meta.get("camera") else None
    planes = [norm.apply(p) for p in restored]
    threshold = float(np.percentile(np.stack(planes[::4]), 90))
    train_idx, val_idx = split_planes(len(planes), 0.1)
    common = dict(kernel=kernel, factor=factor, patch_size=int(meta["patch_size"]), foreground_threshold=threshold,
                  foreground_fraction=0.8, camera=camera, norm=norm)
    pairs = sample_training_pairs([planes[i] for i in train_idx], n_patches=int(meta["n_patches"]), seed=seed, **common)
    val = sample_training_pairs([planes[i] for i in val_idx], n_patches=400, seed=seed + 1, **common)
    val_xy = (val.inputs(np.arange(len(val)), np.random.default_rng([seed, 1 << 20])), val.targets)
    net, config = demo_training(steps, seed)
    if warm is not None:
        net.load_state_dict(warm.state_dict())
    state = fit(net, pairs, pairs.targets, config, validation=val_xy)
    net.load_state_dict(state.best_model)
    return net.eval(), -state.best_val_loss


def restore_slab(model, acquired: np.ndarray, factor: int, norm, planes: int) -> np.ndarray:
    """The ``planes`` central planes of the restoration, computed from only the acquired planes they need."""
    model.eval()
    n = acquired.shape[0] * factor
    lo, hi = (n - planes) // 2, (n - planes) // 2 + planes
    margin = -(-halo_for(model) // factor) + 2
    a0, a1 = max(0, lo // factor - margin), min(acquired.shape[0], -(-hi // factor) + margin)
    part = restore_volume(model, acquired[a0:a1], factor, norm, halo_for(model), edges="clip", batch_size=16)
    return part[lo - a0 * factor : hi - a0 * factor]


def score(restored: np.ndarray, gt: np.ndarray, iso: np.ndarray, labels: np.ndarray) -> dict:
    seg = segment_nuclei(restored)
    return {"psnr_gt": psnr_affine(restored, gt), "psnr_iso_gt": psnr_affine(restored, iso),
            "seg": float(seg_score(labels, seg))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--n-patches", type=int, default=4000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", action="store_true", help="also a second round from the first's restoration")
    p.add_argument("--round2-steps", type=int, help="steps of the second round (default: --steps)")
    p.add_argument("--warm", action="store_true", help="second round starts from the first round's weights")
    p.add_argument("--slab", type=int, default=0,
                   help="second round's pairs from only this many central restored planes (0: all)")
    p.add_argument("--rounds", type=int, default=2, help="self-supervised rounds in all (with --bootstrap)")
    p.add_argument("--control", action="store_true",
                   help="later rounds train on the acquisition's planes again (the extra steps without new pairs)")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle (with --bootstrap)")
    p.add_argument("--rules", action="store_true",
                   help="also each model's threshold rules and edge profile on the workflow's grid "
                        "(demo_diagnosis.threshold_rules: is the restoration domed along z?)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    syn = a.run / "resources/synthetic/demo"
    acquired = tifffile.imread(syn / "acquired.tif").astype(np.float32)
    gt, iso = tifffile.imread(syn / "gt.tif"), tifffile.imread(syn / "iso_gt.tif")
    labels = tifffile.imread(syn / "labels.tif")
    factor = int(json.loads((syn / "synthetic.json").read_text()).get("subsample", 4))
    own, _ = load_model(a.run / "results/demo/train/model.safetensors")
    norm = fit_normalization(acquired)
    up = norm.apply(upsample_axis(acquired, factor, axis=0))
    n = up.shape[0]
    gt, iso, labels = gt[:n], iso[:n], labels[:n]
    lo, hi = np.percentile(iso, [1.0, 99.8])
    target = ((iso - lo) / (hi - lo)).astype(np.float32)

    result = {"run": str(a.run), "steps": a.steps, "seed": a.seed}
    models, restored = {"self_supervised": own}, {}

    def restore(name):
        if name not in restored:
            models[name].eval()
            restored[name] = restore_volume(models[name], acquired, factor, norm, halo_for(models[name]),
                                            edges="clip", batch_size=16)
        return restored[name]

    if a.bootstrap:
        current, steps2 = own, a.round2_steps or a.steps
        result.update(round2_steps=steps2, warm=a.warm, slab=a.slab, control=a.control)
        for r in range(2, a.rounds + 1):
            name = "bootstrap" if r == 2 else f"round{r}"
            t0 = time.perf_counter()
            if a.control:  # the acquisition's own planes again: what the extra steps alone give
                source = acquired
            else:
                source = restore_slab(current, acquired, factor, norm, a.slab) if a.slab else restore(
                    "self_supervised" if r == 2 else "bootstrap" if r == 3 else f"round{r - 1}")
            result[f"{name}_restore_s"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            models[name], result[f"{name}_best_val_psnr"] = bootstrap_round(
                source, a.run / "results/demo/train/patches.npz", norm, factor, steps2, a.seed,
                warm=current if a.warm else None)
            result[f"{name}_train_s"] = round(time.perf_counter() - t0, 1)
            current = models[name]
    if not a.no_oracle:
        models["oracle"] = train_oracle(up, target, a, result)
    for name in list(models):
        result[name] = score(restore(name)[:n], gt, iso, labels)
    if a.rules:
        from demo_diagnosis import cubic_input, load, threshold_rules  # this folder is on sys.path

        wf_pred, wf_iso, wf_labels = load(a.run)
        z = wf_pred.shape[0]  # the workflow's restored grid, which the diagnosis of its runs measures
        cubic = cubic_input(a.run, z)
        for name in models:
            result[name]["threshold_rules"] = threshold_rules(restore(name)[:z].astype(np.float32), wf_iso,
                                                              wf_labels, cubic)
    result["input_cubic"] = score(norm.invert(up), gt, iso, labels)
    result["iso_gt"] = score(iso, gt, iso, labels)
    gap = result["iso_gt"]["seg"] - result["input_cubic"]["seg"]
    for name in models:
        result[name]["gap_closed"] = (result[name]["seg"] - result["input_cubic"]["seg"]) / gap
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def train_oracle(up: np.ndarray, target: np.ndarray, a, result: dict):
    """IsoNet-2 trained on (axial slice of the upsampled acquisition, the same slice of iso-GT)."""
    rng = np.random.default_rng(a.seed)
    rows = rng.permutation(up.shape[1])
    held = rows[: len(rows) // 10]
    X, Y = axial_patches(up, target, rows[len(held):], a.n_patches, 64, np.percentile(target, 90), rng)
    Xv, Yv = axial_patches(up, target, held, 400, 64, np.percentile(target, 90), rng)
    oracle, config = demo_training(a.steps, a.seed)
    t0 = time.perf_counter()
    state = fit(oracle, X, Y, config, validation=(Xv, Yv))
    train_s = time.perf_counter() - t0
    oracle.load_state_dict(state.best_model)
    result.update(oracle_train_s=round(train_s, 1), oracle_best_val_psnr=-state.best_val_loss)
    return oracle


if __name__ == "__main__":
    main()
