"""Re-acquisition check on a finished demo run: the restoration vs iso-GT vs deliberately wrong restorations.

Reads (never writes) a results folder and the synthetic ground truth, and scores with
:func:`isonet.quality.reacquisition_scores` (camera estimated from the acquired planes, as
``isonet assess`` does), on a lateral crop of ``--crop`` pixels (all z):

* ``restored`` — the workflow's restoration;
* ``iso_gt`` — the phantom blurred with h_iso (what a perfect restoration would be);
* ``iso_gt_with_acquired_planes`` — iso-GT with the acquired (noisy) planes written into it at
  the acquired positions, mapped to its intensities: a restoration that copies the noise;
* ``cubic`` — the input cubic-upsampled (no restoration);
* ``iso_gt_blurred_z`` — iso-GT blurred further along z (a restoration that recovers half the axial resolution);
* ``restored_shifted`` — the restoration moved by ``--shift`` planes along z (misplaced structure);
* ``restored_invented`` — the restoration with a bright nucleus-sized blob added between acquired planes;
* one entry per ``--model NAME=PATH``: the input restored by that model file forced onto the
  demo's factor through the library (``isonet predict`` refuses a factor mismatch), e.g. a model
  trained for another axial factor, and the same budget's model for the right one as a control.

The models of docs/evidence were trained on the demo's input with the workflow's CLI, one per factor::

    isonet patches results/demo/input.ome.zarr results/demo/psf/psf.npz patches_s2.npz --subsample 2 \
        --n-patches 1500 --patch-size 64 --camera auto --seed 0
    isonet train patches_s2.npz results/demo/psf/psf.json isonet1_s2.safetensors curve_s2.tsv --model isonet1 \
        --minutes 3 --batch-size 16 --learning-rate 0.005 --warmup-steps 100 --threads 2 --seed 0

(and the same with ``--subsample 4`` as the equal-budget control), then::

    python benchmarks/reacquisition_demo.py --results /work/main/results/demo \
        --synthetic /work/main/resources/synthetic/demo --out docs/evidence/reacquisition-demo.json \
        --model isonet1_trained_for_factor_2=isonet1_s2.safetensors \
        --model isonet1_trained_for_factor_4=isonet1_s4.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from isonet.camera import estimate_camera
from isonet.modelfile import load_model
from isonet.predict import restore_volume
from isonet.quality import CubicUpsampledView, axial_forward_kernel, lateral_kernel, reacquisition_scores
from isonet.storage import read_ome_zarr


def restore_with(path: str, source: np.ndarray, factor: int) -> tuple[np.ndarray, dict]:
    """Restore ``source`` with a model file at ``factor``, whatever factor the model was trained for."""
    model, info = load_model(path)
    m = int(getattr(model, "size_multiple", 1))
    halo = -(-(int(info["halo"]) + 4) // m) * m
    t0 = time.perf_counter()
    out = restore_volume(model, source, factor, info["normalization"], halo, batch_size=8)
    return out, {"trained_factor": info.get("factor"), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True)
    p.add_argument("--synthetic", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--shift", type=int, default=2)
    p.add_argument("--crop", type=int, default=128, help="lateral crop side (pixels, from the corner)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH")
    args = p.parse_args()

    results = Path(args.results)
    source_store, voxel_size = read_ome_zarr(results / "input.ome.zarr")
    factor = int(round(voxel_size[0] / voxel_size[2]))
    c = slice(0, args.crop)
    source = np.asarray(source_store[:, c, c], np.float32)
    restored = np.asarray(read_ome_zarr(results / "restored.ome.zarr")[0][:, c, c], np.float32)
    iso = tifffile.imread(Path(args.synthetic) / "iso_gt.tif").astype(np.float32)[: restored.shape[0], c, c]
    info = json.loads((Path(args.synthetic) / "synthetic.json").read_text())
    psf = np.load(results / "psf" / "psf.npz")["psf"]
    kernel, lateral = axial_forward_kernel(psf), lateral_kernel(psf)
    picks = np.unique(np.linspace(0, source_store.shape[0] - 1, 16).round().astype(int))
    camera = estimate_camera([np.asarray(source_store[int(k)], np.float32) for k in picks])
    sxy, sz = info["psf_params"]["sigma_xy"], info["psf_params"]["sigma_z"]
    half_way = math.sqrt(max(((sz + sxy) / 2) ** 2 - sxy**2, 0.0))  # to an axial sigma halfway between
    invented = restored.copy()
    zz, yy, xx = np.ogrid[: restored.shape[0], : restored.shape[1], : restored.shape[2]]
    centre = (restored.shape[0] // 2 + factor // 2, restored.shape[1] // 3, restored.shape[2] // 3)
    blob = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= 8**2
    invented[blob] += np.percentile(restored, 99.8) - np.percentile(restored, 1)
    fit = reacquisition_scores(iso, source, kernel, factor)["affine"]  # iso-GT units -> counts
    copied = iso.copy()
    rows = np.arange(source.shape[0]) * factor
    keep = rows < copied.shape[0]
    copied[rows[keep]] = (source[keep] - fit["offset"]) / fit["scale"]
    candidates = {
        "restored": restored,
        "iso_gt": iso,
        "iso_gt_with_acquired_planes": copied,
        "cubic": CubicUpsampledView(source, factor)[:],
        "iso_gt_blurred_z": ndimage.gaussian_filter1d(iso, half_way, axis=0),
        "restored_shifted": np.roll(restored, args.shift, axis=0),
        "restored_invented": invented,
    }
    models = {}
    for spec in args.model:
        name, path = spec.split("=", 1)
        candidates[name], models[name] = restore_with(path, source, factor)
        models[name]["path"] = path
        print(f"{name}: restored with {path} (trained for factor {models[name]['trained_factor']}) in "
              f"{models[name]['seconds']} s", flush=True)
    scores = {}
    for name, volume in candidates.items():
        s = reacquisition_scores(volume, source, kernel, factor, camera=camera, lateral=lateral)
        scores[name] = {k: s[k] for k in ("fresh_psnr_db", "psnr_db", "chi_square", "structural_mse",
                                          "noise_variance", "correlation", "worst_planes", "planes")}
        print(f"{name:28s} fresh {s['fresh_psnr_db']:6.2f} dB  measured {s['psnr_db']:6.2f} dB  "
              f"chi2 {s['chi_square']:.3f}  structural {s['structural_mse']:7.3f}  r = {s['correlation']:.4f}  "
              f"worst planes {s['worst_planes']}", flush=True)
        if name in ("restored", "iso_gt", "cubic"):  # the earlier definition: every plane, measured PSNR
            every = reacquisition_scores(volume, source, kernel, factor, include_ends=True)
            scores[name]["all_planes_psnr_db"] = every["psnr_db"]
            print(f"{'':28s} all {every['planes']} planes: measured {every['psnr_db']:6.2f} dB", flush=True)
    scores["settings"] = {**vars(args), "camera": camera.to_dict(), "models": models, "blob_centre_zyx": centre,
                          "blob_radius": 8, "acquired_plane_of_blob": centre[0] / factor,
                          "extra_axial_sigma": half_way}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
