"""Stage ``evaluate``: restored vs cubic upsampling against ground truth (PSNR) and segmentation (SEG).

A time-lapse or multi-channel restoration: PSNR of every (time point, channel) volume.
"""

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
from isonet.segment import SEG_THRESHOLD_RULES
from isonet.segment_blocks import DEFAULT_BLOCK, DEFAULT_HALO, DEFAULT_MAX_WINDOW
from isonet.stages.common import axial_factor, check_output_path
from isonet.stages.segment import segment_to_zarr
from isonet.stages.views import CubicUpsampledView, PlanesView
from isonet.storage import (
    channel_labels,
    create_ome_zarr,
    image_axes,
    open_hyperstack,
    open_volume,
    read_ome_zarr,
    write_json,
    write_text,
)

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


def _segmented(volume, path, rule, voxel_size, chunks, block, halo, min_distance, min_size, max_window):
    """Block-wise labels of ``volume`` in a new OME-Zarr image at ``path`` (level 0, no pyramid).

    Returns the labels array and ``{"threshold", "rule"}``, the threshold used.
    """
    _, level0 = create_ome_zarr(path, volume.shape, np.int32, chunks, voxel_size, name="labels")
    result = segment_to_zarr(volume, level0, None, block, halo, min_distance, min_size, log=logger.warning,
                             max_window=max_window, rule=rule)
    return level0, {"threshold": result["threshold"], "rule": result["threshold_method"]}


def _threshold_record(labels_zarr) -> dict:
    """The threshold the segment stage recorded with the labels: ``{"threshold", "rule"}``, None where absent."""
    made = _stored_provenance(labels_zarr) or {}
    rule = made.get("threshold_method")
    return {"threshold": made.get("threshold"), "rule": rule if rule in SEG_THRESHOLD_RULES else None}


def evaluate_stage(
    input_zarr, restored_zarr, restored_labels_zarr, out_json, out_md, gt=None, iso_gt=None, gt_labels=None,
    subsample: float | None = None, min_distance: int = 5, min_size: int = 64,
    block: Sequence[int] = DEFAULT_BLOCK, halo: int = DEFAULT_HALO, z_margin: float = DEFAULT_Z_MARGIN,
    max_window: int | None = DEFAULT_MAX_WINDOW,
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
        metrics["psnr"] = psnr_against(restored, cubic, refs)
        if gt_labels:
            labels_gt = _reference(gt_labels, shape, np.int32, stack)
            if _max(labels_gt) > 0:
                restored_labels, _ = read_ome_zarr(restored_labels_zarr)
                candidates = {"restored": restored_labels}
                thresholds = {"restored": _threshold_record(restored_labels_zarr)}
                rule = thresholds["restored"]["rule"] or "intermodes"  # the other volumes follow the restored one's
                Path(out_json).parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=Path(out_json).parent,
                                                                           prefix=".evaluate-")))
                segment = (restored_voxel_size, restored_arr.chunks, block, halo, min_distance, min_size, max_window)
                candidates["input"], thresholds["input"] = _segmented(cubic, tmp / "input.ome.zarr", rule, *segment)
                if "iso_gt" in refs:
                    candidates["iso_gt"], thresholds["iso_gt"] = _segmented(
                        refs["iso_gt"], tmp / "iso_gt.ome.zarr", rule, *segment)
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
                rules = {t["rule"] for t in thresholds.values()}
                metrics["seg_threshold"] = {**{k: thresholds[k] for k in seg if k in thresholds},
                                            "one_rule": len(rules) == 1 and None not in rules}
                if None not in rules and len(rules) > 1:
                    logger.warning("evaluate: the segmentations were thresholded by different rules (%s); "
                                   "their SEG values are not comparable", _rules_text(thresholds))
                logger.info("evaluate: SEG %s", {k: (round(v, 4) if v is not None else None) for k, v in seg.items()})
    metrics["provenance"] = provenance_record(
        "evaluate", {"subsample": subsample, "min_distance": min_distance, "min_size": min_size,
                     "block": [int(b) for b in block], "halo": int(halo), "max_window": max_window,
                     "z_margin": float(z_margin)},
        {"image": {"path": str(input_zarr)}, "restored": {
            "path": str(restored_zarr), "sha256": array_sha256(restored_arr), "hash": "array_sha256",
            "provenance": _stored_provenance(restored_zarr)}},
    )
    write_json(out_json, metrics)
    write_text(out_md, metrics_markdown(metrics))
    return metrics


def psnr_against(restored, cubic, refs: dict, where: str = "") -> dict:
    """``{reference: {"restored": dB, "cubic": dB}}``: PSNR (affine fit) of both against each reference, streamed."""
    psnr = {}
    for ref_name, ref in refs.items():
        psnr[ref_name] = {"restored": psnr_affine(restored, ref), "cubic": psnr_affine(cubic, ref)}
        logger.info("evaluate: %sPSNR vs %s: restored %.2f dB, cubic %.2f dB", where, ref_name,
                    psnr[ref_name]["restored"], psnr[ref_name]["cubic"])
    return psnr


def evaluate_series_stage(input_zarr, restored_zarr, out_json, out_md, gt=None, iso_gt=None,
                          subsample: float | None = None) -> dict:
    """PSNR of every restored (time point, channel) volume of a time-lapse, and of cubic upsampling, against ground truth.

    The time-lapse / multi-channel counterpart of :func:`evaluate_stage` (PSNR only: no SEG).
    Each volume of ``restored_zarr`` (``isonet assemble``'s TCZYX image) is compared with the
    same volume of the ground truth and with the cubic upsampling of the same volume of
    ``input_zarr`` (``isonet convert``'s), one volume at a time and slab by slab, as
    :func:`evaluate_stage` does for one volume.

    Parameters
    ----------
    input_zarr, restored_zarr : path
        The converted input and the restoration, with ``t`` and/or ``c`` axes.
    out_json, out_md : path
        ``metrics.json`` and its markdown table (one row per time point, channel and reference).
    gt, iso_gt : path, optional
        Ground truth on the isotropic grid (at least one): OME-TIFF, ImageJ hyperstack or
        OME-Zarr with the time points and channels of the input *file* (the converted input's
        ``source_timepoints`` / ``source_channels`` pick the volumes of the sample sheet's
        selection) and at least as many planes as the restored grid.
    subsample : float, optional
        Axial factor; default voxel size z / x of the input.

    Returns
    -------
    metrics : dict
        ``volumes``: one entry per restored volume (``t``, ``c``, ``channel``, ``psnr``
        ``{reference: {"restored", "cubic"}}``); ``psnr``: their mean per reference, and
        ``factor``, ``restored_shape``, ``provenance``.

    Raises
    ------
    InputError
        No ground truth given; a ground truth that lacks a volume or does not cover the restored grid.
    """
    refs = {name: path for name, path in (("gt", gt), ("iso_gt", iso_gt)) if path}
    inputs = [input_zarr, restored_zarr, *refs.values()]
    check_output_path(out_json, inputs)
    check_output_path(out_md, inputs)
    if not refs:
        raise InputError(f"{restored_zarr}: no ground truth to evaluate against; give --gt and/or --iso-gt")
    _, voxel_size = read_ome_zarr(input_zarr)
    factor = axial_factor(voxel_size, subsample, source=str(input_zarr))
    restored_all, _ = read_ome_zarr(restored_zarr)
    lead = image_axes(restored_zarr)[:-3]
    n_t = int(restored_all.shape[lead.index("t")]) if "t" in lead else 1
    n_c = int(restored_all.shape[lead.index("c")]) if "c" in lead else 1
    made = _stored_provenance(restored_zarr) or {}
    source = _stored_provenance(input_zarr) or {}
    times = made.get("timepoints") or list(range(n_t))  # restored index -> converted input index
    chans = made.get("source_channels") or list(range(n_c))
    names = channel_labels(restored_zarr)
    volumes = []
    with contextlib.ExitStack() as stack:
        truth = {}
        for name, path in refs.items():
            opened = open_hyperstack(path)
            stack.callback(opened.close)
            truth[name] = opened
        for ti, t in enumerate(times):
            for ci, c in enumerate(chans):
                t_file = (source.get("source_timepoints") or range(t + 1))[t]
                c_file = (source.get("source_channels") or range(c + 1))[c]
                restored = PlanesView(read_ome_zarr(restored_zarr, t=ti, c=ci)[0], np.float32)
                cubic = CubicUpsampledView(read_ome_zarr(input_zarr, t=t, c=c)[0], factor)
                volume_refs = {name: _series_reference(opened, t_file, c_file, restored.shape)
                               for name, opened in truth.items()}
                name = (names[ci] if ci < len(names) else None) or f"c{c}"
                psnr = psnr_against(restored, cubic, volume_refs, where=f"t {t} {name}: ")
                volumes.append({"t": int(t), "c": int(c), "channel": name, "psnr": psnr})
    metrics = {
        "factor": factor, "restored_shape": [int(s) for s in restored_all.shape], "volumes": volumes,
        "psnr": {ref: {k: float(np.mean([v["psnr"][ref][k] for v in volumes])) for k in ("restored", "cubic")}
                 for ref in refs},
        "seg": {},
    }
    metrics["provenance"] = provenance_record(
        "evaluate", {"subsample": subsample},
        {"image": {"path": str(input_zarr)}, "restored": {"path": str(restored_zarr), "provenance": made or None},
         **{name: {"path": str(path)} for name, path in refs.items()}},
    )
    write_json(out_json, metrics)
    write_text(out_md, metrics_markdown(metrics))
    return metrics


def _series_reference(truth, t: int, c: int, shape) -> PlanesView:
    """Time point ``t`` of channel ``c`` of an opened ground-truth hyperstack, cropped to the restored grid."""
    if t >= truth.n_times or c >= truth.n_channels:
        raise InputError(f"{truth.path}: ground truth of {truth.n_times} time points and {truth.n_channels} channels "
                         f"has no time point {t} of channel {c}; it must have the time points and channels of the "
                         "input file")
    volume = truth.volume(t, c)
    if tuple(volume.shape[1:]) != tuple(shape[1:]) or volume.shape[0] < shape[0]:
        raise InputError(
            f"{truth.path}: ground truth volumes of shape {tuple(volume.shape)} do not cover the restored grid "
            f"{tuple(shape)}; they must be on the isotropic grid with at least as many planes"
        )
    return PlanesView(volume, np.float32, n_planes=shape[0])


def _stored_provenance(restored_zarr) -> dict | None:
    """The ``isonet`` attribute (provenance) of a restored OME-Zarr group, None when absent."""
    try:
        return dict(zarr.open_group(restored_zarr, mode="r").attrs.get("isonet") or {}) or None
    except Exception:  # noqa: BLE001  (a plain array or a foreign store has none)
        return None


def _rules_text(thresholds: dict) -> str:
    return ", ".join(f"{k} {v['rule'] or 'unknown'}" for k, v in thresholds.items())


def _thresholds_text(thresholds: dict) -> str:
    return ", ".join(f"{k} {v['threshold']:.4g}" for k, v in thresholds.items() if v["threshold"] is not None)


def metrics_markdown(metrics: dict) -> str:
    """A small markdown report of :func:`evaluate_stage`'s (or :func:`evaluate_series_stage`'s) metrics."""
    lines = [f"# Evaluation (axial factor {metrics['factor']:.8g}, restored grid {tuple(metrics['restored_shape'])})", ""]
    volumes = metrics.get("volumes") or []
    if volumes:
        lines += ["PSNR (dB, after affine intensity fit) of each time point and channel", "",
                  "| time point | channel | reference | restored | cubic upsampling | gain |", "|---|---|---|---|---|---|"]
        for v in volumes:
            for ref, row in v["psnr"].items():
                lines.append(f"| {v['t']} | {v['channel']} | {ref} | {row['restored']:.2f} | {row['cubic']:.2f} "
                             f"| {row['restored'] - row['cubic']:+.2f} |")
        lines.append("")
    if metrics["psnr"]:
        mean = f", mean over the {len(volumes)} volumes" if volumes else ""
        lines += [f"PSNR (dB, after affine intensity fit{mean})", "", "| reference | restored | cubic upsampling |",
                  "|---|---|---|"]
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
        thresholds = metrics.get("seg_threshold")
        if thresholds:
            per = {k: v for k, v in thresholds.items() if k != "one_rule"}
            if thresholds["one_rule"]:
                rule = next(iter(per.values()))["rule"]
                lines.append(f"\nThreshold rule: {rule}, for every segmentation ({_thresholds_text(per)})")
            elif any(v["rule"] is None for v in per.values()):
                lines.append(f"\nThreshold rules: {_rules_text(per)} (the restored labels record none: "
                             "they were not made by `isonet segment`)")
            else:
                lines.append(f"\nThreshold rules differ ({_rules_text(per)}): these SEG values compare "
                             "different rules, not only the volumes")
        lines.append("")
    return "\n".join(lines)
