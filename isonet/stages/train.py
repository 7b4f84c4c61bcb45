"""Stage ``train``: fit the network to the patch pairs; resumable, best weights kept."""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from isonet.errors import InputError
from isonet.modelfile import load_checkpoint, save_checkpoint, save_model
from isonet.stages.common import check_output_path
from isonet.nets import build_network
from isonet.camera import Camera
from isonet.degrade import exact_factor
from isonet.patches import Normalization, TrainingPairs
from isonet.provenance import file_sha256, provenance_record
from isonet.storage import write_text
from isonet.train import TrainConfig, TrainState, fit, pick_device, use_deterministic_torch

logger = logging.getLogger(__name__)


def _fingerprint(patches_sha256: str, settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(patches_sha256.encode())
    return h.hexdigest()[:16]


def _load_patches(patches_npz):
    """Training pairs, targets, metadata and validation pairs of a file written by the ``patches`` stage.

    The pairs are :class:`isonet.patches.TrainingPairs`: noise-free acquired samples that training
    degrades anew every epoch. ``validation`` is ``(inputs, targets)`` from held-out planes, or None.
    """
    path = Path(patches_npz)
    if not path.is_file():
        raise InputError(f"{path}: patches file not found; run `isonet patches` first or fix the path")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if not isinstance(meta, dict) or not {"factor", "normalization"} <= meta.keys():
                raise KeyError("meta lacks factor and normalization")
            S, offsets, Y = f["S"], f["offsets"], f["Y"]
            validation = (f["X_val"], f["Y_val"]) if "X_val" in f.files else None
            camera = Camera.from_dict(meta["camera"]) if meta.get("camera") else None
            factor = exact_factor(meta["factor"])
            norm = Normalization.from_dict(meta["normalization"])
    except (KeyError, TypeError, OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(
            f"{path}: not a readable patches file ({type(err).__name__}: {' '.join(str(err).split())}); "
            "write it again with `isonet patches`"
        ) from None
    if Y.ndim != 3 or len(Y) < 2 or len(S) != len(Y) or not (np.isfinite(S).all() and np.isfinite(Y).all()):
        raise InputError(
            f"{path}: samples S {S.shape} and targets Y {Y.shape} are not at least 2 finite pairs; "
            "write it again with `isonet patches`"
        )
    return TrainingPairs(S, offsets, Y, factor, camera, norm), Y, meta, validation


def _load_psf_info(psf_json) -> dict:
    """The JSON description written by the ``psf`` stage."""
    path = Path(psf_json)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(
            f"{path}: not a readable PSF description ({type(err).__name__}); run `isonet psf` again"
        ) from None
    if not isinstance(info, dict):
        raise InputError(f"{path}: not a PSF description (a JSON object); run `isonet psf` again")
    return info


def train_stage(
    patches_npz,
    psf_json,
    model_out,
    curve_tsv,
    checkpoint=None,
    architecture: str = "isonet2",
    epochs: int = 10,
    steps: int | None = None,
    minutes: float | None = None,
    batch_size: int = 16,
    learning_rate: float = 5e-3,
    validation_fraction: float = 0.1,
    dropout: float = 0.2,
    device: str = "auto",
    precision: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    lr_patience: int | None = None,
    warmup_steps: int = 100,
    schedule: str = "plateau",
) -> dict:
    """Train and write the model file and the training curve (TSV: epoch, losses, seconds).

    Training runs for ``steps`` optimiser steps when given (else ``epochs`` passes over the
    patches), or until ``minutes`` of training, whichever ends first; the weights with the best
    validation loss (on the held-out planes' pairs of the patches file) are kept. The network's
    initial weights come from ``seed``. ``checkpoint`` (default: next to ``model_out``) is written
    after every epoch; a re-run with the same patches and settings resumes from it instead of
    starting over, exactly as an uninterrupted run would (random generator states are part of
    the checkpoint).

    The network's initial weights, the data order, the flips, the training noise
    and dropout all come from ``seed``: on the CPU, the same patches, settings and thread count
    give a bit-identical model file (a ``minutes`` budget ends at a time, not a step, and so does not).
    """
    if threads:
        torch.set_num_threads(int(threads))
    use_deterministic_torch()
    for out in (model_out, curve_tsv):
        check_output_path(out, [patches_npz, psf_json])
    X, Y, meta, validation = _load_patches(patches_npz)
    psf_info = _load_psf_info(psf_json)
    flips = tuple(int(a) for a in psf_info.get("commuting_flips", ()))
    config = TrainConfig(
        epochs=epochs, steps=steps, minutes=minutes, batch_size=batch_size, learning_rate=learning_rate, validation_fraction=validation_fraction,
        flip_axes=flips, seed=seed, device=device, precision=precision, lr_patience=lr_patience,
        warmup_steps=warmup_steps, schedule=schedule,
    )
    settings = {"architecture": architecture, "dropout": dropout, **config.__dict__}
    settings["flip_axes"] = list(flips)
    patches_sha256 = file_sha256(patches_npz)
    fingerprint = _fingerprint(patches_sha256, {k: v for k, v in settings.items() if k not in ("epochs", "steps", "minutes")})
    checkpoint = Path(checkpoint) if checkpoint else Path(model_out).with_suffix(".checkpoint.safetensors")
    state = None
    if checkpoint.exists():
        saved_fingerprint, saved_state = load_checkpoint(checkpoint)
        if saved_fingerprint == fingerprint:
            state = TrainState.from_dict(saved_state)
            logger.info("train: resuming from %s at epoch %d", checkpoint, state.epoch)
        else:
            logger.info("train: ignoring %s (other patches or settings)", checkpoint)

    model = build_network(architecture, dropout=dropout, seed=seed)
    dev = pick_device(device)
    logger.info(
        "train: %s on %s, %d patches %s, %s, batch %d, lr %g, flips %s, validation %s",
        architecture, dev, len(Y), Y.shape[1:],
        f"{steps} steps" if steps is not None else f"{epochs} epochs", batch_size, learning_rate, flips,
        f"{len(validation[1])} pairs from held-out planes" if validation is not None else "patches held out",
    )
    if minutes is not None:
        logger.info("train: at most %g minutes", minutes)
    state = fit(
        model, X, Y, config, state=state, on_epoch_end=lambda s: save_checkpoint(checkpoint, fingerprint, s.to_dict()),
        log=lambda m: logger.info("train: %s", m), validation=validation,
    )
    model.load_state_dict(state.best_model)
    # the thread count and device are recorded because CPU reductions, and GPUs, can round differently
    provenance = provenance_record(
        "train", {**settings, "threads": torch.get_num_threads(), "device_used": str(dev)},
        {"patches": {"path": str(patches_npz), "sha256": patches_sha256},
         "psf": {"path": str(psf_json), "sha256": file_sha256(psf_json)}},
    )
    save_model(
        model_out, model, architecture, meta["factor"], Normalization.from_dict(meta["normalization"]),
        dropout=dropout, psf=psf_info, patches=meta, camera=meta.get("camera"), training=settings,
        best_val_loss=state.best_val_loss, epochs_trained=state.epoch, steps_trained=state.step,
        isonet_version=provenance["versions"]["isonet"], provenance=provenance,
    )
    rows = ["epoch\ttrain_loss\tval_loss\tseconds\tlearning_rate"] + [
        f"{r['epoch']}\t{r['train_loss']:.5f}\t{r['val_loss']:.5f}\t{r['seconds']}\t{r.get('learning_rate', '')}"
        for r in state.history
    ]
    write_text(curve_tsv, "\n".join(rows) + "\n")
    logger.info("train: best validation loss %.3f (PSNR %.2f dB) -> %s", state.best_val_loss, -state.best_val_loss, model_out)
    return {"best_val_loss": state.best_val_loss, "epochs": state.epoch, "steps": state.step}
