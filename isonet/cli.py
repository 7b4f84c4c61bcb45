"""``isonet`` command line: one subcommand per workflow stage.

Each subcommand is a thin call into :mod:`isonet.stages`. Errors in the user's input end the
command with a one-line message on stderr and exit status 2; a failed read or write (a full disk)
with a one-line message and exit status 1; ``verify`` exits with status 1 when it finds a problem
in the store.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({exc})") from None


def _opt_int(text: str):
    return None if text in ("", "none", "None", "null") else int(text)


def _camera(text: str):
    return text if text in ("auto", "none") else _json(text)


def _opt_float(text: str):
    return None if text in ("", "none", "None", "null") else float(text)


def _opt_factor(text: str):
    """An axial factor σ >= 1 (``4``, ``4.5``), or None for the input's voxel-size ratio."""
    return None if text in ("", "none", "None", "null") else _factor(text)


def _checked(convert, test, expected: str):
    """An argparse type: ``convert(text)``, refused unless ``test(value)``; named after what it expects."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}")
        return value

    parse.__name__ = expected  # argparse names the type in some messages
    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_count = _checked(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _checked(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
_factor = _checked(float, lambda v: math.isfinite(v) and v >= 1, "a number >= 1")
_fraction = _checked(float, lambda v: 0 <= v < 1, "a fraction in [0, 1)")
_zstd_level = _checked(int, lambda v: -131072 <= v <= 22, "a zstd level (at most 22)")
_batch = _checked(lambda t: t if t == "auto" else int(t), lambda v: v == "auto" or v >= 1, "a positive integer or auto")


def _shard(text: str):
    from isonet.stages.predict import parse_shard

    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="isonet", description=__doc__.splitlines()[0])
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synthetic", help="generate the synthetic phantom dataset (TIFFs)")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--shape", type=_positive_int, nargs=3, default=[256, 256, 256])
    s.add_argument("--kind", default="nuclei")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--pixel-size", type=_positive_float, default=0.2, help="isotropic voxel size of the phantom (µm)")
    s.add_argument("--subsample", type=_factor, default=4, help="axial step σ in phantom voxels (4, 4.5, ...)")
    s.add_argument("--psf-kind", default="gaussian")
    s.add_argument("--psf-params", type=_json, default=None, help="JSON dict of PSF parameters")
    s.add_argument("--photons", type=float, default=200.0)
    s.add_argument("--read-noise", type=float, default=2.0)
    s.add_argument("--offset", type=float, default=100.0)

    s = sub.add_parser("convert", help="TIFF / OME-TIFF / Zarr -> chunked OME-Zarr")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--chunks", type=_positive_int, nargs=3, default=[64, 256, 256])
    s.add_argument("--voxel-size", type=float, nargs=3, default=None, help="z y x in µm (overrides the file)")
    s.add_argument("--compression-level", type=_zstd_level, default=3)
    s.add_argument("--levels", type=_positive_int, default=2)
    s.add_argument("--axes", default=None,
                   help="the input's axes, one letter per axis from T C Z Y X (e.g. TCZYX), when the file does not say")
    s.add_argument("--channels", nargs="+", default=None, help="channels to keep, by index or name (default: all)")
    s.add_argument("--timepoints", type=_count, nargs="+", default=None, help="time points to keep (default: all)")

    s = sub.add_parser("psf", help="build the PSF, h_rot, h_iso and the training kernel")
    s.add_argument("--out-npz", required=True)
    s.add_argument("--out-json", required=True)
    s.add_argument("--kind", default="gaussian")
    s.add_argument("--params", type=_json, default=None, help="JSON dict of PSF parameters")
    s.add_argument("--mode", default="full", choices=["full", "split"])
    s.add_argument("--measured", default=None, help="bead stack TIFF for kind 'measured' (wins over auto)")
    s.add_argument("--from", dest="source", default=None,
                   help="kind 'auto': the input image whose metadata (OME-XML, or a converted store) give the optics; "
                        "--params then holds values that override them (na, immersion_ri, excitation_nm, ...)")
    s.add_argument("--channel", type=_count, default=0, help="kind 'auto': the channel whose PSF is built")
    s.add_argument("--axes", default=None, help="kind 'auto': the --from image's axes when the file does not say")

    s = sub.add_parser("patches", help="sample training pairs from lateral planes")
    s.add_argument("input_zarr")
    s.add_argument("psf_npz")
    s.add_argument("out_npz")
    s.add_argument("--subsample", type=_opt_factor, default=None,
                   help="axial factor σ (default: voxel size z / x; need not be an integer)")
    s.add_argument("--n-patches", type=_positive_int, default=4000)
    s.add_argument("--patch-size", type=int, default=64)
    s.add_argument("--foreground-percentile", type=float, default=90.0)
    s.add_argument("--foreground-fraction", type=float, default=0.8)
    s.add_argument("--norm-percentiles", type=float, nargs=2, default=[1.0, 99.8])
    s.add_argument("--max-planes", type=_positive_int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--camera", type=_camera, default="auto",
                   help='the camera\'s noise, put on the training inputs: auto (estimated from the volume), none, '
                        'or JSON {"offset": counts, "read_noise": counts, "gain": counts/photon}')
    s.add_argument("--validation-fraction", type=float, default=0.1,
                   help="share of the lateral planes held out for validation")
    s.add_argument("--channel", type=_count, default=None, help="time-lapse or multi-channel input: the channel")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--timepoints", type=_count, nargs="+", default=None,
                   help="time points whose planes are sampled (default: all)")
    g.add_argument("--n-timepoints", type=_positive_int, default=None,
                   help="sample planes from this many time points spread over the series")

    s = sub.add_parser("train", help="train the network on the patches")
    s.add_argument("patches_npz")
    s.add_argument("psf_json")
    s.add_argument("model_out")
    s.add_argument("curve_tsv")
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--model", default="isonet2")
    s.add_argument("--epochs", type=_positive_int, default=10)
    s.add_argument("--steps", type=_opt_int, default=None, help="optimiser steps (replaces --epochs)")
    s.add_argument("--minutes", type=_opt_float, default=None, help="stop after this many minutes of training")
    s.add_argument("--batch-size", type=_positive_int, default=16)
    s.add_argument("--learning-rate", type=_positive_float, default=5e-3)
    s.add_argument("--validation-fraction", type=_fraction, default=0.1)
    s.add_argument("--dropout", type=_fraction, default=0.2)
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=_positive_int, default=None)
    s.add_argument("--lr-patience", type=_opt_int, default=None,
                   help="halve the learning rate after this many epochs without improvement (default: constant)")
    s.add_argument("--warmup-steps", type=_count, default=100,
                   help="ramp the learning rate up over this many first steps (0: none, as in the paper)")
    s.add_argument("--schedule", default="plateau", choices=["plateau", "cosine"],
                   help="after the warm-up: plateau (constant, halved by --lr-patience) or cosine (down to 0 "
                        "at the end of the step or time budget)")
    s.add_argument("--input", dest="input_zarr", default=None,
                   help="the converted input the patches came from (needed for --rounds > 1)")
    s.add_argument("--rounds", type=_positive_int, default=1,
                   help="self-supervised rounds: each after the first fine-tunes on the restoration's lateral planes")
    s.add_argument("--refine-steps", type=_positive_int, default=200, help="optimiser steps of each later round")
    s.add_argument("--refine-planes", type=_checked(int, lambda v: v >= 8, "an integer >= 8"), default=96,
                   help="central planes restored for each later round's pairs")

    s = sub.add_parser("predict", help="block-wise axial restoration into an OME-Zarr")
    s.add_argument("input_zarr")
    s.add_argument("model")
    s.add_argument("output_zarr")
    s.add_argument("--chunks", type=_positive_int, nargs=3, default=[64, 128, 128])
    s.add_argument("--block", type=_positive_int, nargs=3, default=[256, 512, 512])
    s.add_argument("--combine", default="mean", choices=["mean", "geometric"])
    s.add_argument("--tta", action="store_true",
                   help="average over the slice flips that commute with the PSF (test-time augmentation)")
    s.add_argument("--edges", default="mirror", choices=["mirror", "clip"],
                   help="past the volume's edges: a mirrored halo, or none (slices padded to the size multiple)")
    s.add_argument("--batch-size", type=_batch, default="auto",
                   help="slices per forward pass (default auto: sized for the device)")
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    s.add_argument("--workers", type=_positive_int, default=1)
    s.add_argument("--threads", type=_positive_int, default=None)
    s.add_argument("--subsample", type=_opt_factor, default=None,
                   help="axial factor σ (default: voxel size z / x; need not be an integer)")
    s.add_argument("--channel", type=_count, default=None, help="time-lapse or multi-channel input: the channel")
    s.add_argument("--time", type=_count, default=None, help="time-lapse input: the time point")
    s.add_argument("--uncertainty", default=None,
                   help="also write the per-voxel disagreement of the xz and yz passes to this OME-Zarr")
    step = s.add_mutually_exclusive_group()
    step.add_argument("--init", action="store_const", const="init", dest="step",
                      help="only create <output>.partial for --shard jobs to fill")
    step.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                      help="only compute blocks I, I+N, I+2N, ... into <output>.partial (after --init; "
                           "shards may run at the same time)")
    step.add_argument("--finish", action="store_const", const="finish", dest="step",
                      help="check that every block is done and move <output>.partial to <output>")
    s.add_argument("--done", default=None, metavar="FILE", help="write FILE (a JSON summary) when done")

    s = sub.add_parser("assemble", help="restored (time point, channel) volumes -> one TCZYX OME-Zarr (+ ImageJ TIFF)")
    s.add_argument("source_zarr", help="the converted input (its axes, time step and channel names)")
    s.add_argument("output_zarr")
    s.add_argument("--part", nargs=3, action="append", required=True, metavar=("T", "C", "STORE"),
                   help="time point, channel and restored store (`isonet predict --time T --channel C`); repeat")
    s.add_argument("--levels", type=_positive_int, default=3)
    s.add_argument("--tiff", default=None, help="also export this ImageJ hyperstack TIFF")

    s = sub.add_parser("stitch", help="final OME-Zarr with pyramid (+ TIFF export)")
    s.add_argument("predicted_zarr")
    s.add_argument("output_zarr")
    s.add_argument("--levels", type=_positive_int, default=3)
    s.add_argument("--tiff", default=None, help="also export this TIFF")

    s = sub.add_parser(
        "convert-model",
        help="convert an old pickle model file (model.pt) to safetensors; reading a pickle file "
             "can EXECUTE code it contains, so convert only files you trust",
        description="Convert an old pickle model file (model.pt) to a safetensors model file. "
                    "The old file is read with torch.load(weights_only=True), which rebuilds only tensors and plain "
                    "values; a file holding anything else is refused unless --trust is given. With --trust the file "
                    "is unpickled in full, which EXECUTES any code it contains: use it only on files you trust.",
    )
    s.add_argument("old", help="model file in the old pickle format")
    s.add_argument("new", help="safetensors model file to write (e.g. model.safetensors)")
    s.add_argument("--trust", action="store_true",
                   help="unpickle the old file in full (weights_only=False): EXECUTES any code it contains")

    s = sub.add_parser("export-tiff", help="export an OME-Zarr image (level 0) to TIFF, plane by plane")
    s.add_argument("zarr")
    s.add_argument("tiff")

    s = sub.add_parser("export-ngff04", help="export an OME-Zarr image (all levels, and labels) as NGFF 0.4 on "
                       "Zarr v2, chunk by chunk, for MoBIE / Fiji / BigDataViewer")
    s.add_argument("zarr")
    s.add_argument("output")
    s.add_argument("--labels", default=None, help="label image (OME-Zarr) on the same grid, written as labels/<name>")
    s.add_argument("--labels-name", default="nuclei")
    s.add_argument("--compression-level", type=_checked(int, lambda v: 1 <= v <= 9, "a zlib level (1-9)"), default=1)

    s = sub.add_parser("verify", help="check a whole OME-Zarr store: metadata, every chunk present and "
                       "matching its checksum (exit 1 on any problem)")
    s.add_argument("path")
    s.add_argument("--workers", type=int, default=2, help="chunks read and decoded at once")

    s = sub.add_parser("benchmark-cell", help="one synthetic benchmark cell (phantom, PSF, stack) -> JSON")
    s.add_argument("out_json")
    s.add_argument("--phantom", required=True, choices=["nuclei", "membranes", "both"])
    s.add_argument("--psf-name", required=True, help="name of the PSF in the table")
    s.add_argument("--psf-kind", required=True)
    s.add_argument("--psf-params", type=_json, default=None, help="JSON dict of PSF parameters")
    s.add_argument("--stack", type=int, default=0)
    s.add_argument("--settings", type=_json, default=None, help="JSON dict of isonet.benchmark.CellSettings")
    s.add_argument("--threads", type=_positive_int, default=None)
    s.add_argument("--tuned", default=None, help="benchmark-tune JSON: its chosen learning rates and dropouts")
    s.add_argument("--stack-npz", default=None, help="also write the simulated stack here (for a peer method)")

    s = sub.add_parser("benchmark-tune", help="learning rate and dropout per architecture on a validation stack -> JSON")
    s.add_argument("out_json")
    s.add_argument("--phantom", required=True, choices=["nuclei", "membranes", "both"])
    s.add_argument("--psf-name", required=True, help="name of the PSF in the table")
    s.add_argument("--psf-kind", required=True)
    s.add_argument("--psf-params", type=_json, default=None, help="JSON dict of PSF parameters")
    s.add_argument("--grid", type=_json, required=True, help='JSON {"learning_rate": [...], "dropout": [...]}')
    s.add_argument("--settings", type=_json, default=None, help="JSON dict of isonet.benchmark.CellSettings")
    s.add_argument("--threads", type=int, default=None)

    s = sub.add_parser("benchmark-table", help="benchmark cell (and peer) JSONs -> Table 1 (markdown)")
    s.add_argument("cell_jsons", nargs="+")
    s.add_argument("--out-md", required=True)
    s.add_argument("--notes", default=None, help="markdown file appended to the table")
    s.add_argument("--tuned", default=None, help="benchmark-tune JSON, described in the header")

    s = sub.add_parser("segment", help="nuclei segmentation (intermodes + EDT watershed)")
    s.add_argument("image_zarr")
    s.add_argument("labels_zarr", help="output: <image_zarr>/labels/<name> writes NGFF labels of the image "
                   "(what the workflow does); any other path a separate OME-Zarr")
    s.add_argument("--summary-json", default=None)
    s.add_argument("--threshold", type=_opt_float, default=None)
    s.add_argument("--min-distance", type=int, default=5)
    s.add_argument("--min-size", type=int, default=64)
    s.add_argument("--block", type=_positive_int, nargs=3, default=[64, 128, 128],
                   help="z y x voxels segmented at a time (rounded up to whole chunks)")
    s.add_argument("--halo", type=int, default=40,
                   help="voxels read around each block; at least the largest nucleus' extent + 4")
    s.add_argument("--max-window", type=_positive_int, default=1 << 23,
                   help="most voxels read to gather one blob whole; larger blobs (merged nuclei) are split "
                        "in each block's window, which bounds memory")
    s.add_argument("--channel", default=None,
                   help="time-lapse / multi-channel image: the channel segmented (index or name), every time point")

    s = sub.add_parser("evaluate", help="PSNR and SEG against ground truth")
    s.add_argument("input_zarr")
    s.add_argument("restored_zarr")
    s.add_argument("restored_labels_zarr")
    s.add_argument("out_json")
    s.add_argument("out_md")
    s.add_argument("--gt", default=None)
    s.add_argument("--iso-gt", default=None)
    s.add_argument("--gt-labels", default=None)
    s.add_argument("--subsample", type=_opt_factor, default=None,
                   help="axial factor σ (default: voxel size z / x; need not be an integer)")
    s.add_argument("--min-distance", type=int, default=5)
    s.add_argument("--min-size", type=int, default=64)
    s.add_argument("--block", type=_positive_int, nargs=3, default=[64, 128, 128],
                   help="z y x voxels segmented at a time (input and iso-GT segmentations)")
    s.add_argument("--halo", type=int, default=40, help="voxels read around each block")
    s.add_argument("--max-window", type=_positive_int, default=1 << 23,
                   help="most voxels read to gather one blob whole (input and iso-GT segmentations)")
    s.add_argument("--z-margin", type=float, default=26.0,
                   help="interior SEG: GT nuclei whose centroid is at least this many planes from both z-ends")

    s = sub.add_parser("evaluate-series", help="time-lapse / multi-channel: PSNR of every (time point, channel) "
                       "volume against ground truth, restored and cubic")
    s.add_argument("input_zarr")
    s.add_argument("restored_zarr")
    s.add_argument("out_json")
    s.add_argument("out_md")
    s.add_argument("--gt", default=None, help="ground truth with the input file's time points and channels")
    s.add_argument("--iso-gt", default=None, help="isotropic ground truth, as --gt")
    s.add_argument("--subsample", type=_opt_factor, default=None,
                   help="axial factor σ (default: voxel size z / x; need not be an integer)")

    s = sub.add_parser("assess", help="evidence without ground truth: resolution per axis, re-acquisition check, "
                       "uncertainty summary -> quality.json")
    s.add_argument("input_zarr")
    s.add_argument("restored_zarr")
    s.add_argument("psf_npz", help="the psf stage's psf.npz (the acquisition PSF)")
    s.add_argument("out_json")
    s.add_argument("--html", default=None, help="also write the tables as HTML (report)")
    s.add_argument("--uncertainty", default=None, help="OME-Zarr from isonet predict --uncertainty")
    s.add_argument("--uncertainty-png", default=None, help="orthogonal views of restoration and uncertainty (PNG)")
    s.add_argument("--iso-gt", default=None, help="isotropic ground truth: its re-acquisition score is the reference")
    s.add_argument("--subsample", type=_opt_int, default=None)
    s.add_argument("--block", type=_positive_int, default=128, help="side of the sampled blocks")
    s.add_argument("--blocks", type=_positive_int, default=16, help="number of sampled blocks")
    s.add_argument("--title", default=None)

    s = sub.add_parser("export-bioimageio", help="package a model file as a BioImage Model Zoo model (spec 0.5 zip)")
    s.add_argument("model")
    s.add_argument("out_zip")
    s.add_argument("--name", default=None)
    s.add_argument("--author", action="append", default=None, help="author name (repeatable)")
    s.add_argument("--validate", action="store_true",
                   help="validate with bioimageio.spec and run the test tensors with bioimageio.core "
                        "(needs the optional extra isonet[bioimageio])")

    s = sub.add_parser("import-bioimageio", help="turn a package from export-bioimageio back into an isonet model file")
    s.add_argument("package")
    s.add_argument("model_out")

    s = sub.add_parser("orthoviews", help="report figure: xy/xz/yz views of input, restoration and GT (PNG)")
    s.add_argument("out_png")
    s.add_argument("--input", required=True, help="converted input OME-Zarr")
    s.add_argument("--restored", required=True, help="restored OME-Zarr")
    s.add_argument("--gt", default=None, help="ground truth on the isotropic grid (TIFF or OME-Zarr)")
    s.add_argument("--title", default=None)
    s.add_argument("--max-plane-size", type=_positive_int, default=1024, help="largest plane side drawn (pyramid level)")
    s.add_argument("--time", type=_count, default=None, help="time-lapse input and restoration: the time point drawn")
    s.add_argument("--channel", type=_count, default=None, help="multi-channel input and restoration: the channel drawn")

    s = sub.add_parser("training-curve", help="report figure: training.tsv as a PNG")
    s.add_argument("curve_tsv")
    s.add_argument("out_png")
    s.add_argument("--title", default=None)

    s = sub.add_parser("metrics-table", help="report table: metrics.json as HTML")
    s.add_argument("metrics_json")
    s.add_argument("out_html")
    s.add_argument("--title", default=None)
    return p


def run(args: argparse.Namespace):
    from isonet import stages  # noqa: F401  (package import keeps startup light until here)

    c = args.command
    if c == "synthetic":
        from isonet.stages.synthetic import synthetic

        return synthetic(args.out_dir, tuple(args.shape), args.kind, args.seed, args.pixel_size, args.subsample,
                         args.psf_kind, args.psf_params, args.photons, args.read_noise, args.offset)
    if c == "convert":
        from isonet.stages.convert import convert

        return convert(args.input, args.output, tuple(args.chunks), args.voxel_size, args.compression_level, args.levels,
                       axes=args.axes, channels=args.channels, timepoints=args.timepoints)
    if c == "psf":
        from isonet.stages.psf import psf_stage

        return psf_stage(args.out_npz, args.out_json, args.kind, args.params, args.mode, args.measured,
                         source_path=args.source, channel=args.channel, axes=args.axes)
    if c == "patches":
        from isonet.stages.patches import patches_stage

        return patches_stage(args.input_zarr, args.psf_npz, args.out_npz, args.subsample, args.n_patches,
                             args.patch_size, args.foreground_percentile, args.foreground_fraction,
                             tuple(args.norm_percentiles), args.max_planes, args.seed, args.camera,
                             args.validation_fraction, channel=args.channel,
                             timepoints=args.n_timepoints if args.n_timepoints is not None else args.timepoints)
    if c == "train":
        from isonet.stages.train import train_stage

        return train_stage(args.patches_npz, args.psf_json, args.model_out, args.curve_tsv, args.checkpoint, args.model,
                           args.epochs, args.steps, args.minutes, args.batch_size, args.learning_rate,
                           args.validation_fraction, args.dropout, args.device, args.precision, args.seed,
                           args.threads, args.lr_patience, args.warmup_steps,
                           args.schedule, args.input_zarr, args.rounds, args.refine_steps, args.refine_planes)
    if c == "predict":
        from isonet.stages.predict import predict_stage

        batch = None if args.batch_size == "auto" else args.batch_size
        return predict_stage(args.input_zarr, args.model, args.output_zarr, tuple(args.chunks), tuple(args.block),
                             args.combine, batch, args.device, args.precision, args.workers, args.threads,
                             subsample=args.subsample, tta=args.tta, edges=args.edges,
                             step="shard" if args.shard else (args.step or "all"), shard=args.shard or (0, 1),
                             done_file=args.done, channel=args.channel, time=args.time,
                             uncertainty_zarr=args.uncertainty)
    if c == "assemble":
        from isonet.errors import InputError
        from isonet.stages.assemble import assemble_stage

        parts = []
        for t, ch, store in args.part:
            if not (t.isdigit() and ch.isdigit()):
                raise InputError(f"--part {t} {ch} {store}: time point and channel must be non-negative integers")
            parts.append((int(t), int(ch), store))
        return assemble_stage(args.source_zarr, parts, args.output_zarr, args.levels, args.tiff)
    if c == "stitch":
        from isonet.stages.stitch import stitch_stage

        return stitch_stage(args.predicted_zarr, args.output_zarr, args.levels, args.tiff)
    if c == "convert-model":
        from isonet.modelfile import convert_legacy_model

        return convert_legacy_model(args.old, args.new, trust=args.trust)
    if c == "export-tiff":
        from isonet.stages.common import check_output_path
        from isonet.storage import export_hyperstack_tiff, export_tiff, image_axes, open_hyperstack, read_ome_zarr

        check_output_path(args.tiff, [args.zarr])
        array, voxel_size = read_ome_zarr(args.zarr)
        if array.ndim > 3:  # a time-lapse and/or multi-channel image: an ImageJ hyperstack
            stack = open_hyperstack(args.zarr)
            return export_hyperstack_tiff(array, image_axes(args.zarr), args.tiff, voxel_size,
                                          stack.acquisition.time_increment_s)
        return export_tiff(array, args.tiff, voxel_size)
    if c == "export-ngff04":
        from isonet.stages.export import export_ngff04_stage

        return export_ngff04_stage(args.zarr, args.output, args.labels, args.labels_name, args.compression_level)
    if c == "verify":
        from isonet.stages.verify import verify_store

        report = verify_store(args.path, on_problem=lambda line: print(line, flush=True), workers=args.workers)
        print(report["summary"])
        return report
    if c == "benchmark-cell":
        from isonet.stages.benchmark import benchmark_cell_stage

        return benchmark_cell_stage(args.out_json, args.phantom, args.psf_name, args.psf_kind, args.psf_params,
                                    args.stack, args.settings, args.threads, args.tuned, args.stack_npz)
    if c == "benchmark-tune":
        from isonet.stages.benchmark import benchmark_tune_stage

        return benchmark_tune_stage(args.out_json, args.phantom, args.psf_name, args.psf_kind, args.psf_params,
                                    args.grid, args.settings, args.threads)
    if c == "benchmark-table":
        from pathlib import Path

        from isonet.stages.benchmark import benchmark_table_stage

        notes = Path(args.notes).read_text() if args.notes else None
        return benchmark_table_stage(args.cell_jsons, args.out_md, notes, args.tuned)
    if c == "segment":
        from isonet.stages.segment import segment_stage

        return segment_stage(args.image_zarr, args.labels_zarr, args.summary_json, args.threshold, args.min_distance,
                             args.min_size, block=args.block, halo=args.halo, channel=args.channel,
                             max_window=args.max_window)
    if c == "evaluate":
        from isonet.stages.evaluate import evaluate_stage

        return evaluate_stage(args.input_zarr, args.restored_zarr, args.restored_labels_zarr, args.out_json,
                              args.out_md, args.gt, args.iso_gt, args.gt_labels, args.subsample, args.min_distance,
                              args.min_size, block=args.block, halo=args.halo, z_margin=args.z_margin,
                              max_window=args.max_window)
    if c == "evaluate-series":
        from isonet.stages.evaluate import evaluate_series_stage

        return evaluate_series_stage(args.input_zarr, args.restored_zarr, args.out_json, args.out_md, args.gt,
                                     args.iso_gt, args.subsample)
    if c == "assess":
        from isonet.stages.assess import assess_stage

        return assess_stage(args.input_zarr, args.restored_zarr, args.psf_npz, args.out_json, args.html,
                            args.uncertainty, args.uncertainty_png, args.iso_gt, args.subsample, args.block,
                            args.blocks, args.title)
    if c == "export-bioimageio":
        from isonet.stages.bioimageio import export_bioimageio_stage, validate_bioimageio_package

        result = export_bioimageio_stage(args.model, args.out_zip, args.name, tuple(args.author or ("isonet user",)))
        if args.validate:
            result["validation"] = validate_bioimageio_package(args.out_zip)
            print(result["validation"]["summary"])
            if result["validation"]["status"] != "passed":
                from isonet.errors import InputError

                raise InputError(f"{args.out_zip}: bioimage.io validation {result['validation']['status']}; "
                                 "see the summary above")
        return result
    if c == "import-bioimageio":
        from isonet.stages.bioimageio import import_bioimageio_stage

        return import_bioimageio_stage(args.package, args.model_out)
    if c == "orthoviews":
        from isonet.stages.report import orthoviews_stage

        return orthoviews_stage(args.out_png, args.input, args.restored, args.gt, args.title, args.max_plane_size,
                                t=args.time, c=args.channel)
    if c == "training-curve":
        from isonet.stages.report import training_curve_stage

        return training_curve_stage(args.curve_tsv, args.out_png, args.title)
    if c == "metrics-table":
        from isonet.stages.report import metrics_table_stage

        return metrics_table_stage(args.metrics_json, args.out_html, args.title)
    raise AssertionError(c)


#: glibc's M_MMAP_THRESHOLD (malloc.h)
_M_MMAP_THRESHOLD = -3


def return_large_frees_to_the_os(threshold: int = 1 << 20) -> bool:
    """Allocate blocks of ``threshold`` bytes or more with mmap, so that freeing them returns them to the OS.

    glibc raises its mmap threshold (up to 32 MiB) each time a mapped block is freed, after which
    blocks of a stage's working size (a window, a chunk being decoded) come from the heaps of its
    threads and stay resident there once freed: a stage's peak RSS then follows how many blocks it
    went through, not its largest working set. A fixed threshold keeps such blocks mapped. Returns
    whether it was set (glibc only; elsewhere nothing changes).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)) == 1)
    except (OSError, AttributeError):
        return False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return_large_frees_to_the_os()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from isonet.errors import InputError

    t0 = time.perf_counter()
    try:
        result = run(args)
    except InputError as exc:  # anything else is a bug in isonet and keeps its traceback
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"isonet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # full disk, quota, I/O error: no traceback, and what to do
        where = f"{exc.filename}: " if exc.filename else ""
        what = " ".join(str(exc.strerror or exc).split())
        print(f"isonet {args.command}: error: {where}{what}; nothing partial was kept as "
              "finished, fix the cause (e.g. free disk space) and run the same command again", file=sys.stderr)
        return 1
    if args.command == "verify" and result["problems"]:
        return 1
    logging.getLogger("isonet").info("%s finished in %.1f s", args.command, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
