"""Stage ``evaluate``: restored vs cubic upsampling against ground truth (PSNR) and segmentation (SEG)."""

from __future__ import annotations

import logging

import numpy as np
import zarr

from isonet.degrade import upsample_axis
from isonet.errors import InputError
from isonet.metrics import psnr_affine, seg_score
from isonet.provenance import array_sha256, provenance_record
from isonet.segment import segment_nuclei
from isonet.stages.common import axial_factor, check_output_path
from isonet.storage import open_volume, read_ome_zarr, write_json, write_text

logger = logging.getLogger(__name__)


def _load(path) -> np.ndarray:
    arr, _, close = open_volume(path)
    try:
        return np.asarray(arr[:])
    finally:
        close()


def _crop_to(reference: np.ndarray, shape, path) -> np.ndarray:
    if reference.shape[1:] != tuple(shape[1:]) or reference.shape[0] < shape[0]:
        raise InputError(
            f"{path}: ground truth of shape {reference.shape} does not cover the restored grid {tuple(shape)}; "
            "it must be on the isotropic grid with at least as many planes"
        )
    return reference[: shape[0]]


def evaluate_stage(
    input_zarr, restored_zarr, restored_labels_zarr, out_json, out_md, gt=None, iso_gt=None, gt_labels=None,
    subsample: float | None = None, min_distance: int = 5, min_size: int = 64,
) -> dict:
    """Write ``metrics.json`` and a markdown table comparing restoration and cubic upsampling.

    PSNR is computed after the least-squares affine fit of each result to the reference
    (:func:`isonet.metrics.psnr_affine`): restorations and references do not share intensity
    units. SEG (ISBI 2013) compares segmentations of the cubic-upsampled input, of the restored
    volume and of iso-GT with the ground-truth labels.
    """
    inputs = [p for p in (input_zarr, restored_zarr, restored_labels_zarr, gt, iso_gt, gt_labels) if p]
    check_output_path(out_json, inputs)
    check_output_path(out_md, inputs)
    src, voxel_size = read_ome_zarr(input_zarr)
    factor = axial_factor(voxel_size, subsample, source=str(input_zarr))
    acquired = np.asarray(src[:], dtype=np.float32)
    cubic = upsample_axis(acquired, factor, axis=0)
    restored_arr, _ = read_ome_zarr(restored_zarr)
    restored = np.asarray(restored_arr[:], dtype=np.float32)
    shape = restored.shape
    metrics: dict = {"factor": factor, "restored_shape": list(shape), "psnr": {}, "seg": {}}
    refs = {}
    if gt:
        refs["gt"] = _crop_to(_load(gt).astype(np.float32), shape, gt)
    if iso_gt:
        refs["iso_gt"] = _crop_to(_load(iso_gt).astype(np.float32), shape, iso_gt)
    for ref_name, ref in refs.items():
        metrics["psnr"][ref_name] = {
            "restored": psnr_affine(restored, ref),
            "cubic": psnr_affine(cubic, ref),
        }
        logger.info("evaluate: PSNR vs %s: restored %.2f dB, cubic %.2f dB", ref_name,
                    metrics["psnr"][ref_name]["restored"], metrics["psnr"][ref_name]["cubic"])
    if gt_labels:
        labels_gt = _crop_to(_load(gt_labels).astype(np.int32), shape, gt_labels)
        if labels_gt.max() > 0:
            restored_labels, _ = read_ome_zarr(restored_labels_zarr)
            seg = {"restored": seg_score(labels_gt, np.asarray(restored_labels[:]))}
            seg["input"] = seg_score(labels_gt, segment_nuclei(cubic, min_distance=min_distance, min_size=min_size))
            if "iso_gt" in refs:
                seg["iso_gt"] = seg_score(
                    labels_gt, segment_nuclei(refs["iso_gt"], min_distance=min_distance, min_size=min_size)
                )
                gap = seg["iso_gt"] - seg["input"]
                seg["gap_closed"] = (seg["restored"] - seg["input"]) / gap if gap > 0 else None
            metrics["seg"] = seg
            logger.info("evaluate: SEG %s", {k: (round(v, 4) if v is not None else None) for k, v in seg.items()})
    metrics["provenance"] = provenance_record(
        "evaluate", {"subsample": subsample, "min_distance": min_distance, "min_size": min_size},
        {"image": {"path": str(input_zarr)}, "restored": {
            "path": str(restored_zarr), "sha256": array_sha256(restored), "hash": "array_sha256",
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
        lines += ["SEG (ISBI 2013, vs ground-truth labels)", "", "| segmentation of | SEG |", "|---|---|"]
        for k in ("input", "restored", "iso_gt"):
            if k in seg:
                lines.append(f"| {k} | {seg[k]:.3f} |")
        if seg.get("gap_closed") is not None:
            lines.append(f"\nSEG gap closed by restoration: {100 * seg['gap_closed']:.0f} %")
        lines.append("")
    return "\n".join(lines)
