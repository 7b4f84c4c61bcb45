"""The peer, side by side: CSBDeep's IsotropicCARE on a benchmark cell's stack, scored like isonet.

CSBDeep (the method authors' maintained toolbox) is what a user would pick instead of isonet. This
script restores the stack a benchmark cell simulated (``isonet benchmark-cell --stack-npz``) with
CSBDeep's isotropic-reconstruction recipe, trained for the wall time IsoNet-2 took on that stack
(the cell JSON's ``training.isonet2_full.train_s``, measured on this machine), and scores it
exactly as the cell scored isonet: PSNR after an affine fit against GT and iso-GT on isonet's
isotropic grid, and for nuclei SEG (whole and interior) with the cell's threshold rule. The
result is a per-stack JSON that ``isonet benchmark-table`` turns into a "CSBDeep iso" column.

CSBDeep never becomes a dependency of isonet: it runs in its own virtual environment
(``benchmarks/peer/requirements.txt``; ``make peer-venv`` builds ``.venv-peer``), in a worker
process (``csbdeep_peer.py worker``) that imports only NumPy and CSBDeep/TensorFlow. The driver
runs with isonet's Python and does the scoring.

The recipe (CSBDeep's examples/isotropic_reconstruction): training pairs from the stack's lateral
planes by ``anisotropic_distortions`` (blur with a PSF, Poisson noise, subsample along X by σ,
linear zoom back), ``create_patches`` with percentile normalisation, a 2D residual U-Net (depth
2, kernel 5, 32 filters, MAE, Adam 4e-4, batch 16), best validation epoch kept; prediction
restores both axial stacks of the z-zoomed volume and fuses them by geometric mean. As PSF it
gets isonet's ``full`` training kernel (the acquisition PSF rotated into the lateral plane): the
same knowledge of the microscope that IsoNet-2 full has.

Its output has n_acq·σ planes spanning the acquired planes corner to corner (``scipy.ndimage.zoom``);
isonet's grid puts acquired plane k on plane k·σ. The output is resampled linearly along z onto
isonet's grid (:func:`isonet.benchmark.resample_corner_aligned_z`) before scoring.

Usage (from the repository root, after ``make peer-venv`` and a cell run with ``--stack-npz``)::

    python benchmarks/csbdeep_peer.py CELL.json STACK.npz OUT.json [--budget-s S] [--threads N]

With isonet's Python (``PATH=.venv/bin:$PATH``); ``--peer-python`` names the peer venv's
interpreter (default ``.venv-peer/bin/python``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_PEER_PYTHON = HERE.parent / ".venv-peer" / "bin" / "python"
#: the isonet method whose measured training wall time is the peer's budget
MATCH_METHOD = "isonet2_full"


# ------------------------------------------------------------------------------------------
# worker: runs in the peer's venv (NumPy, CSBDeep, TensorFlow; no isonet)
# ------------------------------------------------------------------------------------------


def worker(stack_npz, out_npz, budget_s: float, n_patches: int, patch_size: int, steps_per_epoch: int,
           threads: int, seed: int) -> None:
    """Train IsotropicCARE on the stack for ``budget_s`` seconds of training wall time; save its prediction."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    from csbdeep.data import RawData, anisotropic_distortions, create_patches
    from csbdeep.models import Config, IsotropicCARE

    keras.utils.set_random_seed(seed)
    with np.load(stack_npz) as z:
        acquired, kernel, factor = z["acquired"].astype(np.float32), z["kernel_full"], int(z["subsample"])
    raw = RawData.from_arrays([acquired], [acquired], axes="ZYX")
    distort = anisotropic_distortions(subsample=factor, psf=kernel / kernel.sum(), psf_axes="YX",
                                      subsample_axis="X", poisson_noise=True)
    t0 = time.perf_counter()
    X, Y, axes = create_patches(raw, patch_size=(1, patch_size, patch_size), n_patches_per_image=n_patches,
                                transforms=[distort], verbose=False)
    t_data = time.perf_counter() - t0
    zi = axes.index("Z")
    X, Y = np.take(X, 0, axis=zi), np.take(Y, 0, axis=zi)  # S C Y X
    X, Y = np.moveaxis(X, 1, -1), np.moveaxis(Y, 1, -1)    # S Y X C
    n_val = max(1, len(X) // 10)
    val = (X[-n_val:], Y[-n_val:])
    X, Y = X[:-n_val], Y[:-n_val]
    if steps_per_epoch <= 0:  # validate once per pass over the patches, as isonet does
        steps_per_epoch = -(-len(X) // 16)

    config = Config("SYXC", 1, 1, train_batch_size=16, train_epochs=1000, train_steps_per_epoch=steps_per_epoch,
                    train_tensorboard=False)

    class WallTimeBudget(keras.callbacks.Callback):
        """Stop training once ``budget_s`` seconds have passed since training began."""

        def on_train_begin(self, logs=None):
            self.t0 = time.perf_counter()
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == 1:  # includes tracing the graph: a cost isonet (eager PyTorch) does not pay
                self.first_step_s = time.perf_counter() - self.t0
            if time.perf_counter() - self.t0 >= budget_s:
                self.model.stop_training = True

    with tempfile.TemporaryDirectory() as basedir:
        model = IsotropicCARE(config, "peer", basedir=basedir)
        model.prepare_for_training()
        budget = WallTimeBudget()
        model.callbacks.append(budget)
        t0, cpu0 = time.perf_counter(), time.process_time()
        history = model.train(X, Y, validation_data=val)  # loads the best validation epoch at the end
        t_train, cpu_train = time.perf_counter() - t0, time.process_time() - cpu0
        t0 = time.perf_counter()
        restored = model.predict(acquired, axes="ZYX", factor=factor)
        t_predict = time.perf_counter() - t0
    val_loss = [float(v) for v in history.history.get("val_loss", [])]
    np.savez(out_npz, restored=restored.astype(np.float32), train_s=t_train, train_cpu_s=cpu_train,
             first_step_s=getattr(budget, "first_step_s", float("nan")), predict_s=t_predict, data_s=t_data,
             steps=budget.steps, epochs=len(val_loss), val_loss=np.asarray(val_loss), n_train=len(X),
             steps_per_epoch=steps_per_epoch)


# ------------------------------------------------------------------------------------------
# driver: runs with isonet's Python; trains through the worker, scores like a cell
# ------------------------------------------------------------------------------------------


def score(cell: dict, stack_npz, restored: np.ndarray) -> dict:
    """PSNR (affine fit) and, for nuclei, SEG of the peer's restoration, as the cell scored isonet."""
    from isonet.benchmark import CellSettings, gap_closed, resample_corner_aligned_z, score_segmentations
    from isonet.metrics import psnr_affine

    with np.load(stack_npz) as z:
        refs = {"iso_gt": z["iso_gt"], "gt": z["gt"]}
        labels = z["labels"] if "labels" in z.files else None
        n_acq, factor = z["acquired"].shape[0], int(z["subsample"])
    aligned = resample_corner_aligned_z(restored, n_acq, factor)
    out = {"psnr": {ref: {"csbdeep": psnr_affine(aligned, r)} for ref, r in refs.items()}, "seg": None}
    if labels is not None and cell.get("seg"):
        s = CellSettings.from_dict(cell["settings"])
        scored = score_segmentations(labels, {"csbdeep": aligned}, s, rule=cell["seg_threshold"]["rule"])
        seg = scored["seg"]
        out.update({
            "seg": seg,
            "gap_closed": {scope: {"csbdeep": gap_closed(seg[scope]["csbdeep"], cell["seg"][scope]["input"],
                                                         cell["seg"][scope]["iso_gt"])} for scope in seg},
            "seg_threshold": scored["threshold"],
        })
    return out


def run_peer(cell_json, stack_npz, out_json, budget_s: float | None = None, threads: int | None = None,
             peer_python=DEFAULT_PEER_PYTHON, steps_per_epoch: int = 0, keep_npz=None) -> dict:
    """Train and apply the peer on one cell's stack; write and return its per-stack JSON."""
    cell = json.loads(Path(cell_json).read_text())
    budget_from = "--budget-s" if budget_s is not None else MATCH_METHOD
    if budget_s is None:
        budget_s = float(cell["training"][MATCH_METHOD]["train_s"])
    threads = int(threads or cell.get("threads") or 1)
    s = cell["settings"]
    peer_python = Path(peer_python)
    if not peer_python.exists():
        sys.exit(f"csbdeep_peer: {peer_python} does not exist; build the peer's venv first: make peer-venv")
    with tempfile.TemporaryDirectory() as tmp:
        pred_npz = Path(keep_npz) if keep_npz else Path(tmp) / "peer.npz"
        cmd = [str(peer_python), __file__, "worker", str(stack_npz), str(pred_npz), "--budget-s", str(budget_s),
               "--n-patches", str(s["n_patches"]), "--patch-size", str(s["patch_size"]),
               "--steps-per-epoch", str(steps_per_epoch), "--threads", str(threads), "--seed", str(cell["seed"] % 2**31)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        wall = time.perf_counter() - t0
        with np.load(pred_npz) as z:
            restored = z["restored"]
            facts = {k: float(z[k]) for k in ("train_s", "train_cpu_s", "first_step_s", "predict_s", "data_s")}
            steps_per_epoch = int(z["steps_per_epoch"])
            facts.update(steps=int(z["steps"]), epochs=int(z["epochs"]), n_train_patches=int(z["n_train"]),
                         best_val_mae=float(np.min(z["val_loss"])) if z["val_loss"].size else None)
    result = {
        "peer": "csbdeep",
        "method": "CSBDeep IsotropicCARE (csbdeep 0.8.2)",
        "phantom": cell["phantom"], "psf": cell["psf"], "stack": cell["stack"], "seed": cell["seed"],
        "threads": threads,
        "training": {"budget_s": round(budget_s, 1), "budget_from": budget_from,
                     "isonet_train_s": cell["training"].get(MATCH_METHOD, {}).get("train_s"),
                     "steps_per_epoch": steps_per_epoch,
                     "batch_size": 16, "patch_size": s["patch_size"], "n_patches": s["n_patches"],
                     **{k: (round(v, 1 if k.endswith("_s") else 5) if isinstance(v, float) else v)
                        for k, v in facts.items()}},
        "z_grid": "resampled linearly from n_acq*factor corner-aligned planes onto isonet's grid",
        **score(cell, stack_npz, restored),
        "timing": {"total": round(wall, 1)},
    }
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        p = argparse.ArgumentParser(prog="csbdeep_peer.py worker")
        p.add_argument("stack_npz")
        p.add_argument("out_npz")
        p.add_argument("--budget-s", type=float, required=True)
        p.add_argument("--n-patches", type=int, default=1024)
        p.add_argument("--patch-size", type=int, default=64)
        p.add_argument("--steps-per-epoch", type=int, default=0)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--seed", type=int, default=0)
        a = p.parse_args(argv[1:])
        worker(a.stack_npz, a.out_npz, a.budget_s, a.n_patches, a.patch_size, a.steps_per_epoch, a.threads, a.seed)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cell_json", help="the benchmark cell's JSON (isonet benchmark-cell)")
    p.add_argument("stack_npz", help="the stack it simulated (isonet benchmark-cell --stack-npz)")
    p.add_argument("out_json")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"training wall time; default: the cell's {MATCH_METHOD} training time")
    p.add_argument("--threads", type=int, default=None, help="default: the cell's")
    p.add_argument("--steps-per-epoch", type=int, default=0,
                   help="validation (best-epoch check) every this many steps; 0: once per pass over the training "
                        "patches, as isonet validates (58 steps for the quick size's 922 training patches)")
    p.add_argument("--peer-python", default=str(DEFAULT_PEER_PYTHON))
    p.add_argument("--keep-npz", default=None, help="also keep the peer's raw prediction here")
    a = p.parse_args(argv)
    r = run_peer(a.cell_json, a.stack_npz, a.out_json, a.budget_s, a.threads, a.peer_python, a.steps_per_epoch,
                 a.keep_npz)
    t = r["training"]
    print(f"csbdeep {r['phantom']}/{r['psf']}/{r['stack']}: trained {t['train_s']:.0f} s (budget {t['budget_s']:.0f} s, "
          f"{t['steps']} steps, {t['epochs']} epochs), PSNR vs GT {r['psnr']['gt']['csbdeep']:.2f} dB, "
          f"vs iso-GT {r['psnr']['iso_gt']['csbdeep']:.2f} dB"
          + (f", SEG interior {r['seg']['interior']['csbdeep']:.3f} whole {r['seg']['whole']['csbdeep']:.3f}"
             if r.get("seg") else ""))


if __name__ == "__main__":
    main()
