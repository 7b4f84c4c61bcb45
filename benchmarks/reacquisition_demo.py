"""Re-acquisition check on a finished demo run: the restoration vs iso-GT vs deliberately wrong restorations.

Reads (never writes) a results folder and the synthetic ground truth, and scores with
:func:`isonet.quality.reacquisition_scores`:

* ``restored`` — the workflow's restoration;
* ``iso_gt`` — the phantom blurred with h_iso (what a perfect restoration would be);
* ``cubic`` — the input cubic-upsampled (no restoration);
* ``iso_gt_blurred_z`` — iso-GT blurred further along z (a restoration that recovers half the axial resolution);
* ``restored_shifted`` — the restoration moved by ``--shift`` planes along z (misplaced structure);
* ``restored_invented`` — the restoration with a bright nucleus-sized blob added between acquired planes.

    python benchmarks/reacquisition_demo.py --results /work/main/results/demo \
        --synthetic /work/main/resources/synthetic/demo --out docs/evidence/reacquisition-demo.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from isonet.quality import CubicUpsampledView, axial_forward_kernel, reacquisition_scores
from isonet.storage import read_ome_zarr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True)
    p.add_argument("--synthetic", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--shift", type=int, default=2)
    args = p.parse_args()

    results = Path(args.results)
    source, voxel_size = read_ome_zarr(results / "input.ome.zarr")
    factor = int(round(voxel_size[0] / voxel_size[2]))
    restored = np.asarray(read_ome_zarr(results / "restored.ome.zarr")[0][:], np.float32)
    iso = tifffile.imread(Path(args.synthetic) / "iso_gt.tif").astype(np.float32)[: restored.shape[0]]
    info = json.loads((Path(args.synthetic) / "synthetic.json").read_text())
    psf = np.load(results / "psf" / "psf.npz")["psf"]
    kernel = axial_forward_kernel(psf)
    sxy, sz = info["psf_params"]["sigma_xy"], info["psf_params"]["sigma_z"]
    half_way = math.sqrt(max(((sz + sxy) / 2) ** 2 - sxy**2, 0.0))  # to an axial sigma halfway between
    invented = restored.copy()
    zz, yy, xx = np.ogrid[: restored.shape[0], : restored.shape[1], : restored.shape[2]]
    centre = (restored.shape[0] // 2 + factor // 2, restored.shape[1] // 3, restored.shape[2] // 3)
    blob = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= 8**2
    invented[blob] += np.percentile(restored, 99.8) - np.percentile(restored, 1)
    candidates = {
        "restored": restored,
        "iso_gt": iso,
        "cubic": CubicUpsampledView(source, factor),
        "iso_gt_blurred_z": ndimage.gaussian_filter1d(iso, half_way, axis=0),
        "restored_shifted": np.roll(restored, args.shift, axis=0),
        "restored_invented": invented,
    }
    scores = {}
    for name, volume in candidates.items():
        s = reacquisition_scores(volume, source, kernel, factor)
        scores[name] = {k: s[k] for k in ("psnr_db", "correlation", "worst_planes")}
        print(f"{name:18s} {s['psnr_db']:6.2f} dB  r = {s['correlation']:.4f}  worst planes {s['worst_planes']}",
              flush=True)
    scores["settings"] = {**vars(args), "blob_centre_zyx": centre, "blob_radius": 8, "acquired_plane_of_blob":
                          centre[0] / factor, "extra_axial_sigma": half_way}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
