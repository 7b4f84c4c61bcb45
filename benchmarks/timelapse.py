"""A 2-channel, 3-time-point confocal time-lapse through the CLI: one model per channel, every time point restored.

Simulates a time-lapse OME-TIFF whose OME-XML carries the optics (objective NA 1.1, water,
confocal, 488/510 and 561/610 nm, 50 µm pinhole at 40x): each channel is imaged with the PSF that
``psf.kind: auto`` builds from that metadata (nuclei phantoms, axial factor 4). Then per channel:
``isonet psf --kind auto``, ``isonet patches --channel C --n-timepoints 2``, ``isonet train``,
``isonet predict --channel C --time T`` for every time point, and ``isonet assemble``. Prints and
writes (``--out-json``) the affine-fitted PSNR of every restored (t, c) volume and of cubic
upsampling against the isotropic ground truth, and each stage's wall time.

    python benchmarks/timelapse.py --steps 150 --out-json timelapse.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import zarr

from isonet.baselines import cubic_upsample
from isonet.cli import main as isonet
from isonet.metrics import psnr_affine
from isonet.psf import isotropic_psf, make_psf, psf_from_acquisition
from isonet.storage import Acquisition, ChannelInfo
from isonet.synthetic import make_dataset

CHANNELS = (("GFP", 488, 510), ("mCherry", 561, 610))
VOXEL = (0.8, 0.2, 0.2)


def ome_xml(shape) -> str:
    t, c, z, y, x = shape
    channels = "".join(
        f'<Channel ID="Channel:0:{i}" Name="{name}" SamplesPerPixel="1" ExcitationWavelength="{ex}" '
        f'EmissionWavelength="{em}" PinholeSize="50" AcquisitionMode="LaserScanningConfocalMicroscopy"/>'
        for i, (name, ex, em) in enumerate(CHANNELS[:c]))
    return ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
            '<Instrument ID="Instrument:0"><Objective ID="Objective:0" LensNA="1.1" Immersion="Water" '
            'NominalMagnification="40"/></Instrument><Image ID="Image:0"><InstrumentRef ID="Instrument:0"/>'
            '<ObjectiveSettings ID="Objective:0"/>'
            f'<Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" SizeX="{x}" SizeY="{y}" SizeZ="{z}" '
            f'SizeC="{c}" SizeT="{t}" PhysicalSizeX="{VOXEL[2]}" PhysicalSizeY="{VOXEL[1]}" '
            f'PhysicalSizeZ="{VOXEL[0]}" TimeIncrement="30" TimeIncrementUnit="s">{channels}<TiffData/>'
            '</Pixels></Image></OME>')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[32, 64, 64], help="isotropic (z, y, x) of each volume")
    p.add_argument("--times", type=int, default=3)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--n-patches", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default=None)
    p.add_argument("--out-json", default=None)
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="isonet-timelapse-"))
    work.mkdir(parents=True, exist_ok=True)
    factor = round(VOXEL[0] / VOXEL[2])
    acquisition = Acquisition(
        channels=tuple(ChannelInfo(n, ex, em, 50.0) for n, ex, em in CHANNELS), na=1.1, immersion="Water",
        magnification=40.0, microscope="confocal", voxel_size=VOXEL, source="OME-XML")
    n_t, n_c = args.times, len(CHANNELS)
    iso = tuple(args.shape)
    stack = np.zeros((n_t, n_c, -(-iso[0] // factor), *iso[1:]), np.uint16)
    truth = {}
    for c in range(n_c):
        kind, params, _ = psf_from_acquisition(acquisition, c)
        h = make_psf(kind, **params)
        for t in range(n_t):
            ds = make_dataset("nuclei", iso, h, isotropic_psf(h), factor, seed=10 * c + t, photons=500)
            stack[t, c], truth[t, c] = ds.acquired, ds.iso_gt
    source = work / "series.ome.tif"
    tifffile.imwrite(source, stack, description=ome_xml(stack.shape), metadata=None, photometric="minisblack")
    seconds: dict[str, float] = {}

    def run(name: str, *argv) -> None:
        t0 = time.perf_counter()
        if isonet([str(a) for a in argv]) != 0:
            raise SystemExit(f"isonet {argv[0]} failed")
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0

    threads = ["--threads", args.threads]
    run("convert", "convert", source, work / "series.zarr", "--chunks", 8, iso[1], iso[2])
    parts = []
    for c in range(n_c):
        run("psf", "psf", "--out-npz", work / f"psf{c}.npz", "--out-json", work / f"psf{c}.json", "--kind", "auto",
            "--from", work / "series.zarr", "--channel", c)
        run("patches", "patches", work / "series.zarr", work / f"psf{c}.npz", work / f"patches{c}.npz", "--channel", c,
            "--n-timepoints", 2, "--n-patches", args.n_patches, "--patch-size", 32)
        run("train", "train", work / f"patches{c}.npz", work / f"psf{c}.json", work / f"model{c}.safetensors",
            work / f"training{c}.tsv", "--steps", args.steps, "--batch-size", 16, "--warmup-steps", 10, *threads)
        for t in range(n_t):
            out = work / f"restored_t{t}_c{c}.zarr"
            run("predict", "predict", work / "series.zarr", work / f"model{c}.safetensors", out, "--channel", c,
                "--time", t, "--chunks", 32, iso[1], iso[2], "--block", 32, iso[1], iso[2], *threads)
            parts += ["--part", t, c, out]
    run("assemble", "assemble", work / "series.zarr", work / "restored.zarr", *parts, "--levels", 2)
    restored = zarr.open_group(work / "restored.zarr", mode="r")["0"]
    rows = []
    for c in range(n_c):
        for t in range(n_t):
            r = restored[t, c]
            cubic = cubic_upsample(stack[t, c].astype(np.float32), factor)
            n = min(r.shape[0], cubic.shape[0], truth[t, c].shape[0])
            rows.append({"channel": CHANNELS[c][0], "time": t,
                         "psnr_restored": round(psnr_affine(r[:n], truth[t, c][:n]), 2),
                         "psnr_cubic": round(psnr_affine(cubic[:n], truth[t, c][:n]), 2)})
            print(f"{CHANNELS[c][0]:8s} t={t}: restored {rows[-1]['psnr_restored']:.2f} dB, "
                  f"cubic {rows[-1]['psnr_cubic']:.2f} dB")
    print("wall seconds:", {k: round(v, 1) for k, v in seconds.items()})
    result = {"shape_iso": list(iso), "times": n_t, "steps": args.steps, "n_patches": args.n_patches,
              "output_shape": list(restored.shape), "psnr": rows, "seconds": seconds}
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
