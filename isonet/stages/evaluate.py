"""Stage ``evaluate``: restored vs cubic upsampling against ground truth (PSNR) and segmentation (SEG)."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from isonet.errors import InputError
from isonet.metrics import interior_label_ids, psnr_affine, seg_score
from isonet.provenance import array_sha256, provenance_record
from isonet.segment_blocks import DEFAULT_BLOCK, DEFAULT_HALO
from isonet.stages.common import axial_factor, check_output_path
from isonet.stages.segment import segment_to_zarr
from isonet.stages.views import CubicUpsampledView, PlanesView
from isonet.storage import create_ome_zarr, open_volume, read_ome_zarr, write_json, write_text

logger = logging.getLogger(__name__)

#: interior SEG counts nuclei whose GT centroid is at least this many planes from both z-ends:
#: one mean nucleus diameter of the synthetic phantoms (as the benchmark's ``seg_z_margin``)
DEFAULT_Z_MARGIN = 26.0


def _reference(path, shape, dtype, stack: contextlib.ExitStack) -> PlanesView:
    """A reference volume (GT, iso-GT, GT labels) as a lazy view of its first ``shape[0]`` planes."""
    array, _, close = open_volume(path)
    stack.callback(close)
    if tuple(array.shape[1:]) != tuple(shape[1:]) or array.shape[0] < shape[0]:
        raise InputError(
            f"{path}: ground truth of shape {tuple(array.shape)} does not cover the restored grid {tuple(shape)}; "
            "it must be on the isotropic grid with at least as many planes"
        )
    return PlanesView(array, dtype, n_planes=shape[0])


def _max(volume) -> int:
    """Largest value of a volume, read a slab of about a million voxels (at least a plane) at a time."""
    step = max(1, (1 << 20) // max(1, int(np.prod(volume.shape[1:]))))
    return max(int(np.max(volume[z:z + step])) for z in range(0, volume.shape[0], step))


def _segmented(volume, path, voxel_size, chunks, block, halo, min_distance, min_size):
    """Block-wise labels of ``volume`` in a new OME-Zarr image at ``path`` (level 0, no pyramid)."""
    _, level0 = create_ome_zarr(path, volume.shape, np.int32, chunks, voxel_size, name="labels")
    segment_to_zarr(volume, level0, None, block, halo, min_distance, min_size, log=logger.warning)
    return level0


def evaluate_stage(
    input_zarr, restored_zarr, restored_labels_zarr, out_json, out_md, gt=None, iso_gt=None, gt_labels=None,
    subsample: float | None = None, min_distance: int = 5, min_size: int = 64,
    block: Sequence[int] = DEFAULT_BLOCK, halo: int = DEFAULT_HALO, z_margin: float = DEFAULT_Z_MARGIN,
) -> dict:
    """Write ``metrics.json`` and a markdown table comparing restoration and cubic upsampling.

    PSNR is computed after the least-squares affine fit of each result to the reference
    (:func:`isonet.metrics.psnr_affine`): restorations and references do not share intensity
    units. SEG (ISBI 2013) compares segmentations of the cubic-upsampled input, of the restored
    volume and of iso-GT with the ground-truth labels, over all ground-truth nuclei and over the
    interior ones (centroid at least ``z_margin`` planes from both z-ends,
    :func:`isonet.metrics.interior_label_ids`).

    Every volume is read slab by slab or block by block, never whole: the cubic upsampling is
    computed on read (:class:`isonet.stages.views.CubicUpsampledView`), references are cropped
    by slicing, PSNR comes from accumulated moments and SEG from an accumulated overlap table;
    the input and iso-GT are segmented block-wise (``block``, ``halo``) into temporary stores
    next to ``out_json``. The values equal those computed on whole volumes in memory.
    """
    inputs = [p for p in (input_zarr, restored_zarr, restored_labels_zarr, gt, iso_gt, gt_labels) if p]
    check_output_path(out_json, inputs)
    check_output_path(out_md, inputs)
    src, voxel_size = read_ome_zarr(input_zarr)
    factor = axial_factor(voxel_size, subsample, source=str(input_zarr))
    cubic = CubicUpsampledView(src, factor)
    restored_arr, restored_voxel_size = read_ome_zarr(restored_zarr)
    restored = PlanesView(restored_arr, np.float32)
    shape = restored.shape
    metrics: dict = {"factor": factor, "restored_shape": list(shape), "psnr": {}, "seg": {}}
    with contextlib.ExitStack() as stack:
        refs = {name: _reference(path, shape, np.float32, stack)
                for name, path in (("gt", gt), ("iso_gt", iso_gt)) if path}
        for ref_name, ref in refs.items():
            metrics["psnr"][ref_name] = {
                "restored": psnr_affine(restored, ref),
                "cubic": psnr_affine(cubic, ref),
            }
            logger.info("evaluate: PSNR vs %s: restored %.2f dB, cubic %.2f dB", ref_name,
                        metrics["psnr"][ref_name]["restored"], metrics["psnr"][ref_name]["cubic"])
        if gt_labels:
            labels_gt = _reference(gt_labels, shape, np.int32, stack)
            if _max(labels_gt) > 0:
                restored_labels, _ = read_ome_zarr(restored_labels_zarr)
                candidates = {"restored": restored_labels}
                Path(out_json).parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=Path(out_json).parent,
                                                                           prefix=".evaluate-")))
                segment = (restored_voxel_size, restored_arr.chunks, block, halo, min_distance, min_size)
                candidates["input"] = _segmented(cubic, tmp / "input.ome.zarr", *segment)
                if "iso_gt" in refs:
                    candidates["iso_gt"] = _segmented(refs["iso_gt"], tmp / "iso_gt.ome.zarr", *segment)
                interior = interior_label_ids(labels_gt, z_margin)
                seg, seg_interior = {}, {"z_margin": float(z_margin), "n_objects": int(len(interior))}
                for name, labels in candidates.items():
                    score, ids, per_object = seg_score(labels_gt, labels, return_per_object=True)
                    inside = np.isin(ids, interior)
                    seg[name] = score
                    seg_interior[name] = float(per_object[inside].mean()) if inside.any() else None
                seg = {k: seg[k] for k in ("restored", "input", "iso_gt") if k in seg}
                if "iso_gt" in seg:
                    gap = seg["iso_gt"] - seg["input"]
                    seg["gap_closed"] = (seg["restored"] - seg["input"]) / gap if gap > 0 else None
                metrics["seg"] = seg
                metrics["seg_interior"] = seg_interior
                logger.info("evaluate: SEG %s", {k: (round(v, 4) if v is not None else None) for k, v in seg.items()})
    metrics["provenance"] = provenance_record(
        "evaluate", {"subsample": subsample, "min_distance": min_distance, "min_size": min_size,
                     "block": [int(b) for b in block], "halo": int(halo), "z_margin": float(z_margin)},
        {"image": {"path": str(input_zarr)}, "restored": {
            "path": str(restored_zarr), "sha256": array_sha256(restored_arr), "hash": "array_sha256",
            "provenance": _stored_provenance(restored_zarr)}},
    )
    write_json(out_json, metrics)
    write_text(out_md, metrics_markdown(metrics))
    return metrics


def _stored_provenance(restored_zarr) -> dict | None:
    """The ``isonet`` attribute (provenance) of a restored OME-Zarr group, None when absent."""
    try:
        return dict(zarr.open_group(restored_zarr, mode="r").attrs.get("isonet") or {}) or None
    except Exception:  # noqa: BLE001  (a plain array or a foreign store has none)
        return None


def metrics_markdown(metrics: dict) -> str:
    """A small markdown report of :func:`evaluate_stage`'s metrics."""
    lines = [f"# Evaluation (axial factor {metrics['factor']:.8g}, restored grid {tuple(metrics['restored_shape'])})", ""]
    if metrics["psnr"]:
        lines += ["PSNR (dB, after affine intensity fit)", "", "| reference | restored | cubic upsampling |", "|---|---|---|"]
        for ref, row in metrics["psnr"].items():
            best = max(row, key=row.get)
            cells = [f"**{row[k]:.2f}**" if k == best else f"{row[k]:.2f}" for k in ("restored", "cubic")]
            lines.append(f"| {ref} | {cells[0]} | {cells[1]} |")
        lines.append("")
    if metrics["seg"]:
        seg = metrics["seg"]
        interior = metrics.get("seg_interior") or {}
        lines += ["SEG (ISBI 2013, vs ground-truth labels)", ""]
        if interior:
            lines += [f"interior: the {interior['n_objects']} nuclei whose centroid is at least "
                      f"{interior['z_margin']:g} planes from both z-ends", ""]
        lines += ["| segmentation of | SEG | SEG interior |", "|---|---|---|"]
        for k in ("input", "restored", "iso_gt"):
            if k in seg:
                inner = interior.get(k)
                lines.append(f"| {k} | {seg[k]:.3f} | {'-' if inner is None else f'{inner:.3f}'} |")
        if seg.get("gap_closed") is not None:
            lines.append(f"\nSEG gap closed by restoration: {100 * seg['gap_closed']:.0f} %")
        lines.append("")
    return "\n".join(lines)
