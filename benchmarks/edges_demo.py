"""Predict edges `clip` vs `mirror` on the demo: the demo's trained model restores its input both ways.

Run from the repository root after `make demo`:  python benchmarks/edges_demo.py [OUT.json]
Prints and writes, per mode: predict seconds (2 threads, fp32), PSNR (affine fit) vs GT and iso-GT, SEG
(all nuclei and those >= 26 planes from both z-ends) of the Intermodes/watershed segmentation.
"""
import json, sys, time, numpy as np, tifffile, zarr
from isonet.stages.predict import predict_stage
from isonet.segment import segment_nuclei
from isonet.metrics import psnr_affine, seg_score, interior_label_ids
out = {}
gt = tifffile.imread('resources/synthetic/demo/gt.tif').astype(np.float32)[:253]
iso = tifffile.imread('resources/synthetic/demo/iso_gt.tif').astype(np.float32)[:253]
lab = tifffile.imread('resources/synthetic/demo/labels.tif')[:253]
interior = interior_label_ids(lab, 26)
for edges in ['mirror', 'clip']:
    p = f'results/edges_demo_{edges}.ome.zarr'
    t0 = time.time()
    predict_stage('results/demo/input.ome.zarr', 'results/demo/train/model.safetensors', p, precision='fp32', threads=2, edges=edges)
    dt = time.time() - t0
    v = np.asarray(zarr.open_array(p + '/0'))
    l = segment_nuclei(v)
    s, ids, per = seg_score(lab, l, return_per_object=True)
    r = dict(seconds=dt, psnr_gt=psnr_affine(v, gt), psnr_iso=psnr_affine(v, iso), seg=s, seg_interior=float(per[np.isin(ids, interior)].mean()))
    print(edges, r, flush=True)
    out[edges] = r
json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else 'edges_demo.json', 'w'), indent=1)
