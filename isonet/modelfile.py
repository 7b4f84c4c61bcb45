"""The trained-model file: everything needed to apply a network to a new volume.

A model file (``model.pt``) is a ``torch.save`` dict with the network's weights and its
architecture, the axial factor it was trained for, the PSF it undoes, the intensity
normalisation of its training data and the halo that block-wise inference needs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import InputError
from .nets import build_network, halo_for
from .patches import Normalization

MODEL_FORMAT = "isonet-model/1"


def save_model(path, model: nn.Module, architecture: str, factor: int, normalization: Normalization, **meta) -> None:
    """Write a model file atomically (weights on CPU)."""
    from .storage import atomic_path

    payload = {
        "format": MODEL_FORMAT,
        "architecture": architecture,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "factor": int(factor),
        "normalization": normalization.to_dict(),
        "receptive_radius": int(model.receptive_radius),
        "halo": halo_for(model),
        **meta,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path) -> tuple[nn.Module, dict]:
    """Read a model file; returns the network (eval mode, CPU) and the file's metadata."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model file not found; train a model first (isonet train) or fix the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt or foreign file
        raise InputError(f"{path}: not a readable isonet model file ({type(exc).__name__}); retrain it") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: not an isonet model file (format {MODEL_FORMAT} expected); retrain it")
    model = build_network(payload["architecture"], dropout=payload.get("dropout", 0.2))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta["normalization"] = Normalization.from_dict(payload["normalization"])
    return model, meta
