"""``isonet`` command line: one subcommand per workflow stage.

Each subcommand is a thin call into :mod:`isonet.stages`. Errors in the user's input end the
command with a one-line message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="isonet", description=__doc__.splitlines()[0])
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synthetic", help="generate the synthetic phantom dataset (TIFFs)")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--shape", type=int, nargs=3, default=[256, 256, 256])
    s.add_argument("--kind", default="nuclei")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--pixel-size", type=float, default=0.2, help="isotropic voxel size of the phantom (µm)")
    s.add_argument("--subsample", type=int, default=4)
    s.add_argument("--psf-kind", default="gaussian")
    s.add_argument("--psf-params", type=_json, default=None, help="JSON dict of PSF parameters")
    s.add_argument("--photons", type=float, default=200.0)
    s.add_argument("--read-noise", type=float, default=2.0)
    s.add_argument("--offset", type=float, default=100.0)

    s = sub.add_parser("convert", help="TIFF / OME-TIFF / Zarr -> chunked OME-Zarr")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--chunks", type=int, nargs=3, default=[64, 256, 256])
    s.add_argument("--voxel-size", type=float, nargs=3, default=None, help="z y x in µm (overrides the file)")
    s.add_argument("--compression-level", type=int, default=3)
    s.add_argument("--levels", type=int, default=2)

    s = sub.add_parser("psf", help="build the PSF, h_rot, h_iso and the training kernel")
    s.add_argument("--out-npz", required=True)
    s.add_argument("--out-json", required=True)
    s.add_argument("--kind", default="gaussian")
    s.add_argument("--params", type=_json, default=None, help="JSON dict of PSF parameters")
    s.add_argument("--mode", default="full", choices=["full", "split"])
    s.add_argument("--measured", default=None, help="bead stack TIFF for kind 'measured'")

    s = sub.add_parser("patches", help="sample training pairs from lateral planes")
    s.add_argument("input_zarr")
    s.add_argument("psf_npz")
    s.add_argument("out_npz")
    s.add_argument("--subsample", type=_opt_int, default=None)
    s.add_argument("--n-patches", type=int, default=4000)
    s.add_argument("--patch-size", type=int, default=64)
    s.add_argument("--foreground-percentile", type=float, default=90.0)
    s.add_argument("--foreground-fraction", type=float, default=0.8)
    s.add_argument("--norm-percentiles", type=float, nargs=2, default=[1.0, 99.8])
    s.add_argument("--max-planes", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--camera", type=_camera, default="auto",
                   help='the camera\'s noise, put on the training inputs: auto (estimated from the volume), none, '
                        'or JSON {"offset": counts, "read_noise": counts, "gain": counts/photon}')
    s.add_argument("--validation-fraction", type=float, default=0.1,
                   help="share of the lateral planes held out for validation")

    s = sub.add_parser("train", help="train the network on the patches")
    s.add_argument("patches_npz")
    s.add_argument("psf_json")
    s.add_argument("model_out")
    s.add_argument("curve_tsv")
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--model", default="isonet2")
    s.add_argument("--epochs", type=int, default=10)
    s.add_argument("--steps", type=_opt_int, default=None, help="optimiser steps (replaces --epochs)")
    s.add_argument("--minutes", type=_opt_float, default=None, help="stop after this many minutes of training")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--learning-rate", type=float, default=5e-3)
    s.add_argument("--validation-fraction", type=float, default=0.1)
    s.add_argument("--dropout", type=float, default=0.2)
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--lr-patience", type=_opt_int, default=None,
                   help="halve the learning rate after this many epochs without improvement (default: constant)")
    s.add_argument("--warmup-steps", type=int, default=100,
                   help="ramp the learning rate up over this many first steps (0: none, as in the paper)")

    s = sub.add_parser("predict", help="block-wise axial restoration into an OME-Zarr")
    s.add_argument("input_zarr")
    s.add_argument("model")
    s.add_argument("output_zarr")
    s.add_argument("--chunks", type=int, nargs=3, default=[64, 128, 128])
    s.add_argument("--block", type=int, nargs=3, default=[128, 256, 256])
    s.add_argument("--combine", default="mean", choices=["mean", "geometric"])
    s.add_argument("--tta", action="store_true",
                   help="average over the slice flips that commute with the PSF (test-time augmentation)")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--subsample", type=_opt_int, default=None)

    s = sub.add_parser("stitch", help="final OME-Zarr with pyramid (+ TIFF export)")
    s.add_argument("predicted_zarr")
    s.add_argument("output_zarr")
    s.add_argument("--levels", type=int, default=3)
    s.add_argument("--tiff", default=None, help="also export this TIFF")

    s = sub.add_parser("export-tiff", help="export an OME-Zarr image (level 0) to TIFF, plane by plane")
    s.add_argument("zarr")
    s.add_argument("tiff")

    s = sub.add_parser("benchmark-cell", help="one synthetic benchmark cell (phantom, PSF, stack) -> JSON")
    s.add_argument("out_json")
    s.add_argument("--phantom", required=True, choices=["nuclei", "membranes", "both"])
    s.add_argument("--psf-name", required=True, help="name of the PSF in the table")
    s.add_argument("--psf-kind", required=True)
    s.add_argument("--psf-params", type=_json, default=None, help="JSON dict of PSF parameters")
    s.add_argument("--stack", type=int, default=0)
    s.add_argument("--settings", type=_json, default=None, help="JSON dict of isonet.benchmark.CellSettings")
    s.add_argument("--threads", type=int, default=None)

    s = sub.add_parser("benchmark-table", help="benchmark cell JSONs -> Table 1 (markdown)")
    s.add_argument("cell_jsons", nargs="+")
    s.add_argument("--out-md", required=True)
    s.add_argument("--notes", default=None, help="markdown file appended to the table")

    s = sub.add_parser("segment", help="nuclei segmentation (intermodes + EDT watershed)")
    s.add_argument("image_zarr")
    s.add_argument("labels_zarr")
    s.add_argument("--summary-json", default=None)
    s.add_argument("--threshold", type=_opt_float, default=None)
    s.add_argument("--min-distance", type=int, default=5)
    s.add_argument("--min-size", type=int, default=64)

    s = sub.add_parser("evaluate", help="PSNR and SEG against ground truth")
    s.add_argument("input_zarr")
    s.add_argument("restored_zarr")
    s.add_argument("restored_labels_zarr")
    s.add_argument("out_json")
    s.add_argument("out_md")
    s.add_argument("--gt", default=None)
    s.add_argument("--iso-gt", default=None)
    s.add_argument("--gt-labels", default=None)
    s.add_argument("--subsample", type=_opt_int, default=None)
    s.add_argument("--min-distance", type=int, default=5)
    s.add_argument("--min-size", type=int, default=64)

    s = sub.add_parser("orthoviews", help="report figure: xy/xz/yz views of input, restoration and GT (PNG)")
    s.add_argument("out_png")
    s.add_argument("--input", required=True, help="converted input OME-Zarr")
    s.add_argument("--restored", required=True, help="restored OME-Zarr")
    s.add_argument("--gt", default=None, help="ground truth on the isotropic grid (TIFF or OME-Zarr)")
    s.add_argument("--title", default=None)
    s.add_argument("--max-plane-size", type=int, default=1024, help="largest plane side drawn (pyramid level)")

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

        return convert(args.input, args.output, tuple(args.chunks), args.voxel_size, args.compression_level, args.levels)
    if c == "psf":
        from isonet.stages.psf import psf_stage

        return psf_stage(args.out_npz, args.out_json, args.kind, args.params, args.mode, args.measured)
    if c == "patches":
        from isonet.stages.patches import patches_stage

        return patches_stage(args.input_zarr, args.psf_npz, args.out_npz, args.subsample, args.n_patches,
                             args.patch_size, args.foreground_percentile, args.foreground_fraction,
                             tuple(args.norm_percentiles), args.max_planes, args.seed, args.camera,
                             args.validation_fraction)
    if c == "train":
        from isonet.stages.train import train_stage

        return train_stage(args.patches_npz, args.psf_json, args.model_out, args.curve_tsv, args.checkpoint, args.model,
                           args.epochs, args.steps, args.minutes, args.batch_size, args.learning_rate,
                           args.validation_fraction, args.dropout, args.device, args.precision, args.seed,
                           args.threads, args.lr_patience, args.warmup_steps)
    if c == "predict":
        from isonet.stages.predict import predict_stage

        return predict_stage(args.input_zarr, args.model, args.output_zarr, tuple(args.chunks), tuple(args.block),
                             args.combine, args.batch_size, args.device, args.precision, args.workers, args.threads,
                             subsample=args.subsample, tta=args.tta)
    if c == "stitch":
        from isonet.stages.stitch import stitch_stage

        return stitch_stage(args.predicted_zarr, args.output_zarr, args.levels, args.tiff)
    if c == "export-tiff":
        from isonet.storage import export_tiff, read_ome_zarr

        array, voxel_size = read_ome_zarr(args.zarr)
        return export_tiff(array, args.tiff, voxel_size)
    if c == "benchmark-cell":
        from isonet.stages.benchmark import benchmark_cell_stage

        return benchmark_cell_stage(args.out_json, args.phantom, args.psf_name, args.psf_kind, args.psf_params,
                                    args.stack, args.settings, args.threads)
    if c == "benchmark-table":
        from pathlib import Path

        from isonet.stages.benchmark import benchmark_table_stage

        notes = Path(args.notes).read_text() if args.notes else None
        return benchmark_table_stage(args.cell_jsons, args.out_md, notes)
    if c == "segment":
        from isonet.stages.segment import segment_stage

        return segment_stage(args.image_zarr, args.labels_zarr, args.summary_json, args.threshold, args.min_distance,
                             args.min_size)
    if c == "evaluate":
        from isonet.stages.evaluate import evaluate_stage

        return evaluate_stage(args.input_zarr, args.restored_zarr, args.restored_labels_zarr, args.out_json,
                              args.out_md, args.gt, args.iso_gt, args.gt_labels, args.subsample, args.min_distance,
                              args.min_size)
    if c == "orthoviews":
        from isonet.stages.report import orthoviews_stage

        return orthoviews_stage(args.out_png, args.input, args.restored, args.gt, args.title, args.max_plane_size)
    if c == "training-curve":
        from isonet.stages.report import training_curve_stage

        return training_curve_stage(args.curve_tsv, args.out_png, args.title)
    if c == "metrics-table":
        from isonet.stages.report import metrics_table_stage

        return metrics_table_stage(args.metrics_json, args.out_html, args.title)
    raise AssertionError(c)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from isonet.errors import InputError

    t0 = time.perf_counter()
    try:
        run(args)
    except InputError as exc:
        print(f"isonet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("isonet").info("%s finished in %.1f s", args.command, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
