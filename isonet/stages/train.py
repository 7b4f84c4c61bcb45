"""Stage ``train``: fit the network to the patch pairs; resumable, best weights kept."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

import isonet
from isonet.modelfile import save_model
from isonet.nets import build_network
from isonet.camera import Camera
from isonet.patches import Normalization, TrainingPairs
from isonet.storage import atomic_path, write_text
from isonet.train import TrainConfig, TrainState, fit, pick_device

logger = logging.getLogger(__name__)


def _fingerprint(patches_npz, settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    with open(patches_npz, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


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
) -> dict:
    """Train and write the model file and the training curve (TSV: epoch, losses, seconds).

    Training runs for ``steps`` optimiser steps when given (else ``epochs`` passes over the
    patches), or until ``minutes`` of training, whichever ends first; the weights with the best
    validation loss (on the held-out planes' pairs of the patches file) are kept. The network's
    initial weights come from ``seed``. ``checkpoint`` (default: next to ``model_out``) is written
    after every epoch; a re-run with the same patches and settings resumes from it instead of
    starting over.
    """
    if threads:
        torch.set_num_threads(int(threads))
    with np.load(patches_npz) as f:
        meta = json.loads(str(f["meta"]))
        Y = f["Y"]
        camera = Camera.from_dict(meta["camera"]) if meta.get("camera") else None
        norm = Normalization.from_dict(meta["normalization"])
        X = TrainingPairs(f["S"], f["offsets"], Y, int(meta["factor"]), camera, norm)
        validation = (f["X_val"], f["Y_val"]) if "X_val" in f.files else None
    psf_info = json.loads(Path(psf_json).read_text())
    flips = tuple(int(a) for a in psf_info.get("commuting_flips", ()))
    config = TrainConfig(
        epochs=epochs, steps=steps, minutes=minutes, batch_size=batch_size, learning_rate=learning_rate, validation_fraction=validation_fraction,
        flip_axes=flips, seed=seed, device=device, precision=precision, lr_patience=lr_patience,
        warmup_steps=warmup_steps,
    )
    settings = {"architecture": architecture, "dropout": dropout, **config.__dict__}
    settings["flip_axes"] = list(flips)
    fingerprint = _fingerprint(patches_npz, {k: v for k, v in settings.items() if k not in ("epochs", "steps", "minutes")})
    checkpoint = Path(checkpoint) if checkpoint else Path(model_out).with_suffix(".checkpoint.pt")
    state = None
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved.get("fingerprint") == fingerprint:
            state = TrainState.from_dict(saved["state"])
            logger.info("train: resuming from %s at epoch %d", checkpoint, state.epoch)
        else:
            logger.info("train: ignoring %s (other patches or settings)", checkpoint)

    def save_checkpoint(s: TrainState) -> None:
        with atomic_path(checkpoint) as tmp:
            torch.save({"fingerprint": fingerprint, "state": s.to_dict()}, tmp)

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
    state = fit(model, X, Y, config, state=state, on_epoch_end=save_checkpoint,
                log=lambda m: logger.info("train: %s", m), validation=validation)
    model.load_state_dict(state.best_model)
    save_model(
        model_out, model, architecture, meta["factor"], Normalization.from_dict(meta["normalization"]),
        dropout=dropout, psf=psf_info, patches=meta, camera=meta.get("camera"), training=settings,
        best_val_loss=state.best_val_loss, epochs_trained=state.epoch, steps_trained=state.step,
        isonet_version=isonet.__version__,
    )
    rows = ["epoch\ttrain_loss\tval_loss\tseconds\tlearning_rate"] + [
        f"{r['epoch']}\t{r['train_loss']:.5f}\t{r['val_loss']:.5f}\t{r['seconds']}\t{r.get('learning_rate', '')}"
        for r in state.history
    ]
    write_text(curve_tsv, "\n".join(rows) + "\n")
    logger.info("train: best validation loss %.3f (PSNR %.2f dB) -> %s", state.best_val_loss, -state.best_val_loss, model_out)
    return {"best_val_loss": state.best_val_loss, "epochs": state.epoch, "steps": state.step}
