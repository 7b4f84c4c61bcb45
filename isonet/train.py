"""Training loop: per-patch PSNR loss, Adam, validation split, best weights kept, resumable."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .errors import InputError


def psnr_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean over patches of ``-(20 log10 max(target) - 10 log10 MSE)`` (the paper's loss).

    ``pred`` and ``target`` have shape ``(N, 1, H, W)``; the maximum is taken per target patch
    (floored at ``1e-3`` so that an empty background patch cannot dominate).
    """
    dims = tuple(range(1, target.ndim))
    mse = torch.mean((pred.float() - target.float()) ** 2, dim=dims)
    peak = torch.clamp(torch.amax(target.float(), dim=dims), min=1e-3)
    psnr = 20 * torch.log10(peak) - 10 * torch.log10(mse + eps)
    return -psnr.mean()


@dataclass
class TrainConfig:
    """Training settings; the defaults are the paper's where it gives them."""

    epochs: int = 100
    #: Stop after this many optimiser steps (None: ``epochs`` passes over the patches).
    steps: int | None = None
    #: Stop after this many minutes of training (None: no time limit). Resumed runs count the
    #: time already spent.
    minutes: float | None = None
    batch_size: int = 16
    learning_rate: float = 5e-3
    validation_fraction: float = 0.1
    flip_axes: tuple[int, ...] = ()
    seed: int = 0
    device: str = "auto"
    #: ``auto`` uses bfloat16 autocast where the hardware has it (CUDA, AVX512-BF16/AMX CPUs),
    #: about 3× faster on such CPUs; weights and the optimiser stay float32.
    precision: str = "auto"
    #: Halve the learning rate when the validation loss has not improved for this many epochs
    #: (None: constant rate, as in the paper).
    lr_patience: int | None = None
    #: Ramp the learning rate up linearly over this many first steps. Adam's first steps at the
    #: full rate move every weight by about the rate at once, which can silence all ReLUs of a
    #: layer for good (IsoNet-2 then outputs its input unchanged); a short ramp avoids that.
    warmup_steps: int = 100
    #: Learning-rate schedule after the warm-up: ``plateau`` (constant, halved by
    #: ``lr_patience`` when given) or ``cosine`` (from the full rate down to 0 at the end of the
    #: budget: of ``steps`` (or ``epochs``), or of ``minutes`` when that ends first).
    schedule: str = "plateau"


@dataclass
class TrainState:
    """Everything needed to resume training after an interruption."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    model: dict | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    best_model: dict | None = None
    best_val_loss: float = math.inf
    #: Random generator states after the last epoch, so a resumed run draws what an
    #: uninterrupted one would: data order and flips (numpy ``bit_generator.state``), dropout
    #: (torch's CPU generator, and the CUDA one when training on a GPU).
    numpy_rng: dict | None = None
    torch_rng: torch.Tensor | None = None
    cuda_rng: torch.Tensor | None = None
    step: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**d)


def use_deterministic_torch() -> None:
    """Ask torch for deterministic algorithms (process-wide; a warning where an op has none).

    On the CPU training and inference then repeat bit for bit at the same thread count. On a
    GPU cuDNN is limited to deterministic convolution algorithms and cuBLAS to a fixed
    workspace; an op without a deterministic CUDA kernel would warn instead of failing (none of
    the ops of IsoNet-1/2 is on PyTorch's list of such ops).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def pick_device(device: str = "auto") -> torch.device:
    """``cuda`` when present (for ``auto``), else ``cpu``; an explicit ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device: 'cuda' was requested but no CUDA GPU is visible; set device: auto or cpu")
    return torch.device(device)


def scheduled_rate(config: TrainConfig, step: int, seconds: float, max_steps: int) -> float | None:
    """The learning rate of optimiser step ``step`` (0-based), or None where a plateau scheduler sets it.

    The first ``warmup_steps`` ramp up linearly. After them ``cosine`` follows half a cosine from
    the full rate to 0 over the rest of the budget; its progress is the larger of the steps done
    and, with a ``minutes`` budget, the time spent, so a time-limited run also ends annealed.
    """
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if config.schedule != "cosine":
        return None
    span = max(1, max_steps - config.warmup_steps)
    progress = (step - config.warmup_steps) / span
    if config.minutes is not None:
        progress = max(progress, seconds / (60 * config.minutes))
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train and validation indices; at least one validation item when ``fraction > 0``."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * fraction))) if fraction > 0 else 0
    if n_val >= n:
        raise InputError(
            f"train.validation_fraction: {fraction} leaves no training patches out of {n}; "
            "give a fraction between 0 and 1 or sample more patches"
        )
    return order[n_val:], order[:n_val]


def fit(
    model: nn.Module,
    X,
    Y: np.ndarray,
    config: TrainConfig,
    state: TrainState | None = None,
    on_epoch_end: Callable[[TrainState], None] | None = None,
    log: Callable[[str], None] = print,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainState:
    """Train ``model`` on patch pairs; returns the final state with the best weights in ``best_model``.

    Parameters
    ----------
    model : nn.Module
        Network mapping ``(N, 1, H, W)`` to the same shape.
    X : ndarray (N, H, W) or :class:`isonet.patches.TrainingPairs`
        Inputs (normalised). Training pairs are degraded anew each epoch: the camera noise of
        epoch ``e`` comes from ``numpy.random.default_rng([seed, e])``.
    Y : ndarray (N, H, W), float32
        Targets.
    config : TrainConfig
        Training ends after ``steps`` optimiser steps when given, else after ``epochs`` passes,
        or after ``minutes`` of training, whichever comes first; the model is validated after
        every pass and at the end, and the best weights are kept.
    state : TrainState, optional
        A state saved by ``on_epoch_end`` to resume from; training continues at ``state.epoch``.
    on_epoch_end : callable, optional
        Called with the state after every epoch (e.g. to write a checkpoint).
    log : callable
        Receives one progress line per epoch.
    validation : (inputs, targets), optional
        Held-out pairs (e.g. from lateral planes no training patch comes from). Without them a
        ``validation_fraction`` of the patches is held out.
    """
    pairs = X if hasattr(X, "inputs") else None
    if Y.ndim != 3 or len(X) != len(Y) or (pairs is None and X.shape != Y.shape):
        raise ValueError(f"X and Y must both hold N (H, W) patches, got {np.shape(X)} and {Y.shape}")
    from .predict import resolve_precision

    device = pick_device(config.device)
    amp_dtype = torch.bfloat16 if resolve_precision(config.precision, device) == "bf16" else None
    torch.manual_seed(config.seed)  # dropout draws from torch's global generator
    model.to(device=device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = None
    if config.schedule not in ("plateau", "cosine"):
        raise InputError(f"train.schedule: {config.schedule!r} is not a schedule; give plateau or cosine")
    if config.lr_patience is not None and config.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=config.lr_patience)
    state = state or TrainState()
    if state.model is not None:
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        if scheduler is not None and state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
    if validation is not None:
        train_idx = np.arange(len(Y))
        Xv, Yv = (torch.from_numpy(np.ascontiguousarray(a[:, None], dtype=np.float32)).to(device) for a in validation)
    else:
        train_idx, val_idx = split_validation(len(Y), config.validation_fraction, config.seed)
        if pairs is not None and len(val_idx):
            val_inputs = pairs.inputs(val_idx, np.random.default_rng([config.seed, 1 << 20]))
        else:
            val_inputs = np.zeros((0,) + Y.shape[1:], np.float32) if pairs is not None else X[val_idx]
        Xv = torch.from_numpy(np.ascontiguousarray(val_inputs[:, None], dtype=np.float32)).to(device)
        Yv = torch.from_numpy(np.ascontiguousarray(Y[val_idx][:, None])).to(device)
    Yt = torch.from_numpy(np.ascontiguousarray(Y[:, None]))
    Xt = None if pairs else torch.from_numpy(np.ascontiguousarray(X[:, None]))
    rng = np.random.default_rng(config.seed)  # data order and flips
    if state.numpy_rng is not None:
        rng.bit_generator.state = state.numpy_rng
    if state.torch_rng is not None:
        torch.set_rng_state(state.torch_rng)
    if state.cuda_rng is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state.cuda_rng, device)
    flip_dims = [2 + a for a in config.flip_axes]
    steps_per_epoch = -(-len(train_idx) // config.batch_size)
    max_steps = config.epochs * steps_per_epoch if config.steps is None else int(config.steps)

    def budget_left() -> bool:
        return state.step < max_steps and (config.minutes is None or state.seconds < 60 * config.minutes)

    epoch = state.epoch
    while budget_left():
        t0, seconds_before = time.perf_counter(), state.seconds
        model.train()
        order = rng.permutation(train_idx)
        noise_rng = np.random.default_rng([config.seed, epoch])
        losses = []
        for b in range(0, len(order), config.batch_size):
            if not budget_left():
                break
            idx = np.sort(order[b : b + config.batch_size])
            xb = torch.from_numpy(pairs.inputs(idx, noise_rng)[:, None]) if pairs else Xt[idx]
            xb, yb = xb.to(device), Yt[idx].to(device)
            for d in flip_dims:
                if rng.random() < 0.5:
                    xb, yb = torch.flip(xb, (d,)), torch.flip(yb, (d,))
            xb = xb.contiguous(memory_format=torch.channels_last)
            rate = scheduled_rate(config, state.step, state.seconds, max_steps)
            if rate is not None:
                for group in optimizer.param_groups:
                    group["lr"] = rate
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                pred = model(xb)
            loss = psnr_loss(pred, yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            state.step += 1
            state.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
        val_loss = evaluate_loss(model, Xv, Yv, config.batch_size, amp_dtype) if len(Xv) else float("nan")
        record = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_loss": val_loss,
            "seconds": round(state.seconds - seconds_before, 3),
            "learning_rate": optimizer.param_groups[0]["lr"],
            "step": state.step,
        }
        if scheduler is not None and np.isfinite(val_loss):
            scheduler.step(val_loss)
        state.history.append(record)
        improved = not (val_loss >= state.best_val_loss)  # nan (no validation) counts as improved
        if improved:
            state.best_val_loss = val_loss
            state.best_model = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        epoch += 1
        state.epoch = epoch
        state.model = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        state.optimizer = optimizer.state_dict()
        state.scheduler = scheduler.state_dict() if scheduler is not None else None
        state.numpy_rng = rng.bit_generator.state
        state.torch_rng = torch.get_rng_state()
        state.cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        log(
            f"epoch {epoch} (step {state.step}/{max_steps}, {state.seconds:.0f} s): train loss "
            f"{record['train_loss']:.3f}, val loss {val_loss:.3f}{' (best)' if improved else ''}"
        )
        if on_epoch_end is not None:
            on_epoch_end(state)
    return state


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, X: torch.Tensor, Y: torch.Tensor, batch_size: int, amp_dtype: torch.dtype | None = None
) -> float:
    """Mean PSNR loss of ``model`` (in eval mode, no dropout) over ``(X, Y)``."""
    was_training = model.training
    model.eval()
    total = 0.0
    for b in range(0, len(X), batch_size):
        xb = X[b : b + batch_size].contiguous(memory_format=torch.channels_last)
        with torch.autocast(X.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = model(xb)
        total += psnr_loss(pred, Y[b : b + batch_size]).item() * len(xb)
    model.train(was_training)
    return total / len(X)
