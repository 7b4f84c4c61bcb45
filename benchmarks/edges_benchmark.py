"""Where a benchmark stack's restoration error sits, by edge rule: the z-ends against the interior.

Usage: python benchmarks/edges_benchmark.py OUT.json [--phantom nuclei] [--stack 0] [--threads 2]
           [--tuned docs/benchmark/quick-gaussian-cpu/bf16-rounds2-d0/tuned.json] [--train-edges mirror]

One gaussian stack of the quick size (config/benchmark.yaml), IsoNet-2 trained once with the tuned
rate (``--train-edges``: the edge rule of its later rounds' restorations), then the same weights
restore the stack with each rule (``mirror``: mirrored halos past the volume's edges; ``clip``: the
slices end there, as in training and in the workflow). Prints and writes the PSNR (affine fit on the
whole volume) against GT and iso-GT on the whole grid, on the 16 planes at each z-end and on the
planes between, for cubic, iso-GT (against GT) and both rules, and the per-plane PSNR against GT.
"""

import argparse
import json

import numpy as np
import torch
import yaml

from isonet import benchmark as B
from isonet.baselines import cubic_upsample

ENDS = 16


def affine_fit(x, ref):
    x = np.asarray(x, np.float64)
    a = np.stack([x.ravel(), np.ones(x.size)], 1)
    c, *_ = np.linalg.lstsq(a, ref.ravel(), rcond=None)
    return x * c[0] + c[1]


def regions(volume, ref, data_range):
    err = (affine_fit(volume, ref) - ref) ** 2
    n = err.shape[0]
    db = lambda e: float(10 * np.log10(data_range**2 / np.mean(e)))  # noqa: E731
    return {"whole": db(err), "interior": db(err[ENDS:n - ENDS]),
            "ends": db(np.concatenate([err[:ENDS], err[n - ENDS:]])),
            "per_plane": [round(db(p), 2) for p in err]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--phantom", default="nuclei")
    p.add_argument("--stack", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tuned", default="docs/benchmark/quick-gaussian-cpu/bf16-rounds2-d0/tuned.json")
    p.add_argument("--train-edges", default="mirror", choices=["mirror", "clip"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(open("config/benchmark.yaml"))["benchmark"]
    settings = dict(cfg["sizes"]["quick"]["settings"], methods=["cubic", "isonet2_full"], edges=args.train_edges)
    settings["hyper"] = json.load(open(args.tuned))["chosen"]
    psf = cfg["psfs"]["gaussian"]
    s = B.CellSettings.from_dict(settings)
    seed = B.stack_seed(args.phantom, "gaussian", args.stack, s.seed)
    st = B.simulate_stack(args.phantom, psf["kind"], psf["params"], seed, s)
    captured = {}
    restore = B.restore_volume

    def capture(net, *a, **kw):  # the trained network and the arguments of its final restoration
        captured.update(net=net, args=a, kwargs=kw)
        return restore(net, *a, **kw)

    B.restore_volume = capture
    _, info = B.train_and_restore(st.acquired, st.kernels["full"], "isonet2", s, seed)
    vols = {"cubic": cubic_upsample(st.acquired, s.subsample), "iso_gt": st.references["iso_gt"]}
    for edges in ("mirror", "clip"):
        vols[edges] = restore(captured["net"], *captured["args"], **dict(captured["kwargs"], edges=edges))
    result = {"phantom": args.phantom, "stack": args.stack, "seed": seed, "threads": args.threads,
              "train_edges": args.train_edges, "ends_planes": ENDS, "training": info, "psnr": {}}
    for ref in ("gt", "iso_gt"):
        r = np.asarray(st.references[ref], np.float64)
        rng = float(r.max() - r.min())
        result["psnr"][ref] = {k: regions(v, r, rng) for k, v in vols.items() if k != ref}
        for k, v in result["psnr"][ref].items():
            print(f"vs {ref}: {k:7s} whole {v['whole']:.2f}  interior {v['interior']:.2f}  "
                  f"{ENDS} planes at each z-end {v['ends']:.2f}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
