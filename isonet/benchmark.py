"""The synthetic benchmark of Weigert et al. (2017), Table 1: one cell in memory, and the table.

A cell is one random stack of one phantom imaged with one PSF. :func:`run_cell` simulates it
(:func:`isonet.synthetic.make_dataset`), restores it with every method of :data:`METHODS` and
scores each restoration against the phantom (GT) and the phantom seen through the isotropic PSF
(iso-GT), on the isotropic grid covered by the acquisition (planes ``0 .. (Z - 1) * σ``). PSNR is
:func:`isonet.metrics.psnr_affine` (after a least-squares affine intensity fit: the methods
return different intensity units). For the nuclei phantom it also scores segmentations (SEG) of
iso-GT, of the cubic-upsampled input and of every restoration.

Methods:

``cubic``          exact-grid cubic upsampling along z
``rl``             Richardson-Lucy deconvolution of ``cubic`` with ``h``
``srcnn``          IsoNet-1 trained on subsampling alone (delta kernel: the PSF is disregarded)
``isonet1_full``   IsoNet-1, training kernel from ``h_rot``
``isonet1_split``  IsoNet-1, training kernel from ``h_split`` (``h_rot = h_iso * h_split``)
``isonet2_full``   IsoNet-2, ``h_rot``
``isonet2_split``  IsoNet-2, ``h_split``

This module orchestrates the pure layer only; reading configuration and writing JSON and
markdown files happens in :mod:`isonet.stages.benchmark`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from isonet import psf as psf_models
from isonet.baselines import cubic_upsample, richardson_lucy, subsampling_kernel
from isonet.degrade import upsampled_length
from isonet.errors import InputError
from isonet.metrics import psnr_affine, seg_score
from isonet.nets import build_network, halo_for
from isonet.camera import Camera
from isonet.patches import fit_normalization, sample_training_pairs
from isonet.predict import prepare_model, resolve_precision, restore_volume
from isonet.segment import segment_nuclei
from isonet.synthetic import PHANTOM_KINDS, make_dataset
from isonet.train import TrainConfig, fit

METHODS = ("cubic", "rl", "srcnn", "isonet1_full", "isonet1_split", "isonet2_full", "isonet2_split")
METHOD_LABELS = {
    "cubic": "cubic",
    "rl": "RL",
    "srcnn": "SRCNN",
    "isonet1_full": "IsoNet-1 full",
    "isonet1_split": "IsoNet-1 split",
    "isonet2_full": "IsoNet-2 full",
    "isonet2_split": "IsoNet-2 split",
}
#: network methods: (architecture, training kernel)
NETWORK_METHODS = {
    "srcnn": ("isonet1", "delta"),
    "isonet1_full": ("isonet1", "full"),
    "isonet1_split": ("isonet1", "split"),
    "isonet2_full": ("isonet2", "full"),
    "isonet2_split": ("isonet2", "split"),
}
REFERENCES = ("iso_gt", "gt")


@dataclass
class CellSettings:
    """Everything that decides a cell's result besides phantom, PSF and stack index.

    Defaults are the quick setting (64x128x128 phantoms); config/benchmark.yaml documents the
    full-size one.
    """

    shape: tuple[int, int, int] = (64, 128, 128)
    subsample: int = 4
    photons: float = 200.0
    read_noise: float = 2.0
    offset: float = 100.0
    rl_iterations: int = 10
    n_patches: int = 1024
    patch_size: int = 64
    foreground_percentile: float = 90.0
    foreground_fraction: float = 0.8
    norm_percentiles: tuple[float, float] = (1.0, 99.8)
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 5e-3
    validation_fraction: float = 0.1
    dropout: float = 0.2
    #: IsoNet-1 / SRCNN settings; None = as for IsoNet-2 (at 5e-3 IsoNet-1's output ReLU can die)
    isonet1_learning_rate: float | None = 1e-3
    isonet1_dropout: float | None = 0.0
    #: put the simulated camera's noise on the acquired samples of the training inputs
    training_noise: bool = True
    seg_min_distance: int = 5
    seg_min_size: int = 64
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    precision: str = "auto"
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

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
        s = cls(**d)
        bad = [m for m in s.methods if m not in METHODS]
        if bad:
            raise InputError(f"unknown benchmark methods {', '.join(bad)}; valid: {', '.join(METHODS)}")
        return s


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


def stack_seed(phantom: str, psf_name: str, stack: int, seed: int = 0) -> int:
    """Seed of a cell's random stack: distinct per (phantom, PSF, stack), stable across runs."""
    key = f"{phantom}/{psf_name}/{stack}/{seed}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def train_and_restore(
    acquired: np.ndarray,
    kernel: np.ndarray,
    architecture: str,
    s: CellSettings,
    seed: int,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, dict]:
    """Self-supervised IsoNet on one stack: patches from its lateral planes, train, restore.

    Returns the restored volume (isotropic grid, acquisition units) and training facts.
    """
    norm = fit_normalization(acquired, *s.norm_percentiles)
    planes = [norm.apply(p) for p in acquired]
    threshold = float(np.percentile(np.stack(planes), s.foreground_percentile))
    camera = Camera(1.0, s.offset, s.read_noise, "synthetic") if s.training_noise else None
    pairs = sample_training_pairs(
        planes, kernel, s.subsample, s.n_patches, s.patch_size, threshold, s.foreground_fraction, seed=seed,
        camera=camera, norm=norm,
    )
    flips = psf_models.commuting_flips(kernel) if kernel.size > 1 else (0, 1)
    lr, dropout = s.learning_rate, s.dropout
    if architecture == "isonet1":
        lr = s.learning_rate if s.isonet1_learning_rate is None else s.isonet1_learning_rate
        dropout = s.dropout if s.isonet1_dropout is None else s.isonet1_dropout
    config = TrainConfig(
        epochs=s.epochs, batch_size=s.batch_size, learning_rate=lr,
        validation_fraction=s.validation_fraction, flip_axes=flips, seed=seed, device=s.device,
        precision=s.precision,
    )
    net = build_network(architecture, dropout=dropout, seed=seed)
    t0 = time.perf_counter()
    state = fit(net, pairs, pairs.targets, config, log=lambda m: None)
    t_train = time.perf_counter() - t0
    net.load_state_dict(state.best_model)
    device = torch.device(s.device)
    net = prepare_model(net, device)
    t0 = time.perf_counter()
    restored = restore_volume(net, acquired, s.subsample, norm, halo_for(net), device=device,
                              precision=resolve_precision(s.precision, device))
    t_predict = time.perf_counter() - t0
    info = {
        "best_val_psnr": -float(state.best_val_loss),
        "first_val_psnr": -float(state.history[0]["val_loss"]),
        "train_s": round(t_train, 1),
        "predict_s": round(t_predict, 1),
    }
    log(f"{architecture}: val PSNR {info['first_val_psnr']:.2f} -> {info['best_val_psnr']:.2f} dB, "
        f"train {t_train:.0f} s, predict {t_predict:.0f} s")
    return restored, info


def run_cell(
    phantom: str,
    psf_name: str,
    psf_kind: str,
    psf_params: Mapping,
    stack: int,
    settings: CellSettings | Mapping | None = None,
    log: Callable[[str], None] = print,
) -> dict:
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

    Returns
    -------
    result : dict (JSON-serialisable)
        ``psnr[reference][method]`` in dB for references ``iso_gt`` and ``gt``; ``seg[...]`` for
        the nuclei phantom (``iso_gt``, ``input`` and every method); ``timing`` in seconds; and
        the settings, PSF FWHMs and training facts.
    """
    s = settings if isinstance(settings, CellSettings) else CellSettings.from_dict(settings or {})
    if phantom not in PHANTOM_KINDS:
        raise InputError(f"unknown phantom {phantom!r}; valid: {', '.join(PHANTOM_KINDS)}")
    t_cell = time.perf_counter()
    timing: dict[str, float] = {}
    h = psf_models.make_psf(psf_kind, **dict(psf_params))
    h_iso = psf_models.isotropic_psf(h)
    kernels = training_kernels(h)
    seed = stack_seed(phantom, psf_name, stack, s.seed)
    t0 = time.perf_counter()
    ds = make_dataset(phantom, s.shape, h, h_iso, s.subsample, seed=seed, photons=s.photons,
                      read_noise=s.read_noise, offset=s.offset)
    timing["simulate"] = time.perf_counter() - t0
    acquired = ds.acquired.astype(np.float32)
    n_iso = upsampled_length(acquired.shape[0], s.subsample)
    refs = {"iso_gt": ds.iso_gt[:n_iso], "gt": ds.gt[:n_iso]}
    log(f"{phantom}/{psf_name}/{stack}: acquired {acquired.shape}, isotropic grid {n_iso} planes, seed {seed}")

    outputs: dict[str, np.ndarray] = {}
    training: dict[str, dict] = {}
    cubic = cubic_upsample(acquired, s.subsample)
    for method in s.methods:
        t0 = time.perf_counter()
        if method == "cubic":
            outputs[method] = cubic
        elif method == "rl":
            outputs[method] = richardson_lucy(cubic, h, s.rl_iterations, background=s.offset)
        else:
            arch, kernel_name = NETWORK_METHODS[method]
            outputs[method], training[method] = train_and_restore(
                acquired, kernels[kernel_name], arch, s, seed, log=lambda m, p=method: log(f"  {p}: {m}")
            )
        timing[method] = time.perf_counter() - t0

    psnr = {ref: {m: psnr_affine(outputs[m], r) for m in outputs} for ref, r in refs.items()}
    for ref in REFERENCES:
        log(f"  PSNR vs {ref}: " + ", ".join(f"{m} {v:.2f}" for m, v in psnr[ref].items()))

    seg = None
    if ds.labels is not None and phantom == "nuclei":
        t0 = time.perf_counter()
        labels = ds.labels[:n_iso]
        kw = {"min_distance": s.seg_min_distance, "min_size": s.seg_min_size}
        seg = {"iso_gt": seg_score(labels, segment_nuclei(refs["iso_gt"], **kw)),
               "input": seg_score(labels, segment_nuclei(cubic, **kw))}
        for m in outputs:
            if m != "cubic":
                seg[m] = seg_score(labels, segment_nuclei(outputs[m], **kw))
        timing["segment"] = time.perf_counter() - t0
        log("  SEG: " + ", ".join(f"{k} {v:.3f}" for k, v in seg.items()))
    timing["total"] = time.perf_counter() - t_cell

    fw = psf_models.psf_fwhm(h)
    return {
        "phantom": phantom,
        "psf": psf_name,
        "psf_kind": psf_kind,
        "psf_params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(psf_params).items()},
        "psf_fwhm_voxels": dict(zip("zyx", map(float, fw))),
        "stack": int(stack),
        "seed": seed,
        "n_iso_planes": int(n_iso),
        "acquired_shape": list(acquired.shape),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()},
        "psnr": psnr,
        "seg": seg,
        "training": training,
        "timing": {k: round(v, 1) for k, v in timing.items()},
    }


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


def summarise(cells: Sequence[Mapping]) -> dict:
    """Group cell results by (phantom, PSF): per reference and method the list of PSNRs, and SEG."""
    groups: dict = {}
    for c in cells:
        g = groups.setdefault((c["phantom"], c["psf"]), {"stacks": [], "psnr": {}, "seg": {}})
        g["stacks"].append(c["stack"])
        for ref, row in c["psnr"].items():
            for m, v in row.items():
                g["psnr"].setdefault(ref, {}).setdefault(m, []).append(float(v))
        for k, v in (c.get("seg") or {}).items():
            g["seg"].setdefault(k, []).append(float(v))
    return groups


def table_markdown(cells: Sequence[Mapping], methods: Sequence[str] = METHODS, notes: str = "") -> str:
    """Markdown Table 1: PSNR mean (std) per (phantom, PSF) and method, best in bold; then SEG.

    One PSNR table per reference (iso-GT, GT); a row per (phantom, PSF) cell, a column per method.
    The best mean of a row is bold (ties all bold). The SEG table lists, per PSF of the nuclei
    phantom, SEG of iso-GT, of the cubic-upsampled input and of IsoNet-2 (full and split) with the
    fraction of the input-to-iso-GT gap each closes (from the means).
    """
    if not cells:
        raise InputError("no benchmark cells to tabulate")
    groups = summarise(cells)
    psf_order = []
    for c in cells:
        if c["psf"] not in psf_order:
            psf_order.append(c["psf"])
    order = sorted(groups, key=lambda k: (_index(PHANTOM_KINDS, k[0]), _index(psf_order, k[1])))
    lines = []
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
            cells_md = [format_mean_std(*stats[m], bold=math.isclose(stats[m][0], best, abs_tol=5e-3))
                        if m in stats else "–" for m in present]
            n = len(groups[key]["stacks"])
            lines.append(f"| {key[0]} | {key[1]} | {n} | " + " | ".join(cells_md) + " |")
        lines.append("")

    seg_keys = [k for k in order if groups[k]["seg"]]
    if seg_keys:
        shown = [m for m in ("isonet2_full", "isonet2_split") if any(m in groups[k]["seg"] for k in seg_keys)]
        lines += ["### Segmentation of the nuclei phantom (SEG, ISBI 2013)", "",
                  "| phantom | PSF | n | iso-GT | input (cubic) | "
                  + " | ".join(f"{METHOD_LABELS[m]} | gap closed" for m in shown) + " |",
                  "|---|---|---|---|---|" + "---|---|" * len(shown)]
        for key in seg_keys:
            seg = groups[key]["seg"]
            iso, inp = _mean_std(seg["iso_gt"]), _mean_std(seg["input"])
            row = [format_mean_std(*iso, digits=3), format_mean_std(*inp, digits=3)]
            for m in shown:
                if m not in seg:
                    row += ["–", "–"]
                    continue
                r = _mean_std(seg[m])
                g = gap_closed(r[0], inp[0], iso[0])
                row += [format_mean_std(*r, digits=3), "–" if g is None else f"{100 * g:.0f} %"]
            lines.append(f"| {key[0]} | {key[1]} | {len(groups[key]['stacks'])} | " + " | ".join(row) + " |")
        lines.append("")
    if notes:
        lines += [notes.rstrip(), ""]
    return "\n".join(lines)


def _index(seq, item) -> int:
    seq = list(seq)
    return seq.index(item) if item in seq else len(seq)
