"""The synthetic benchmark of Weigert et al. (2017), Table 1: one cell in memory, and the table.

A cell is one random stack of one phantom imaged with one PSF. :func:`run_cell` simulates it
(:func:`isonet.synthetic.make_dataset`), restores it with every method of :data:`METHODS` and
scores each restoration against the phantom (GT) and the phantom seen through the isotropic PSF
(iso-GT), on the isotropic grid covered by the acquisition (planes ``0 .. (Z - 1) * σ``). PSNR is
:func:`isonet.metrics.psnr_affine` (after a least-squares affine intensity fit: the methods
return different intensity units). For the nuclei phantom it also scores segmentations (SEG) of
iso-GT, of the cubic-upsampled input and of every restoration, on the whole volume and on its
interior (:func:`isonet.metrics.interior_label_ids`), all thresholded by one rule
(:func:`segment_volumes`).

Methods:

``cubic``          exact-grid cubic upsampling along z
``rl``             Richardson-Lucy deconvolution of ``cubic`` with ``h``
``srcnn``          IsoNet-1 trained on subsampling alone (delta kernel: the PSF is disregarded)
``isonet1_full``   IsoNet-1, training kernel from ``h_rot``
``isonet1_split``  IsoNet-1, training kernel from ``h_split`` (``h_rot = h_iso * h_split``)
``isonet2_full``   IsoNet-2, ``h_rot``
``isonet2_split``  IsoNet-2, ``h_split``

Every network trains for the same number of optimiser steps (``train_steps``), with the learning
rate and dropout of its architecture chosen by :func:`tune_networks` on a validation stack that
no cell uses. A peer (CSBDeep's IsotropicCARE, ``benchmarks/csbdeep_peer.py``) adds a column from
JSONs of the same shape as a cell's; its output grid is brought onto ours by
:func:`resample_corner_aligned_z`.

This module orchestrates the pure layer only; reading configuration and writing JSON and
markdown files happens in :mod:`isonet.stages.benchmark`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from isonet import psf as psf_models
from isonet.baselines import cubic_upsample, richardson_lucy, subsampling_kernel
from isonet.degrade import upsampled_length
from isonet.errors import InputError
from isonet.metrics import interior_label_ids, psnr_affine, seg_score
from isonet.nets import build_network, halo_for
from isonet.camera import Camera
from isonet.patches import fit_normalization, pairs_from_planes, sample_training_pairs
from isonet.predict import (EDGES, central_slab, iso_shape, prepare_model, resolve_precision, restore_block,
                            restore_volume)
from isonet.segment import SEG_THRESHOLD_RULES, segment_nuclei, threshold_by_rule
from isonet.synthetic import PHANTOM_KINDS, make_dataset
from isonet.train import TrainConfig, fit

METHODS = ("cubic", "rl", "srcnn", "isonet1_full", "isonet1_split", "isonet2_full", "isonet2_split")
#: methods run outside isonet whose per-stack JSONs the table merges (``benchmarks/csbdeep_peer.py``)
PEER_METHODS = ("csbdeep",)
METHOD_LABELS = {
    "cubic": "cubic",
    "rl": "RL",
    "srcnn": "SRCNN",
    "isonet1_full": "IsoNet-1 full",
    "isonet1_split": "IsoNet-1 split",
    "isonet2_full": "IsoNet-2 full",
    "isonet2_split": "IsoNet-2 split",
    "csbdeep": "CSBDeep iso",
}
#: network methods: (architecture, training kernel)
NETWORK_METHODS = {
    "srcnn": ("isonet1", "delta"),
    "isonet1_full": ("isonet1", "full"),
    "isonet1_split": ("isonet1", "split"),
    "isonet2_full": ("isonet2", "full"),
    "isonet2_split": ("isonet2", "split"),
}
ARCHITECTURES = ("isonet1", "isonet2")
REFERENCES = ("iso_gt", "gt")
SEG_SCOPES = ("interior", "whole")
#: stack key of the validation stack that :func:`tune_networks` uses; no table cell has it
VALIDATION_STACK = "validation"


def _default_hyper() -> dict:
    # untuned starting point: the paper's values for IsoNet-2; IsoNet-1's output ReLU dies at 5e-3
    return {"isonet1": {"learning_rate": 1e-3, "dropout": 0.0}, "isonet2": {"learning_rate": 5e-3, "dropout": 0.2}}


@dataclass
class CellSettings:
    """Everything that decides a cell's result besides phantom, PSF and stack index.

    Defaults are the quick setting (128³ phantoms: 32 acquired planes at σ = 4);
    config/benchmark.yaml documents both sizes.
    """

    shape: tuple[int, int, int] = (128, 128, 128)
    subsample: int | float = 4  # σ, need not be an integer
    photons: float = 200.0
    read_noise: float = 2.0
    offset: float = 100.0
    rl_iterations: int = 10
    n_patches: int = 1024
    patch_size: int = 64
    foreground_percentile: float = 90.0
    foreground_fraction: float = 0.8
    norm_percentiles: tuple[float, float] = (1.0, 99.8)
    #: optimiser steps of every network (the same budget for every IsoNet variant and SRCNN;
    #: the last epoch may end part-way, and the steps taken are recorded)
    train_steps: int = 400
    batch_size: int = 16
    #: learning-rate schedule after the warm-up (``TrainConfig.schedule``): ``plateau`` keeps
    #: the rate constant, ``cosine`` anneals it to 0 over ``train_steps`` (the workflow's default)
    schedule: str = "plateau"
    warmup_steps: int = 100
    #: self-supervised rounds of the IsoNet variants (the workflow's ``train.rounds``): each after
    #: the first fine-tunes for ``refine_steps`` on pairs from ``refine_planes`` restored central planes
    rounds: int = 1
    refine_steps: int = 200
    refine_planes: int = 96
    validation_fraction: float = 0.1
    #: learning rate and dropout per architecture; the output of :func:`tune_networks`
    hyper: dict = field(default_factory=_default_hyper)
    #: add the acquisition's camera noise to the training inputs on the acquired samples (:class:`isonet.patches.TrainingPairs`)
    training_noise: bool = True
    #: the one threshold rule of every segmentation in a cell (see :func:`segment_volumes`)
    seg_threshold: str = "intermodes"
    #: interior SEG counts nuclei whose GT centroid is at least this many isotropic planes from
    #: both z-ends of the scored grid: one mean nucleus diameter (semi-axes 10-16 voxels)
    seg_z_margin: float = 26.0
    seg_min_distance: int = 5
    seg_min_size: int = 64
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    precision: str = "auto"
    device: str = "cpu"
    #: what the networks' axial slices see past the volume's z and lateral edges when restoring
    #: (:func:`isonet.predict.read_block_windows`): ``clip``, the workflow's rule (``predict.edges``
    #: and the later rounds' restorations), or ``mirror`` (every table before the twelfth session)
    edges: str = "clip"

    @classmethod
    def from_dict(cls, d: Mapping) -> CellSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown benchmark settings {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        d = dict(d)
        for k in ("shape", "norm_percentiles", "methods"):
            if k in d:
                d[k] = tuple(d[k])
        if "hyper" in d:
            d["hyper"] = {**_default_hyper(), **{a: dict(v) for a, v in dict(d["hyper"]).items()}}
        s = cls(**d)
        bad = [m for m in s.methods if m not in METHODS]
        if bad:
            raise InputError(f"unknown benchmark methods {', '.join(bad)}; valid: {', '.join(METHODS)}")
        if s.seg_threshold not in SEG_THRESHOLD_RULES:
            raise InputError(f"benchmark setting seg_threshold is {s.seg_threshold!r}; "
                             f"valid: {', '.join(SEG_THRESHOLD_RULES)}")
        for arch, hp in s.hyper.items():
            if arch not in ARCHITECTURES or set(hp) != {"learning_rate", "dropout"}:
                raise InputError(f"benchmark setting hyper[{arch!r}] = {hp}; expected one of "
                                 f"{', '.join(ARCHITECTURES)} with exactly learning_rate and dropout")
        if s.edges not in EDGES:
            raise InputError(f"benchmark setting edges is {s.edges!r}; valid: {', '.join(EDGES)}")
        if s.schedule not in ("plateau", "cosine"):
            raise InputError(f"benchmark setting schedule is {s.schedule!r}; valid: plateau, cosine")
        if int(s.train_steps) < 1:
            raise InputError(f"benchmark setting train_steps must be >= 1, got {s.train_steps}")
        if int(s.rounds) < 1 or int(s.refine_steps) < 1 or int(s.refine_planes) < 8:
            raise InputError(f"benchmark settings rounds {s.rounds}, refine_steps {s.refine_steps}, refine_planes "
                             f"{s.refine_planes}: give rounds >= 1, refine_steps >= 1, refine_planes >= 8")
        return s

    def to_dict(self) -> dict:
        """JSON-ready copy (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def training_kernels(h: np.ndarray) -> dict[str, np.ndarray]:
    """The 2D training kernels (axial profile along x, the last axis) for a PSF ``h`` (zyx).

    ``full``: :func:`isonet.psf.lateral_plane_kernel` of ``h_rot``; ``split``: of ``h_split``
    with ``h_rot = h_iso * h_split``; ``delta``: :func:`isonet.baselines.subsampling_kernel`.
    """
    h_rot = psf_models.rotate_psf_to_lateral(h)
    h_iso = psf_models.isotropic_psf(h)
    return {
        "full": psf_models.lateral_plane_kernel(h_rot),
        "split": psf_models.lateral_plane_kernel(psf_models.split_psf(h_rot, h_iso)),
        "delta": subsampling_kernel(),
    }


def stack_seed(phantom: str, psf_name: str, stack: int | str, seed: int = 0) -> int:
    """Seed of a cell's random stack: distinct per (phantom, PSF, stack), stable across runs.

    ``stack`` is the table's stack index, or :data:`VALIDATION_STACK` for the tuning stack.
    """
    key = f"{phantom}/{psf_name}/{stack}/{seed}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def train_and_restore(
    acquired: np.ndarray,
    kernel: np.ndarray,
    architecture: str,
    s: CellSettings,
    seed: int,
    log: Callable[[str], None] = print,
    hyper: Mapping | None = None,
) -> tuple[np.ndarray, dict]:
    """Self-supervised IsoNet on one stack: patches from its lateral planes, train, restore.

    Trains for ``s.train_steps`` optimiser steps with the learning
    rate and dropout of ``hyper`` (default ``s.hyper[architecture]``); the best validation epoch
    restores the stack. Returns the restored volume (isotropic grid, acquisition units) and
    training facts (the hyperparameters and steps used, times, validation PSNRs).
    """
    hp = dict(hyper or s.hyper[architecture])
    norm = fit_normalization(acquired, *s.norm_percentiles)
    planes = [norm.apply(p) for p in acquired]
    threshold = float(np.percentile(np.stack(planes), s.foreground_percentile))
    camera = Camera(1.0, s.offset, s.read_noise, "synthetic") if s.training_noise else None
    pairs = sample_training_pairs(
        planes, kernel, s.subsample, s.n_patches, s.patch_size, threshold, s.foreground_fraction, seed=seed,
        camera=camera, norm=norm,
    )
    flips = psf_models.commuting_flips(kernel) if kernel.size > 1 else (0, 1)
    config = TrainConfig(
        steps=int(s.train_steps), batch_size=s.batch_size, learning_rate=float(hp["learning_rate"]),
        validation_fraction=s.validation_fraction, flip_axes=flips, seed=seed, device=s.device,
        precision=s.precision, schedule=s.schedule, warmup_steps=int(s.warmup_steps),
    )
    net = build_network(architecture, dropout=float(hp["dropout"]), seed=seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    state = fit(net, pairs, pairs.targets, config, log=lambda m: None)
    net.load_state_dict(state.best_model)
    device = torch.device(s.device)
    first_val_psnr, steps, epochs = -float(state.history[0]["val_loss"]), int(state.step), int(state.epoch)
    for _ in range(2, int(s.rounds) + 1 if kernel.size > 1 else 2):  # not SRCNN (the delta kernel): a baseline
        state = refine_round(net, acquired, kernel, norm, camera, config, s, seed, device)
        steps, epochs = steps + int(state.step), epochs + int(state.epoch)
    t_train, cpu_train = time.perf_counter() - t0, time.process_time() - cpu0
    net = prepare_model(net, device)
    t0 = time.perf_counter()
    restored = restore_volume(net, acquired, s.subsample, norm, halo_for(net), device=device,
                              precision=resolve_precision(s.precision, device), edges=s.edges)
    t_predict = time.perf_counter() - t0
    info = {
        "learning_rate": float(hp["learning_rate"]),
        "dropout": float(hp["dropout"]),
        "steps": steps,
        "epochs": epochs,
        "best_val_psnr": -float(state.best_val_loss),
        "first_val_psnr": first_val_psnr,
        "train_s": round(t_train, 1),
        "train_cpu_s": round(cpu_train, 1),
        "predict_s": round(t_predict, 1),
    }
    log(f"{architecture} lr {hp['learning_rate']:g} dropout {hp['dropout']:g}, {steps} steps: val PSNR "
        f"{info['first_val_psnr']:.2f} -> {info['best_val_psnr']:.2f} dB, train {t_train:.0f} s, "
        f"predict {t_predict:.0f} s")
    return restored, info


def refine_round(net, acquired: np.ndarray, kernel: np.ndarray, norm, camera, config: TrainConfig, s: CellSettings,
                 seed: int, device):
    """One more self-supervised round (the workflow's ``train.rounds``): fine-tune ``net`` in place.

    The ``s.refine_planes`` central planes of ``acquired`` are restored by ``net``; it trains for
    ``s.refine_steps`` steps on pairs from those restored lateral planes (same kernel, camera,
    patch settings; validation on held-out planes) and keeps its best weights. Returns the state.
    """
    net = prepare_model(net, device)
    ranges = central_slab(iso_shape(acquired.shape, s.subsample), s.refine_planes, 2**24,
                          int(getattr(net, "size_multiple", 1)), min_side=s.patch_size + math.ceil(s.subsample))
    planes = norm.apply(restore_block(net, acquired, s.subsample, ranges, norm, halo_for(net), device=device,
                                      precision=resolve_precision(s.precision, device), edges=s.edges))
    pairs, validation, _ = pairs_from_planes(planes, kernel, s.subsample, s.n_patches, s.patch_size,
                                             s.foreground_percentile, s.foreground_fraction, s.validation_fraction,
                                             seed, camera, norm)
    state = fit(net, pairs, pairs.targets, replace(config, steps=int(s.refine_steps)), log=lambda m: None,
                validation=validation)
    net.load_state_dict(state.best_model)
    return state


@dataclass
class Stack:
    """One simulated stack and its references on the isotropic grid the acquisition covers."""

    acquired: np.ndarray
    references: dict
    labels: np.ndarray | None
    psf: np.ndarray
    kernels: dict
    seed: int
    n_iso: int


def simulate_stack(phantom: str, psf_kind: str, psf_params: Mapping, seed: int, s: CellSettings) -> Stack:
    """Phantom, PSF, simulated acquisition, references and training kernels of one stack."""
    if phantom not in PHANTOM_KINDS:
        raise InputError(f"unknown phantom {phantom!r}; valid: {', '.join(PHANTOM_KINDS)}")
    h = psf_models.make_psf(psf_kind, **dict(psf_params))
    ds = make_dataset(phantom, s.shape, h, psf_models.isotropic_psf(h), s.subsample, seed=seed,
                      photons=s.photons, read_noise=s.read_noise, offset=s.offset)
    acquired = ds.acquired.astype(np.float32)
    n_iso = upsampled_length(acquired.shape[0], s.subsample)
    labels = ds.labels[:n_iso] if (ds.labels is not None and phantom == "nuclei") else None
    return Stack(acquired, {"iso_gt": ds.iso_gt[:n_iso], "gt": ds.gt[:n_iso]}, labels, h, training_kernels(h),
                 seed, int(n_iso))


# --------------------------------------------------------------------------------------------
# segmentation: one threshold rule per cell, SEG on the whole volume and on its interior
# --------------------------------------------------------------------------------------------


def segment_volumes(
    volumes: Mapping[str, np.ndarray], rule: str = "intermodes", min_distance: int = 5, min_size: int = 64
) -> tuple[dict[str, np.ndarray], dict]:
    """Segment several restorations of one stack, every one thresholded by the same rule.

    Each volume gets its own threshold value, but all by ``rule``
    (:func:`isonet.segment.threshold_by_rule`). Where ``rule`` is ``"intermodes"`` and the
    histogram of any volume has no two modes, Intermodes is undefined there and *every* volume
    is thresholded by Otsu's rule instead; the returned record says so and why. So two methods
    of one cell are never thresholded by different rules.

    Parameters
    ----------
    volumes : mapping of name to ndarray (z, y, x)
    rule : {"intermodes", "otsu"}
    min_distance, min_size
        As for :func:`isonet.segment.segment_nuclei`.

    Returns
    -------
    labels : dict of name to int32 label volume
    threshold : dict
        ``rule`` (the rule used), ``requested``, ``reason`` (why it differs, else None) and
        ``values`` (each volume's threshold).
    """
    if rule not in SEG_THRESHOLD_RULES:
        raise InputError(f"segmentation threshold rule {rule!r}; valid: {', '.join(SEG_THRESHOLD_RULES)}")
    used, reason, values = rule, None, {}
    for name, vol in volumes.items():
        try:
            values[name] = threshold_by_rule(vol, used)
        except InputError:
            if used != "intermodes":
                raise
            used, reason = "otsu", f"intermodes undefined for {name} (histogram not bimodal)"
            break
    if used != rule:
        values = {name: threshold_by_rule(vol, used) for name, vol in volumes.items()}
    labels = {name: segment_nuclei(vol, threshold=values[name], min_distance=min_distance, min_size=min_size)
              for name, vol in volumes.items()}
    return labels, {"rule": used, "requested": rule, "reason": reason, "values": values}


def seg_whole_and_interior(gt_labels: np.ndarray, pred_labels: np.ndarray, z_margin: float) -> dict[str, float]:
    """SEG on the whole volume and on its interior (GT objects whose centroid is ``z_margin`` from the z-ends).

    Examples
    --------
    >>> gt = np.zeros((40, 4, 4), np.int32); gt[0:4], gt[18:22] = 1, 2   # centroids z 1.5 and 19.5
    >>> pred = gt.copy(); pred[0:4] = 0                                   # object 1 missed
    >>> seg_whole_and_interior(gt, pred, z_margin=10)
    {'whole': 0.5, 'interior': 1.0}
    """
    seg, ids, per_object = seg_score(gt_labels, pred_labels, return_per_object=True)
    inside = np.isin(ids, interior_label_ids(gt_labels, z_margin))
    return {"whole": float(seg), "interior": float(per_object[inside].mean()) if inside.any() else float("nan")}


def score_segmentations(
    labels: np.ndarray, volumes: Mapping[str, np.ndarray], s: CellSettings, rule: str | None = None
) -> dict:
    """SEG (whole and interior) of every volume against the GT ``labels``, one threshold rule.

    Returns ``{"seg": {"whole": {name: SEG}, "interior": {...}}, "threshold": ..., "objects":
    {"whole": n, "interior": n}, "z_margin": ...}`` (threshold as in :func:`segment_volumes`).
    """
    pred, threshold = segment_volumes(volumes, rule or s.seg_threshold, s.seg_min_distance, s.seg_min_size)
    seg = {scope: {} for scope in SEG_SCOPES}
    for name, p in pred.items():
        for scope, v in seg_whole_and_interior(labels, p, s.seg_z_margin).items():
            seg[scope][name] = v
    n_whole = int(len(np.unique(labels[labels > 0])))
    return {"seg": seg, "threshold": threshold, "z_margin": float(s.seg_z_margin),
            "objects": {"whole": n_whole, "interior": int(len(interior_label_ids(labels, s.seg_z_margin)))}}


# --------------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------------


def run_cell(
    phantom: str,
    psf_name: str,
    psf_kind: str,
    psf_params: Mapping,
    stack: int,
    settings: CellSettings | Mapping | None = None,
    log: Callable[[str], None] = print,
    return_stack: bool = False,
):
    """Simulate one stack and score every method on it.

    Parameters
    ----------
    phantom : {"nuclei", "membranes", "both"}
    psf_name : str
        Name of the PSF in the table (e.g. ``"confocal"``); part of the stack's seed.
    psf_kind, psf_params
        As for :func:`isonet.psf.make_psf` (physical models need ``shape`` and ``voxel_size_um``).
    stack : int
        Index of the random stack (its seed derives from phantom, PSF, stack and settings.seed).
    settings : CellSettings or mapping
    return_stack : bool
        Also return the simulated :class:`Stack` (for a peer run on the same data).

    Returns
    -------
    result : dict (JSON-serialisable)
        ``psnr[reference][method]`` in dB for references ``iso_gt`` and ``gt``; for the nuclei
        phantom ``seg[scope][name]`` for scopes ``whole`` and ``interior`` and names ``iso_gt``,
        ``input`` and every method, ``gap_closed[scope][method]``, ``seg_threshold`` (the one
        rule used, see :func:`segment_volumes`), ``seg_objects`` and ``seg_z_margin``;
        ``timing`` in seconds; the settings, PSF FWHMs and training facts.
    stack : Stack
        Only with ``return_stack=True``.
    """
    s = settings if isinstance(settings, CellSettings) else CellSettings.from_dict(settings or {})
    if isinstance(stack, bool) or not isinstance(stack, (int, np.integer)) or stack < 0:
        raise InputError(f"benchmark stack must be an index >= 0, got {stack!r}")
    t_cell, cpu_cell = time.perf_counter(), time.process_time()
    timing: dict[str, float] = {}
    seed = stack_seed(phantom, psf_name, int(stack), s.seed)
    t0 = time.perf_counter()
    st = simulate_stack(phantom, psf_kind, psf_params, seed, s)
    timing["simulate"] = time.perf_counter() - t0
    log(f"{phantom}/{psf_name}/{stack}: acquired {st.acquired.shape}, isotropic grid {st.n_iso} planes, seed {seed}")

    outputs: dict[str, np.ndarray] = {}
    training: dict[str, dict] = {}
    cubic = cubic_upsample(st.acquired, s.subsample)
    for method in s.methods:
        t0 = time.perf_counter()
        if method == "cubic":
            outputs[method] = cubic
        elif method == "rl":
            outputs[method] = richardson_lucy(cubic, st.psf, s.rl_iterations, background=s.offset)
        else:
            arch, kernel_name = NETWORK_METHODS[method]
            outputs[method], training[method] = train_and_restore(
                st.acquired, st.kernels[kernel_name], arch, s, seed, log=lambda m, p=method: log(f"  {p}: {m}")
            )
        timing[method] = time.perf_counter() - t0

    psnr = {ref: {m: psnr_affine(outputs[m], r) for m in outputs} for ref, r in st.references.items()}
    for ref in REFERENCES:
        log(f"  PSNR vs {ref}: " + ", ".join(f"{m} {v:.2f}" for m, v in psnr[ref].items()))

    result_seg = {}
    if st.labels is not None:
        t0 = time.perf_counter()
        volumes = {"iso_gt": st.references["iso_gt"], "input": cubic,
                   **{m: v for m, v in outputs.items() if m != "cubic"}}
        scored = score_segmentations(st.labels, volumes, s)
        seg = scored["seg"]
        result_seg = {
            "seg": seg,
            "gap_closed": {scope: {m: gap_closed(v, seg[scope]["input"], seg[scope]["iso_gt"])
                                   for m, v in seg[scope].items() if m not in ("iso_gt", "input")}
                           for scope in SEG_SCOPES},
            "seg_threshold": scored["threshold"],
            "seg_objects": scored["objects"],
            "seg_z_margin": scored["z_margin"],
        }
        timing["segment"] = time.perf_counter() - t0
        for scope in SEG_SCOPES:
            log(f"  SEG {scope} ({scored['objects'][scope]} nuclei, {scored['threshold']['rule']}): "
                + ", ".join(f"{k} {v:.3f}" for k, v in seg[scope].items()))
    timing["total"] = time.perf_counter() - t_cell
    # CPU seconds of this process: on a machine shared with other work, wall time overstates cost
    timing["cpu_total"] = time.process_time() - cpu_cell

    fw = psf_models.psf_fwhm(st.psf)
    result = {
        "phantom": phantom,
        "psf": psf_name,
        "psf_kind": psf_kind,
        "psf_params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(psf_params).items()},
        "psf_fwhm_voxels": dict(zip("zyx", map(float, fw))),
        "stack": int(stack),
        "seed": seed,
        "n_iso_planes": int(st.n_iso),
        "acquired_shape": list(st.acquired.shape),
        "settings": s.to_dict(),
        "psnr": psnr,
        "seg": None,
        **result_seg,
        "training": training,
        "timing": {k: round(v, 1) for k, v in timing.items()},
    }
    return (result, st) if return_stack else result


def tune_networks(
    phantom: str,
    psf_name: str,
    psf_kind: str,
    psf_params: Mapping,
    grid: Mapping[str, Sequence[float]],
    settings: CellSettings | Mapping | None = None,
    kernel: str = "full",
    reference: str = "gt",
    architectures: Sequence[str] = ARCHITECTURES,
    log: Callable[[str], None] = print,
) -> dict:
    """Choose each architecture's learning rate and dropout on a validation stack, by one search.

    Every architecture trains on the same validation stack (:data:`VALIDATION_STACK`: a seed no
    table cell has) with every combination of ``grid["learning_rate"]`` × ``grid["dropout"]``,
    for the same ``train_steps``; the combination with the highest PSNR of the restoration
    against ``reference`` wins. The step budget is not searched: it is what every variant gets.

    Returns
    -------
    tuned : dict (JSON-serialisable)
        ``chosen[architecture] = {"learning_rate", "dropout"}`` (ready for
        ``CellSettings.hyper``), every ``trials`` entry with its PSNRs and training facts, and
        the stack, grid and settings used.
    """
    s = settings if isinstance(settings, CellSettings) else CellSettings.from_dict(settings or {})
    missing = {"learning_rate", "dropout"} - set(grid)
    if missing or set(grid) - {"learning_rate", "dropout"}:
        raise InputError(f"benchmark tune grid has keys {sorted(grid)}; expected learning_rate and dropout lists")
    if reference not in REFERENCES:
        raise InputError(f"benchmark tune reference {reference!r}; valid: {', '.join(REFERENCES)}")
    seed = stack_seed(phantom, psf_name, VALIDATION_STACK, s.seed)
    st = simulate_stack(phantom, psf_kind, psf_params, seed, s)
    t_all = time.perf_counter()
    trials = []
    for arch in architectures:
        for lr, dropout in itertools.product(grid["learning_rate"], grid["dropout"]):
            hp = {"learning_rate": float(lr), "dropout": float(dropout)}
            restored, info = train_and_restore(st.acquired, st.kernels[kernel], arch, s, seed,
                                               log=lambda m, a=arch: log(f"  tune {a}: {m}"), hyper=hp)
            psnr = {ref: psnr_affine(restored, r) for ref, r in st.references.items()}
            trials.append({"architecture": arch, **hp, "psnr": psnr, **{k: info[k] for k in
                           ("steps", "best_val_psnr", "train_s")}})
            log(f"tune {arch} lr {lr:g} dropout {dropout:g}: PSNR vs {reference} {psnr[reference]:.2f} dB")
    chosen = {}
    for arch in architectures:
        best = max((t for t in trials if t["architecture"] == arch), key=lambda t: t["psnr"][reference])
        chosen[arch] = {"learning_rate": best["learning_rate"], "dropout": best["dropout"]}
    return {
        "phantom": phantom, "psf": psf_name, "stack": VALIDATION_STACK, "seed": seed, "kernel": kernel,
        "reference": reference, "grid": {k: [float(v) for v in grid[k]] for k in ("learning_rate", "dropout")},
        "chosen": chosen, "trials": trials, "settings": s.to_dict(),
        "seconds": round(time.perf_counter() - t_all, 1),
    }


def resample_corner_aligned_z(volume: np.ndarray, n_acquired: int, factor) -> np.ndarray:
    """Bring a volume upsampled corner to corner along z onto isonet's isotropic grid.

    ``scipy.ndimage.zoom`` (as CSBDeep's isotropic prediction uses it) spreads ``n_out`` output
    planes over the acquired planes corner to corner: output plane ``i`` lies at acquired
    coordinate ``i (n_acq - 1) / (n_out - 1)``. isonet puts acquired plane ``k`` on isotropic
    plane ``k σ``, i.e. isotropic plane ``j`` at acquired coordinate ``j / σ``, for
    ``j = 0 .. floor((n_acq - 1) σ)``. This interpolates ``volume`` linearly along z at those positions.

    Parameters
    ----------
    volume : ndarray (n_out, y, x)
        The other method's output, ``n_out >= 2`` planes spanning the acquired planes.
    n_acquired : int
        Number of acquired planes (>= 2).
    factor : int or float
        Axial subsampling factor σ >= 1, not necessarily an integer.

    Returns
    -------
    ndarray (floor((n_acquired - 1) * factor) + 1, y, x), float32

    Examples
    --------
    >>> ramp = np.linspace(0.0, 3.0, 12).reshape(12, 1, 1)  # 4 planes zoomed x3, corner-aligned
    >>> [round(float(v), 4) for v in resample_corner_aligned_z(ramp, 4, 3).ravel()]
    [0.0, 0.3333, 0.6667, 1.0, 1.3333, 1.6667, 2.0, 2.3333, 2.6667, 3.0]
    """
    volume = np.asarray(volume)
    n_out, n_acquired = volume.shape[0], int(n_acquired)
    if n_acquired < 2 or not factor >= 1 or n_out < 2:
        raise InputError(f"z-grid alignment needs >= 2 acquired and output planes and factor >= 1, "
                         f"got {n_acquired}, {n_out} and {factor}")
    n_iso = upsampled_length(n_acquired, factor)
    position = np.arange(n_iso, dtype=np.float64) / factor * (n_out - 1) / (n_acquired - 1)
    lo = np.clip(np.floor(position).astype(np.int64), 0, n_out - 2)
    w = (position - lo).astype(np.float32).reshape(-1, *([1] * (volume.ndim - 1)))
    v = volume.astype(np.float32, copy=False)
    return (v[lo] * (1 - w) + v[lo + 1] * w).astype(np.float32)


# --------------------------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------------------------


def gap_closed(seg_restored: float, seg_input: float, seg_iso_gt: float) -> float | None:
    """Fraction of the SEG gap between input and iso-GT that a restoration closes.

    ``(SEG_restored - SEG_input) / (SEG_isoGT - SEG_input)``; None where there is no gap.

    Examples
    --------
    >>> gap_closed(0.8, 0.6, 0.85)
    0.8
    """
    gap = seg_iso_gt - seg_input
    if not gap > 0:
        return None
    return round((seg_restored - seg_input) / gap, 10)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def format_mean_std(mean: float, std: float, digits: int = 2, bold: bool = False) -> str:
    """``mean (std)`` with ``digits`` decimals, in bold when asked.

    Examples
    --------
    >>> format_mean_std(27.1234, 0.456), format_mean_std(30, 0.1, bold=True)
    ('27.12 (0.46)', '**30.00** (0.10)')
    """
    m = f"{mean:.{digits}f}"
    return f"{'**' + m + '**' if bold else m} ({std:.{digits}f})"


def summarise(records: Sequence[Mapping]) -> dict:
    """Group cell and peer results by (phantom, PSF).

    Per group: the table's ``stacks`` (from isonet cells), per reference and method the list of
    PSNRs, per SEG scope and name the list of SEGs, per method the stacks it has values for,
    GT object counts per scope, and the threshold rules used (``"rule"`` -> list of
    ``stack/method-or-cell`` keys).
    """
    groups: dict = {}
    for c in records:
        g = groups.setdefault((c["phantom"], c["psf"]), {
            "stacks": [], "psnr": {}, "seg": {}, "method_stacks": {}, "objects": {}, "rules": {}})
        peer = c.get("peer")
        if not peer:
            g["stacks"].append(c["stack"])
        for ref, row in c["psnr"].items():
            for m, v in row.items():
                g["psnr"].setdefault(ref, {}).setdefault(m, []).append(float(v))
                stacks = g["method_stacks"].setdefault(m, [])
                if c["stack"] not in stacks:
                    stacks.append(c["stack"])
        for scope, row in (c.get("seg") or {}).items():
            if not isinstance(row, Mapping):
                raise InputError(f"benchmark result {c['phantom']}/{c['psf']}/{c['stack']} has SEG in an old format "
                                 "(no whole/interior scopes); rerun its cell")
            for k, v in row.items():
                g["seg"].setdefault(scope, {}).setdefault(k, []).append(float(v))
        if not peer:
            for scope, n in (c.get("seg_objects") or {}).items():
                g["objects"].setdefault(scope, []).append(int(n))
        if c.get("seg_threshold"):
            g["rules"].setdefault(c["seg_threshold"]["rule"], []).append(f"{c['stack']}/{peer or 'cell'}")
    return groups


def table_markdown(records: Sequence[Mapping], methods: Sequence[str] = METHODS + PEER_METHODS,
                   notes: str = "") -> str:
    """Markdown Table 1: PSNR mean (std) per (phantom, PSF) and method, best in bold; then SEG.

    ``records`` are cell results (:func:`run_cell`) and peer results (same keys, plus ``peer``:
    the peer's method name; ``benchmarks/csbdeep_peer.py``). One PSNR table per reference
    (iso-GT, GT); a row per (phantom, PSF) cell, a column per method; ``n`` counts the cell's
    stacks, and a method with fewer says ``[n=k]``. The best mean of a row is bold (ties all
    bold). Then, for the nuclei phantom, one SEG table per scope (interior, whole): SEG of iso-GT,
    of the cubic-upsampled input and of every other method, each with the fraction of the
    input-to-iso-GT gap it closes (from the means), and the threshold rule(s) used.
    """
    if not records:
        raise InputError("no benchmark cells to tabulate")
    groups = summarise(records)
    psf_order = []
    for c in records:
        if c["psf"] not in psf_order:
            psf_order.append(c["psf"])
    order = sorted(groups, key=lambda k: (_index(PHANTOM_KINDS, k[0]), _index(psf_order, k[1])))
    lines = []

    def n_note(key, m):
        n, k = len(groups[key]["stacks"]), len(groups[key]["method_stacks"].get(m, []))
        return "" if k == n else f" [n={k}]"

    for ref, title in (("iso_gt", "iso-GT"), ("gt", "GT")):
        present = [m for m in methods if any(m in groups[k]["psnr"].get(ref, {}) for k in order)]
        if not present:
            continue
        lines += [f"### PSNR (dB) against {title}", "",
                  "| phantom | PSF | n | " + " | ".join(METHOD_LABELS.get(m, m) for m in present) + " |",
                  "|---|---|---|" + "---|" * len(present)]
        for key in order:
            row = groups[key]["psnr"].get(ref, {})
            stats = {m: _mean_std(row[m]) for m in present if m in row}
            best = max(v[0] for v in stats.values())
            cells_md = [format_mean_std(*stats[m], bold=math.isclose(stats[m][0], best, abs_tol=5e-3)) + n_note(key, m)
                        if m in stats else "–" for m in present]
            n = len(groups[key]["stacks"])
            lines.append(f"| {key[0]} | {key[1]} | {n} | " + " | ".join(cells_md) + " |")
        lines.append("")

    seg_keys = [k for k in order if groups[k]["seg"]]
    titles = {"interior": "interior nuclei (GT centroid at least the z margin from both z-ends)",
              "whole": "all nuclei of the scored volume"}
    for scope in SEG_SCOPES:
        keys = [k for k in seg_keys if scope in groups[k]["seg"]]
        if not keys:
            continue
        shown = [m for m in methods if m != "cubic" and any(m in groups[k]["seg"][scope] for k in keys)]
        lines += [f"### Segmentation of the nuclei phantom, {titles[scope]} (SEG, ISBI 2013)", "",
                  "SEG mean (std) · % of the input-to-iso-GT SEG gap closed (from the means).", "",
                  "| phantom | PSF | n | nuclei | iso-GT | input (cubic) | "
                  + " | ".join(METHOD_LABELS.get(m, m) for m in shown) + " |",
                  "|---|---|---|---|---|---|" + "---|" * len(shown)]
        for key in keys:
            seg = groups[key]["seg"][scope]
            iso, inp = _mean_std(seg["iso_gt"]), _mean_std(seg["input"])
            row = [format_mean_std(*iso, digits=3), format_mean_std(*inp, digits=3)]
            for m in shown:
                if m not in seg:
                    row.append("–")
                    continue
                r = _mean_std(seg[m])
                g = gap_closed(r[0], inp[0], iso[0])
                row.append(format_mean_std(*r, digits=3) + (" · –" if g is None else f" · {100 * g:.0f} %")
                           + n_note(key, m))
            objects = sum(groups[key]["objects"].get(scope, []))
            lines.append(f"| {key[0]} | {key[1]} | {len(groups[key]['stacks'])} | {objects} | " + " | ".join(row) + " |")
        lines.append("")
    if seg_keys:
        lines += [threshold_rule_summary(groups, seg_keys), ""]
    if notes:
        lines += [notes.rstrip(), ""]
    return "\n".join(lines)


def threshold_rule_summary(groups: Mapping, keys: Sequence) -> str:
    """One line: the segmentation threshold rule(s) used, and where a cell deviated."""
    rules: dict[str, list[str]] = {}
    for key in keys:
        for rule, where in groups[key]["rules"].items():
            rules.setdefault(rule, []).extend(f"{key[0]}/{key[1]}/{w}" for w in where)
    if len(rules) == 1:
        (rule, where), = rules.items()
        return (f"Threshold rule: {rule} for every segmentation of every stack ({len(where)} results), "
                f"each volume at its own {rule} threshold.")
    common = max(rules, key=lambda r: len(rules[r]))
    others = "; ".join(f"{r} in {', '.join(w)}" for r, w in rules.items() if r != common)
    return (f"Threshold rule: {common} in {len(rules[common])} results; {others} (there every method of "
            "the stack used that rule: intermodes was undefined on one of its volumes).")


def _index(seq, item) -> int:
    seq = list(seq)
    return seq.index(item) if item in seq else len(seq)
