"""Stages ``benchmark-cell`` and ``benchmark-table``: the synthetic benchmark's files.

``benchmark-cell`` runs one (phantom, PSF, stack) cell in memory (:func:`isonet.benchmark.run_cell`)
and writes its JSON; ``benchmark-table`` gathers the cells' JSONs into Table 1 (markdown).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from isonet.benchmark import CellSettings, run_cell, table_markdown
from isonet.errors import InputError
from isonet.storage import write_json, write_text

logger = logging.getLogger(__name__)


def benchmark_cell_stage(
    out_json,
    phantom: str,
    psf_name: str,
    psf_kind: str,
    psf_params: dict | None,
    stack: int,
    settings: dict | None = None,
    threads: int | None = None,
) -> dict:
    """Run one benchmark cell and write its result JSON (see :func:`isonet.benchmark.run_cell`)."""
    if threads:
        torch.set_num_threads(int(threads))
    s = CellSettings.from_dict(settings or {})
    result = run_cell(phantom, psf_name, psf_kind, psf_params or {}, int(stack), s,
                      log=lambda m: logger.info("benchmark: %s", m))
    result["threads"] = torch.get_num_threads()
    write_json(out_json, result)
    logger.info("benchmark: %s/%s/%d done in %.0f s -> %s", phantom, psf_name, stack, result["timing"]["total"], out_json)
    return result


def benchmark_table_stage(cell_jsons, out_md, notes: str | None = None) -> str:
    """Write Table 1 (markdown) from cell JSONs; ``notes`` (markdown) is appended."""
    cells = []
    for path in cell_jsons:
        try:
            cells.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            raise InputError(f"benchmark-table: cannot read cell result {path}: {exc}") from None
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
        header += [
            f"Settings: phantom {tuple(s.get('shape', ()))} voxels, σ = {s.get('subsample')}, "
            f"{s.get('photons')} photons at the brightest voxel, read noise {s.get('read_noise')}; "
            f"networks: {s.get('n_patches')} patches of {s.get('patch_size')}², {s.get('epochs')} epochs, "
            f"batch {s.get('batch_size')}, lr {s.get('learning_rate')}.",
            "",
        ]
    if cells:
        total = sum(c.get("timing", {}).get("total", 0.0) for c in cells)
        header += [f"Compute: {len(cells)} cells, {total / 60:.0f} min of cell time in total "
                   f"({cells[0].get('threads', '?')} thread(s) per cell job).", ""]
    text = "\n".join(header) + table_markdown(cells, notes=notes or "")
    write_text(out_md, text)
    logger.info("benchmark-table: %d cells -> %s", len(cells), out_md)
    return text
