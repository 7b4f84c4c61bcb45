"""Why a demo restoration loses SEG against iso-GT: residual axial blur, edge errors by surface direction, threshold.

Takes finished demo runs (``benchmarks/demo_variants.py`` work directories: each holds
``results/demo/predict/predicted.ome.zarr`` and the synthetic references in
``resources/synthetic/demo/``) and measures, with the workflow's own segmentation
(:func:`isonet.segment.segment_nuclei` at the Intermodes threshold) and scores:

* **iso-GT blurred along z** by a gaussian of σ voxels: the SEG and PSNR (vs iso-GT) of an ideal
  restoration that leaves that much axial blur, to read a restoration's SEG as an equivalent blur;
* **the restoration sharpened along z** (unsharp masking ``v + a (v - G_z(3) v)``): if a fixed linear
  axial filter brings it closer to iso-GT (PSNR) the network under-restores the axial axis;
* **foreground errors by surface direction**: voxels wrongly in (fp) or out (fn) of the foreground
  at the Intermodes threshold, binned by the angle of the GT surface normal to the lateral plane
  (0-30°: lateral-facing, 60-90°: facing z), planes 30..Z-30 only;
* **threshold scan**: SEG at thresholds between the background level and the Intermodes one;
* **largest losses**: the nuclei whose SEG drops most from iso-GT's segmentation to the restoration's;
* **threshold rules** (``--rules``): where the Intermodes threshold of the restoration lands against
  iso-GT's (both in iso-GT's units, the restoration mapped by its least-squares affine fit), the
  SEG of the restoration at iso-GT's threshold, the histograms' two modes, nucleus cores and rims
  against iso-GT's, and the SEG gap closed when the input, the restoration and iso-GT are all
  thresholded by Otsu's rule instead (the Table-1 benchmark's rule).

    python benchmarks/demo_diagnosis.py /work/exp/cos600_s0 /work/exp/cos600d0mse_s0 --json diag.json
    python benchmarks/demo_diagnosis.py /work/exp/r2s300_s0 --rules-only --json rules.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def load(run: Path):
    import tifffile
    import zarr

    pred = np.asarray(zarr.open_array(str(run / "results/demo/predict/predicted.ome.zarr/0")), np.float32)
    refs = run / "resources/synthetic/demo"
    z = pred.shape[0]
    iso = tifffile.imread(refs / "iso_gt.tif")[:z].astype(np.float32)
    labels = tifffile.imread(refs / "labels.tif")[:z]
    return pred, iso, labels


def seg_at(volume, labels, threshold=None) -> float:
    from isonet.metrics import seg_score
    from isonet.segment import global_threshold, segment_nuclei

    if threshold is None:
        threshold = global_threshold(volume)[0]
    return float(seg_score(labels, segment_nuclei(volume, threshold)))


def axial_blur_of_iso_gt(iso, labels, sigmas) -> dict:
    from scipy import ndimage as ndi

    from isonet.metrics import psnr_affine

    out = {}
    for s in sigmas:
        v = ndi.gaussian_filter(iso, (s, 0, 0)) if s else iso
        psnr = float(psnr_affine(v, iso))
        out[str(s)] = {"seg": seg_at(v, labels), "psnr_iso_gt": psnr if np.isfinite(psnr) else None}
    return out


def axial_unsharp(pred, iso, labels, amounts, sigma=3.0) -> dict:
    from scipy import ndimage as ndi

    from isonet.metrics import psnr_affine

    blurred = ndi.gaussian_filter(pred, (sigma, 0, 0))
    out = {}
    for a in amounts:
        v = pred + a * (pred - blurred)
        out[str(a)] = {"seg": seg_at(v, labels), "psnr_iso_gt": float(psnr_affine(v, iso))}
    return out


def errors_by_surface_direction(volume, labels, margin=30) -> dict:
    from scipy import ndimage as ndi

    from isonet.segment import global_threshold

    fg = labels > 0
    smooth = ndi.gaussian_filter(fg.astype(np.float32), 2.0)
    gz, gy, gx = np.gradient(smooth)
    angle = np.degrees(np.arctan2(np.abs(gz), np.hypot(gy, gx)))[margin:-margin]
    mask = volume > global_threshold(volume)[0]
    fp, fn = (mask & ~fg)[margin:-margin], (~mask & fg)[margin:-margin]
    bins = [0, 30, 60, 90.1]
    return {"bins_deg": ["0-30 (lateral-facing)", "30-60", "60-90 (z-facing)"],
            "false_foreground": np.histogram(angle[fp], bins)[0].tolist(),
            "missed_foreground": np.histogram(angle[fn], bins)[0].tolist()}


def largest_losses(pred, iso, labels, n=15) -> list[dict]:
    """The ``n`` GT nuclei whose Jaccard index loses most from iso-GT's segmentation to the restoration's."""
    from scipy import ndimage as ndi

    from isonet.metrics import seg_score
    from isonet.segment import global_threshold, segment_nuclei

    per = []
    for v in (iso, pred):
        ids, scores = seg_score(labels, segment_nuclei(v, global_threshold(v)[0]), return_per_object=True)[1:]
        per.append(scores)
    loss = per[0] - per[1]
    z = [c[0] for c in ndi.center_of_mass(labels > 0, labels, ids)]
    order = np.argsort(loss)[::-1][:n]
    return [{"label": int(ids[i]), "centroid_z": round(float(z[i]), 1), "seg_iso_gt": round(float(per[0][i]), 3),
             "seg_restored": round(float(per[1][i]), 3)} for i in order]


def threshold_scan(volume, labels, fractions) -> dict:
    from isonet.segment import global_threshold

    t = global_threshold(volume)[0]
    background = float(np.percentile(volume, 5))
    return {str(f): seg_at(volume, labels, background + f * (t - background)) for f in fractions}


def cubic_input(run: Path, z: int) -> np.ndarray:
    """The demo's acquisition cubic-upsampled along z on the restored grid, as ``evaluate`` segments it."""
    from isonet.degrade import axial_factor
    from isonet.stages.views import CubicUpsampledView
    from isonet.storage import read_ome_zarr

    src, voxel_size = read_ome_zarr(run / "results/demo/input.ome.zarr")
    view = CubicUpsampledView(src, axial_factor(voxel_size, None, source=str(run)))
    return np.asarray(view[:z], np.float32).reshape((z,) + tuple(view.shape[-2:]))


def _modes(volume: np.ndarray) -> list[float]:
    """The two modes Intermodes finds in ``volume``'s histogram (its threshold is midway between them)."""
    from isonet.segment import THRESHOLD_BINS, histogram_counts, intensity_range, intermodes_modes

    lo, hi = intensity_range([volume])
    return list(intermodes_modes(histogram_counts(volume, lo, hi, THRESHOLD_BINS), lo, hi, dtype=volume.dtype))


def edge_profile(volume, labels, distances=(-8, -6, -4, -2, -1, 1, 2, 4, 6), margin: int = 30) -> dict:
    """Mean intensity at each signed distance (voxels, < 0 inside) from the GT nuclei's surface.

    Separately for lateral-facing surfaces (GT surface normal within 30° of the lateral plane) and
    z-facing ones (beyond 60°), planes ``margin``..Z-``margin`` only.
    """
    from scipy import ndimage as ndi

    fg = labels > 0
    signed = np.round(ndi.distance_transform_edt(~fg) - ndi.distance_transform_edt(fg))[margin:-margin]
    gz, gy, gx = np.gradient(ndi.gaussian_filter(fg.astype(np.float32), 2.0))
    angle = np.degrees(np.arctan2(np.abs(gz), np.hypot(gy, gx)))[margin:-margin]
    v = volume[margin:-margin]
    return {"distances": list(distances),
            **{name: [float(v[(signed == d) & facing].mean()) for d in distances]
               for name, facing in (("lateral_facing", angle < 30), ("z_facing", angle > 60))}}


def threshold_rules(pred, iso, labels, cubic, z_margin: float = 26.0) -> dict:
    """How much of the restoration's SEG loss is where the Intermodes threshold lands on it."""
    from scipy import ndimage as ndi

    from isonet.metrics import interior_label_ids, seg_score
    from isonet.segment import segment_nuclei, threshold_by_rule

    x = pred.ravel()[::7]
    a, b = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), iso.ravel()[::7], rcond=None)[0]
    mapped = a * pred + b  # the restoration in iso-GT's units
    inner = interior_label_ids(labels, z_margin)

    def seg(volume, threshold):
        score, ids, per = seg_score(labels, segment_nuclei(volume, threshold), return_per_object=True)
        return float(score), float(per[np.isin(ids, inner)].mean())

    t_iso = threshold_by_rule(iso, "intermodes")
    t_own = threshold_by_rule(mapped, "intermodes")
    fg = labels > 0
    core = labels * ndi.binary_erosion(fg, iterations=4)
    rim = fg & ~ndi.binary_erosion(fg)
    ids = np.arange(1, int(labels.max()) + 1)
    core_iso, core_pred = ndi.mean(iso, core, ids), ndi.mean(mapped, core, ids)
    ok = ~np.isnan(core_iso) & ~np.isnan(core_pred)
    out = {
        "intermodes_iso_gt": float(t_iso), "intermodes_restored_in_iso_gt_units": float(t_own),
        "restored_threshold_over_iso_gt": float(t_own / t_iso),
        "modes_iso_gt": _modes(iso), "modes_restored_in_iso_gt_units": _modes(mapped),
        "median_core_ratio": float(np.median(core_pred[ok] / core_iso[ok])),
        "core_slope": float(np.polyfit(core_iso[ok], core_pred[ok], 1)[0]),
        "rim_ratio": float(mapped[rim].mean() / iso[rim].mean()),
        "seg_restored_own_intermodes": seg(mapped, t_own),
        "seg_restored_at_iso_gt_intermodes": seg(mapped, t_iso),
        "seg_iso_gt_own_intermodes": seg(iso, t_iso),
        "seg_input_own_intermodes": seg(cubic, threshold_by_rule(cubic, "intermodes")),
    }
    otsu = {k: seg(v, threshold_by_rule(v, "otsu")) for k, v in (("input", cubic), ("restored", pred), ("iso_gt", iso))}
    out["seg_otsu"] = otsu
    out["edge_profile"] = {"iso_gt": edge_profile(iso, labels), "restored": edge_profile(mapped, labels)}

    def gap(restored, input_, iso_gt):
        return [(r - i) / (g - i) for r, i, g in zip(restored, input_, iso_gt)]

    base = (out["seg_input_own_intermodes"], out["seg_iso_gt_own_intermodes"])
    out["gap_closed_own_intermodes"] = gap(out["seg_restored_own_intermodes"], *base)
    out["gap_closed_at_iso_gt_intermodes"] = gap(out["seg_restored_at_iso_gt_intermodes"], *base)
    out["gap_closed_otsu"] = gap(otsu["restored"], otsu["input"], otsu["iso_gt"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--iso-blur", type=float, nargs="*", default=[0, 1.5, 2.5, 3.5, 5])
    ap.add_argument("--unsharp", type=float, nargs="*", default=[0, 0.5, 1.0])
    ap.add_argument("--thresholds", type=float, nargs="*", default=[0.85, 0.92, 1.0, 1.08])
    ap.add_argument("--rules", action="store_true", help="also measure the threshold rules (see above)")
    ap.add_argument("--rules-only", action="store_true", help="measure only the threshold rules")
    a = ap.parse_args()
    result = {}
    for i, run in enumerate(a.runs):
        pred, iso, labels = load(run)
        r = {}
        if a.rules or a.rules_only:
            r["threshold_rules"] = threshold_rules(pred, iso, labels, cubic_input(run, pred.shape[0]))
        if a.rules_only:
            result[run.name] = r
            print(run.name, json.dumps(r), flush=True)
            continue
        if i == 0 and a.iso_blur:  # the references are the same for every demo run
            r["iso_gt_axial_blur"] = axial_blur_of_iso_gt(iso, labels, a.iso_blur)
            r["iso_gt_errors_by_surface_direction"] = errors_by_surface_direction(iso, labels)
        r["restored_axial_unsharp"] = axial_unsharp(pred, iso, labels, a.unsharp)
        r["restored_errors_by_surface_direction"] = errors_by_surface_direction(pred, labels)
        r["restored_threshold_scan"] = threshold_scan(pred, labels, a.thresholds)
        r["largest_losses_vs_iso_gt"] = largest_losses(pred, iso, labels)
        result[run.name] = r
        print(run.name, json.dumps(r), flush=True)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
