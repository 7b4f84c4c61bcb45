"""Stages ``benchmark-tune``, ``benchmark-cell`` and ``benchmark-table``: the synthetic benchmark's files.

``benchmark-tune`` chooses each architecture's learning rate and dropout on a validation stack
(:func:`isonet.benchmark.tune_networks`) and writes them as JSON; ``benchmark-cell`` runs one
(phantom, PSF, stack) cell in memory (:func:`isonet.benchmark.run_cell`) with those values and
writes its JSON (and, on request, the simulated stack as ``.npz`` for a peer method);
``benchmark-table`` gathers the cells' and peers' JSONs into Table 1 (markdown).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from isonet.benchmark import CellSettings, run_cell, table_markdown, tune_networks
from isonet.errors import InputError
from isonet.storage import atomic_path, write_json, write_text

logger = logging.getLogger(__name__)


def _read_json(path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: cannot read {path}: {exc}") from None


def _settings(settings: dict | None, tuned) -> tuple[CellSettings, str | None]:
    d = dict(settings or {})
    if tuned:
        chosen = _read_json(tuned, "benchmark tuned hyperparameters").get("chosen")
        if not chosen:
            raise InputError(f"benchmark tuned hyperparameters: {tuned} has no 'chosen' entry; rerun benchmark-tune")
        d["hyper"] = chosen
    return CellSettings.from_dict(d), (str(tuned) if tuned else None)


def save_stack(path, stack, settings: CellSettings) -> Path:
    """Write a simulated stack (acquired, references, labels, IsoNet's ``full`` kernel) as ``.npz``.

    A peer method restores exactly this acquisition; its scoring needs the references on the
    isotropic grid and the labels.
    """
    arrays = {
        "acquired": stack.acquired.astype(np.float32),
        "gt": np.asarray(stack.references["gt"], np.float32),
        "iso_gt": np.asarray(stack.references["iso_gt"], np.float32),
        "kernel_full": stack.kernels["full"].astype(np.float32),
        "subsample": np.int64(settings.subsample) if float(settings.subsample).is_integer()
        else np.float64(settings.subsample),
        "offset": np.float64(settings.offset),
    }
    if stack.labels is not None:
        arrays["labels"] = stack.labels.astype(np.int32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return Path(path)


def benchmark_cell_stage(
    out_json,
    phantom: str,
    psf_name: str,
    psf_kind: str,
    psf_params: dict | None,
    stack: int,
    settings: dict | None = None,
    threads: int | None = None,
    tuned=None,
    stack_npz=None,
) -> dict:
    """Run one benchmark cell and write its result JSON (see :func:`isonet.benchmark.run_cell`).

    ``tuned`` is a ``benchmark-tune`` JSON whose chosen learning rates and dropouts replace
    ``settings["hyper"]`` (its path is recorded as ``hyper_source``); ``stack_npz`` also writes
    the simulated stack (:func:`save_stack`).
    """
    if threads:
        torch.set_num_threads(int(threads))
    s, source = _settings(settings, tuned)
    result, st = run_cell(phantom, psf_name, psf_kind, psf_params or {}, int(stack), s,
                          log=lambda m: logger.info("benchmark: %s", m), return_stack=True)
    result["threads"] = torch.get_num_threads()
    result["hyper_source"] = source
    if stack_npz:
        save_stack(stack_npz, st, s)
    write_json(out_json, result)
    logger.info("benchmark: %s/%s/%d done in %.0f s -> %s", phantom, psf_name, stack, result["timing"]["total"], out_json)
    return result


def benchmark_tune_stage(
    out_json,
    phantom: str,
    psf_name: str,
    psf_kind: str,
    psf_params: dict | None,
    grid: dict,
    settings: dict | None = None,
    threads: int | None = None,
) -> dict:
    """Tune learning rate and dropout per architecture on the validation stack; write the JSON."""
    if threads:
        torch.set_num_threads(int(threads))
    s = CellSettings.from_dict(settings or {})
    tuned = tune_networks(phantom, psf_name, psf_kind, psf_params or {}, grid, s,
                          log=lambda m: logger.info("benchmark-tune: %s", m))
    tuned["threads"] = torch.get_num_threads()
    write_json(out_json, tuned)
    logger.info("benchmark-tune: chose %s in %.0f s -> %s", tuned["chosen"], tuned["seconds"], out_json)
    return tuned


def benchmark_table_stage(cell_jsons, out_md, notes: str | None = None, tuned=None) -> str:
    """Write Table 1 (markdown) from cell and peer JSONs; ``notes`` (markdown) is appended.

    Peer JSONs (``benchmarks/csbdeep_peer.py``) are recognised by their ``peer`` key; ``tuned``
    (a ``benchmark-tune`` JSON) adds the search and the chosen values to the header.
    """
    records = [_read_json(path, "benchmark-table: cell result") for path in cell_jsons]
    cells = [r for r in records if not r.get("peer")]
    peers = [r for r in records if r.get("peer")]
    first = cells[0] if cells else {}
    s = first.get("settings", {})
    header = [
        "# IsoNet synthetic benchmark (Table 1)",
        "",
        "PSNR in dB after a least-squares affine intensity fit of each result to the reference "
        "(`isonet.metrics.psnr_affine`), on the isotropic grid the acquisition covers "
        "(planes 0 .. (Z-1)·σ); mean (std over stacks, ddof 1) per (phantom, PSF); best mean in bold.",
        "",
    ]
    if s:
        hyper = s.get("hyper", {})
        hp = "; ".join(f"{a} lr {v['learning_rate']:g}, dropout {v['dropout']:g}" for a, v in sorted(hyper.items()))
        steps = sorted({t.get("steps") for c in cells for t in c.get("training", {}).values()} - {None})
        header += [
            f"Settings: phantom {tuple(s.get('shape', ()))} voxels, σ = {s.get('subsample')}, "
            f"{s.get('photons')} photons at the brightest voxel, read noise {s.get('read_noise')}; "
            f"networks: {s.get('n_patches')} patches of {s.get('patch_size')}², the same budget of "
            f"{s.get('train_steps')} optimiser steps for every network (taken: {', '.join(map(str, steps)) or '?'}), "
            f"batch {s.get('batch_size')}; {hp}"
            + (f" (from {Path(first['hyper_source']).name})" if first.get("hyper_source") else " (untuned)") + ". "
            f"SEG: threshold rule asked for {s.get('seg_threshold')} (the rule used is below the SEG tables), "
            f"interior = nuclei whose GT centroid is at least "
            f"{s.get('seg_z_margin')} planes from both z-ends.",
            "",
        ]
    if tuned:
        t = _read_json(tuned, "benchmark-table: tuned hyperparameters")
        trials = ", ".join(f"{x['architecture']} {x['learning_rate']:g}/{x['dropout']:g}: "
                           f"{x['psnr'][t['reference']]:.2f}" for x in t["trials"])
        header += [
            f"Tuning: one search for every architecture on a validation stack that is in no cell "
            f"({t['phantom']}/{t['psf']}, seed {t['seed']}), learning rate × dropout over "
            f"{t['grid']['learning_rate']} × {t['grid']['dropout']}, PSNR vs {t['reference']} "
            f"(lr/dropout: dB): {trials}. Chosen: "
            + "; ".join(f"{a} lr {v['learning_rate']:g}, dropout {v['dropout']:g}" for a, v in t["chosen"].items())
            + ".",
            "",
        ]
    if peers:
        budgets = [p.get("training", {}).get("budget_s") for p in peers]
        used = [p.get("training", {}).get("train_s") for p in peers]
        matched = all(p.get("training", {}).get("budget_from") == "isonet2_full" for p in peers)
        how = ("the wall time IsoNet-2 full trained on the same stack on the same machine" if matched
               else "a wall-time budget given by hand (--budget-s), not matched to IsoNet-2")
        header += [
            f"Peer: CSBDeep IsotropicCARE (`benchmarks/csbdeep_peer.py`) on the same stacks, trained for "
            f"{how} (budgets {_span(budgets)} s, used {_span(used)} s); "
            "its output (n·σ planes spanning the acquired planes corner to corner) is resampled linearly "
            "along z onto our grid before scoring (`isonet.benchmark.resample_corner_aligned_z`).",
            "",
        ]
    if cells:
        total = sum(c.get("timing", {}).get("total", 0.0) for c in cells)
        cpu = sum(c.get("timing", {}).get("cpu_total", 0.0) for c in cells)
        header += [f"Compute: {len(cells)} cells, {total / 60:.0f} min of cell wall time in total, "
                   f"{cpu / 60:.0f} min of CPU time ({cells[0].get('threads', '?')} thread(s) per cell job).", ""]
    text = "\n".join(header) + "\n" + table_markdown(records, notes=notes or "")
    write_text(out_md, text)
    logger.info("benchmark-table: %d cells, %d peer results -> %s", len(cells), len(peers), out_md)
    return text


def _span(values) -> str:
    v = [float(x) for x in values if x is not None]
    return "?" if not v else f"{min(v):.0f}" if min(v) == max(v) else f"{min(v):.0f}-{max(v):.0f}"
