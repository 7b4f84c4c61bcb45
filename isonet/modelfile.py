"""Model files and training checkpoints: tensors in safetensors, everything else as JSON.

A model file (``model.safetensors``) holds the network's weights and, in the safetensors
metadata, a JSON record with its architecture, the axial factor it was trained for, the PSF it
undoes, the intensity normalisation of its training data, the halo that block-wise inference
needs, the training settings and the provenance (package versions, input hashes). A training
checkpoint holds the training state (weights, optimiser state, random generator states) the same
way. Neither format can carry code: :func:`read_tensor_file`, the one reader every path uses,
refuses the pickle files of earlier versions without unpickling them; ``isonet convert-model``
converts a model file the user trusts.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .degrade import exact_factor
from .errors import InputError
from .nets import build_network, halo_for
from .patches import Normalization

MODEL_FORMAT = "isonet-model/2"
CHECKPOINT_FORMAT = "isonet-checkpoint/2"
LEGACY_MODEL_FORMAT = "isonet-model/1"

_TENSOR = "__tensor__"
_ITEMS = "__items__"


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes (independent of the file around it)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_model(path, model: nn.Module, architecture: str, factor, normalization: Normalization, **meta) -> None:
    """Write a model file atomically: weights (CPU) in safetensors, ``meta`` (JSON-serializable) in its metadata."""
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    info = {
        "format": MODEL_FORMAT,
        "architecture": architecture,
        "factor": exact_factor(factor),  # an int when integral, else the float of the exact ratio
        "normalization": normalization.to_dict(),
        "receptive_radius": int(model.receptive_radius),
        "halo": halo_for(model),
        "weights_sha256": weights_sha256(weights),
        **meta,
    }
    _write_tensor_file(path, weights, MODEL_FORMAT, info)


def load_model(path) -> tuple[nn.Module, dict]:
    """Read a model file; returns the network (eval mode, CPU) and the file's metadata.

    Raises
    ------
    InputError
        When the file is missing, damaged, not an isonet model file, or in the old pickle format
        (which is refused unread; the message says how to convert it).
    """
    weights, info = read_tensor_file(path, MODEL_FORMAT)
    try:
        model = build_network(info["architecture"], dropout=info.get("dropout", 0.2))
        model.load_state_dict(weights)
        info["normalization"] = Normalization.from_dict(info["normalization"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: model file with inconsistent contents ({_first_line(exc)}); retrain it") from None
    model.eval()
    return model, info


def save_checkpoint(path, fingerprint: str, state: dict) -> None:
    """Write a training checkpoint atomically: the tensors of ``state`` in safetensors, the rest as JSON.

    ``state`` is a nested structure of dicts, lists, tensors and JSON values (e.g.
    :meth:`isonet.train.TrainState.to_dict`, optimiser state dicts with integer keys included).
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tensors(state, "state", tensors)
    _write_tensor_file(path, tensors, CHECKPOINT_FORMAT, {"fingerprint": fingerprint, "state": skeleton})


def load_checkpoint(path) -> tuple[str, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`; returns ``(fingerprint, state)``."""
    tensors, info = read_tensor_file(path, CHECKPOINT_FORMAT)
    try:
        return str(info["fingerprint"]), _join_tensors(info["state"], tensors)
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path}: damaged training checkpoint ({_first_line(exc)}); delete it to train from the start") from None


def read_tensor_file(path, expected_format: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The one reader of isonet's tensor files: tensors and the JSON metadata, no code run.

    Parameters
    ----------
    path : path
        A model file or a training checkpoint.
    expected_format : str
        :data:`MODEL_FORMAT` or :data:`CHECKPOINT_FORMAT`.

    Returns
    -------
    tensors : dict of str to Tensor
        On the CPU.
    info : dict
        The JSON record stored under the ``isonet`` metadata key.

    Raises
    ------
    InputError
        One line naming the file: missing, old pickle format (refused without unpickling),
        damaged, or of another kind than ``expected_format``.
    """
    path = Path(path)
    what = "model file" if expected_format == MODEL_FORMAT else "training checkpoint"
    if not path.is_file():
        hint = "train a model first (isonet train) or fix the path" if what == "model file" else "fix the path"
        raise InputError(f"{path}: {what} not found; {hint}")
    with open(path, "rb") as f:
        head = f.read(9)
    # a safetensors file opens with its header's length (8 bytes, little-endian) and then "{"; the
    # length's first byte may be anything, 0x80 included, so only a file without that "{" can be a pickle
    safetensors_header = len(head) == 9 and head[8:9] == b"{"
    if not safetensors_header and (head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"):  # torch.save zip, bare pickle
        if what == "model file":
            new = path.with_suffix(".safetensors")
            new = new.with_name(new.stem + ".converted.safetensors") if new == path else new
            raise InputError(
                f"{path}: model file in the old pickle format, which can run code when loaded (refused); if you "
                f"trust its source, convert it with `isonet convert-model {path} {new}`"
            )
        raise InputError(
            f"{path}: training checkpoint in the old pickle format, which can run code when loaded (refused); "
            "delete it to train from the start"
        )
    if not safetensors_header:
        raise InputError(f"{path}: not an isonet {what} (no safetensors header); give a file written by isonet train")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: damaged {what} ({_first_line(exc)}); copy or write it again") from None
    try:
        info = json.loads(metadata["isonet"])
    except (KeyError, ValueError) as exc:
        raise InputError(f"{path}: not an isonet {what} (no isonet metadata: {_first_line(exc)}); "
                         "give a file written by isonet train") from None
    if not isinstance(info, dict) or info.get("format") != expected_format:
        found = info.get("format") if isinstance(info, dict) else None
        raise InputError(
            f"{path}: not an isonet {what} (format {found!r}, {expected_format!r} expected); "
            "give a file written by isonet train"
        )
    return tensors, info


def convert_legacy_model(old, new, trust: bool = False) -> dict:
    """Convert a pickle model file of an earlier isonet (``model.pt``) to a safetensors model file.

    The old file is first read with ``torch.load(weights_only=True)``, which rebuilds only
    tensors and plain values and runs nothing. With ``trust=True`` a file that holds other
    objects is unpickled in full (``weights_only=False``), which EXECUTES any code the file
    contains: only for files whose source the user trusts. This is the only place isonet
    unpickles anything.

    Returns
    -------
    dict
        The new file's metadata.
    """
    old, new = Path(old), Path(new)
    if not old.is_file():
        raise InputError(f"{old}: model file not found; fix the path")
    try:
        payload = torch.load(old, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises many types for a foreign or crafted pickle)
        if not trust:
            raise InputError(
                f"{old}: holds objects other than tensors and plain values ({type(exc).__name__}), which would run "
                "code when unpickled; rerun with --trust only if you trust the file's source"
            ) from None
        try:
            payload = torch.load(old, map_location="cpu", weights_only=False)
        except Exception as exc2:  # noqa: BLE001
            raise InputError(f"{old}: not a readable pickle model file ({type(exc2).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != LEGACY_MODEL_FORMAT or "state_dict" not in payload:
        raise InputError(f"{old}: not an isonet model file of format {LEGACY_MODEL_FORMAT!r}; nothing to convert")
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "format", "architecture", "factor",
                                                           "normalization", "receptive_radius", "halo")}
    try:
        json.dumps(meta)
    except TypeError as exc:
        raise InputError(f"{old}: metadata that is not plain data ({exc}); cannot convert") from None
    model = build_network(payload["architecture"], dropout=payload.get("dropout", 0.2))
    model.load_state_dict(payload["state_dict"])
    meta["converted_from"] = {"path": str(old), "format": LEGACY_MODEL_FORMAT}
    save_model(new, model, payload["architecture"], payload["factor"], Normalization.from_dict(payload["normalization"]),
               **meta)
    return read_tensor_file(new, MODEL_FORMAT)[1]


def _write_tensor_file(path, tensors: dict[str, torch.Tensor], fmt: str, info: dict) -> None:
    from .storage import atomic_path

    # one metadata key: safetensors writes its metadata map in no fixed order, and the same
    # model should give the same bytes
    metadata = {"isonet": json.dumps({**info, "format": fmt}, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
        # safetensors creates its file with mode 0600; a model is meant to be shared like any
        # other output, so give it the mode the user's umask gives new files
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)


def _split_tensors(obj, key: str, tensors: dict):
    """``obj`` with every tensor replaced by a reference into ``tensors`` (JSON-serializable)."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _split_tensors(v, f"{key}.{k}", tensors) for k, v in obj.items()}
        return {_ITEMS: [[k, _split_tensors(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise TypeError(f"{key}: cannot store a {type(obj).__name__} in a checkpoint")


def _join_tensors(obj, tensors: dict):
    """Inverse of :func:`_split_tensors`."""
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        if set(obj) == {_ITEMS}:
            return {k: _join_tensors(v, tensors) for k, v in obj[_ITEMS]}
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
