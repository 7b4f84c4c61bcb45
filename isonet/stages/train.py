"""Stage ``train``: fit the network to the patch pairs; resumable, best weights kept.

With ``rounds`` > 1, each later round restores a central slab of the input with the network so
far and fine-tunes it on pairs from the restored lateral planes (see :func:`refine_round`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from isonet.errors import InputError
from isonet.modelfile import load_checkpoint, save_checkpoint, save_model
from isonet.stages.common import check_output_path
from isonet.nets import build_network, halo_for
from isonet.camera import Camera
from isonet.degrade import exact_factor
from isonet.patches import Normalization, TrainingPairs, pairs_from_planes
from isonet.predict import central_slab, iso_shape, resolve_precision, restore_block
from isonet.provenance import file_sha256, provenance_record
from isonet.storage import read_ome_zarr, write_text
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
    input_zarr=None,
    rounds: int = 1,
    refine_steps: int = 200,
    refine_planes: int = 96,
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

    ``rounds`` > 1 adds self-supervised rounds on ``input_zarr`` (the volume the patches came
    from): each restores the ``refine_planes`` central planes with the network so far and trains
    it on, for ``refine_steps`` steps, pairs from those restored lateral planes
    (:func:`refine_round`). Each round has its own checkpoint next to ``checkpoint``.
    """
    if threads:
        torch.set_num_threads(int(threads))
    use_deterministic_torch()
    for out in (model_out, curve_tsv):
        check_output_path(out, [patches_npz, psf_json])
    if not isinstance(rounds, int) or rounds < 1 or not isinstance(refine_steps, int) or refine_steps < 1 \
            or not isinstance(refine_planes, int) or refine_planes < 8:
        raise InputError(
            f"train: rounds {rounds!r}, refine_steps {refine_steps!r}, refine_planes {refine_planes!r} are not valid; "
            "give rounds >= 1, refine_steps >= 1 and refine_planes >= 8"
        )
    if rounds > 1 and input_zarr is None:
        raise InputError("train: rounds > 1 restores the input volume; give it with --input (the converted OME-Zarr)")
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
    if rounds > 1:
        settings.update(rounds=rounds, refine_steps=refine_steps, refine_planes=refine_planes)
    patches_sha256 = file_sha256(patches_npz)
    fingerprint = _fingerprint(patches_sha256, {k: v for k, v in settings.items()
                                                if k not in ("epochs", "steps", "minutes", "rounds", "refine_steps",
                                                             "refine_planes")})
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
    history = [{**r, "round": 1} for r in state.history]
    round_records = [{"round": 1, "best_val_loss": state.best_val_loss, "steps": state.step}]
    first_state = state
    for r in range(2, rounds + 1):
        round_checkpoint = checkpoint.with_name(f"{checkpoint.stem.split('.')[0]}.round{r}{checkpoint.suffix}")
        # the round before's outcome too: a first round trained longer must not meet a stale later round
        round_fingerprint = _fingerprint(fingerprint, {"round": r, "refine_steps": refine_steps,
                                                       "refine_planes": refine_planes, "input": str(input_zarr),
                                                       "before": round_records[-1]})
        state, record = refine_round(model, r, input_zarr, patches_npz, meta, config, refine_steps, refine_planes,
                                     round_checkpoint, round_fingerprint)
        history += [{**h, "epoch": len(history) + 1, "round": r} for h in state.history]
        round_records.append(record)
    # the thread count and device are recorded because CPU reductions, and GPUs, can round differently
    provenance = provenance_record(
        "train", {**settings, "threads": torch.get_num_threads(), "device_used": str(dev)},
        {"patches": {"path": str(patches_npz), "sha256": patches_sha256},
         "psf": {"path": str(psf_json), "sha256": file_sha256(psf_json)}},
    )
    save_model(
        model_out, model, architecture, meta["factor"], Normalization.from_dict(meta["normalization"]),
        dropout=dropout, psf=psf_info, patches=meta, camera=meta.get("camera"), training=settings,
        best_val_loss=state.best_val_loss, epochs_trained=first_state.epoch, steps_trained=first_state.step,
        rounds=round_records,
        isonet_version=provenance["versions"]["isonet"], provenance=provenance,
    )
    rows = ["epoch\ttrain_loss\tval_loss\tseconds\tlearning_rate\tround"] + [
        f"{r['epoch']}\t{r['train_loss']:.5f}\t{r['val_loss']:.5f}\t{r['seconds']}\t{r.get('learning_rate', '')}"
        f"\t{r['round']}"
        for r in history
    ]
    write_text(curve_tsv, "\n".join(rows) + "\n")
    logger.info("train: best validation loss %.3f (PSNR %.2f dB) -> %s", state.best_val_loss, -state.best_val_loss, model_out)
    return {"best_val_loss": state.best_val_loss, "epochs": first_state.epoch, "steps": first_state.step,
            "rounds": round_records}


def _round_volume(input_zarr, meta: dict):
    """The 3D volume a later round restores: the input, or the patches' channel at their middle time point."""
    if meta.get("timepoints") is None and meta.get("channel") is None:
        volume, _ = read_ome_zarr(input_zarr)
    else:
        times = meta.get("timepoints") or [0]
        volume, _ = read_ome_zarr(input_zarr, t=int(times[len(times) // 2]), c=meta.get("channel"))
    if volume.ndim != 3:
        raise InputError(
            f"{input_zarr}: image of shape {tuple(volume.shape)} is not the 3D volume the patches came from; "
            "give train the converted input of the patches stage"
        )
    return volume


def refine_round(model, round_no: int, input_zarr, patches_npz, meta: dict, config: TrainConfig, steps: int,
                 planes: int, checkpoint: Path, fingerprint: str):
    """One more self-supervised round: fine-tune ``model`` (in place) on pairs from its own restoration.

    An acquired lateral plane carries the PSF's whole axial blur from out of its plane, while an
    axial slice at inference carries only the lateral one; the targets of the first round teach
    structures seen through a thick optical section. The restoration's lateral planes are thinner
    sections: the ``planes`` central planes of the input are restored (laterally cropped about
    their centre to the patches stage's memory budget), and pairs are drawn from them exactly as
    the patches stage draws them from the acquired planes (same kernel, axial factor,
    normalisation, camera noise, patch size and count, held-out validation planes), then
    ``model`` trains on them for ``steps`` steps from its current weights, and keeps its best.
    Returns the round's final :class:`TrainState` and a record of it.
    """
    from isonet.stages.patches import PLANE_BUDGET_VOXELS

    source = _round_volume(input_zarr, meta)
    factor, norm = exact_factor(meta["factor"]), Normalization.from_dict(meta["normalization"])
    patch_size = int(meta["patch_size"])
    ranges = central_slab(iso_shape(source.shape, factor), planes, PLANE_BUDGET_VOXELS,
                          int(getattr(model, "size_multiple", 1)), min_side=patch_size + int(np.ceil(factor)))
    planes_done = [list(r) for r in ranges]
    state = None
    if checkpoint.exists():
        saved_fingerprint, saved_state = load_checkpoint(checkpoint)
        if saved_fingerprint == fingerprint:
            state = TrainState.from_dict(saved_state)
    if state is not None and state.step >= steps and state.best_model is not None:
        # finished before (a killed run resumed): nothing to restore or train again
        logger.info("train: round %d already finished in %s (%d steps)", round_no, checkpoint, state.step)
        model.load_state_dict(state.best_model)
        return state, {"round": round_no, "best_val_loss": state.best_val_loss, "steps": state.step,
                       "planes": planes_done}
    dev = pick_device(config.device)
    model.eval().to(dev)
    t0 = time.perf_counter()
    restored = restore_block(model, source, factor, ranges, norm, halo_for(model), batch_size=None, device=dev,
                             precision=resolve_precision(config.precision, dev), edges="clip")
    model.cpu()
    restore_s = time.perf_counter() - t0
    restored = norm.apply(restored)
    with np.load(patches_npz, allow_pickle=False) as f:
        kernel = f["kernel"]
    camera = Camera.from_dict(meta["camera"]) if meta.get("camera") else None
    pairs, validation, _ = pairs_from_planes(
        restored, kernel, factor, int(meta["n_patches"]), patch_size, meta.get("foreground_percentile", 90.0),
        meta.get("foreground_fraction", 0.8), config.validation_fraction, int(meta.get("seed", 0)), camera, norm)
    del restored
    logger.info("train: round %d: %d pairs from the restored planes z %d-%d, y %d-%d, x %d-%d (restored in %.0f s), "
                "%d steps from the round before's weights", round_no, len(pairs), *ranges[0], *ranges[1], *ranges[2],
                restore_s, steps)
    round_config = dataclasses.replace(config, steps=steps, minutes=None)
    if state is not None:
        logger.info("train: round %d resuming from %s at epoch %d", round_no, checkpoint, state.epoch)
    state = fit(model, pairs, pairs.targets, round_config, state=state,
                on_epoch_end=lambda s: save_checkpoint(checkpoint, fingerprint, s.to_dict()),
                log=lambda m: logger.info("train: round %d: %s", round_no, m), validation=validation)
    model.load_state_dict(state.best_model)
    # no timings: the same settings give a bit-identical model file
    return state, {"round": round_no, "best_val_loss": state.best_val_loss, "steps": state.step,
                   "planes": planes_done}
