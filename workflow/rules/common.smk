"""Helpers of the isonet workflow: config and sample-sheet validation, per-sample settings,
input functions and resources. Rules live in one file per stage; this file defines no rule.
"""

import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

try:
    import isonet
except ImportError:
    # Snakemake installed without isonet (e.g. to run with --sdm conda, where the jobs get
    # isonet from workflow/envs/isonet.yaml): the sample-sheet module is read from this checkout.
    # It needs only PyYAML and jsonschema, which Snakemake brings.
    sys.path.insert(0, str(Path(workflow.basedir).parent))
from isonet.errors import InputError
from isonet import samples as sample_sheet

SAMPLE_NAME = sample_sheet.SAMPLE_NAME
SCHEMAS = Path(workflow.basedir) / "schemas"
LABELS = "labels/nuclei"  # the segmentation, as NGFF labels inside restored.ome.zarr


wildcard_constraints:
    sample=SAMPLE_NAME,


# ------------------------------------------------------------------------------------------
# The isonet command of the rules' shell commands


def isonet_path_prefix():
    """Shell prefix putting the bin directory of the Python that runs Snakemake first on PATH.

    Rules call `isonet`; run as `.venv/bin/snakemake` with nothing activated, that is the
    venv's. With --sdm conda or apptainer the job's environment provides its own isonet;
    Snakemake runs this prefix after activating that environment, so a prepended PATH would
    shadow the environment's isonet, and nothing is prepended. SLURM jobs run Snakemake on the node with the same interpreter (shared file system),
    so they get the same prefix.
    """
    prefix = "set -euo pipefail; "
    methods = workflow.deployment_settings.deployment_method
    if DeploymentMethod.CONDA in methods or DeploymentMethod.APPTAINER in methods:
        return prefix
    bin_dir = shlex.quote(str(Path(sys.executable).parent))
    return prefix + f'export PATH={bin_dir}:"$PATH"; '


shell.prefix(isonet_path_prefix().replace("{", "{{").replace("}", "}}"))


# ------------------------------------------------------------------------------------------
# Validation: isonet.samples; a user's mistake is a one-line WorkflowError before any job


def validated_config(config):
    try:
        return sample_sheet.validate_config(config, SCHEMAS / "config.schema.yaml")
    except InputError as err:
        raise WorkflowError(str(err)) from None


def load_samples(config):
    """The validated, cross-checked sample sheet named by the config: {sample: isonet.samples.Sample}."""
    try:
        return sample_sheet.load_samples(config, SCHEMAS / "samples.schema.yaml")
    except InputError as err:
        raise WorkflowError(str(err)) from None


def load_series(samples):
    """{sample: isonet.samples.Series} of the time-lapse / multi-channel samples (file headers only)."""
    try:
        series = {
            name: sample_sheet.series_layout(row) for name, row in samples.items()
        }
    except InputError as err:
        raise WorkflowError(str(err)) from None
    return {name: layout for name, layout in series.items() if layout is not None}


def names_regex(names):
    """A wildcard constraint matching exactly these sample names (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


# ------------------------------------------------------------------------------------------
# Per-sample settings


def sample_settings(sample, section):
    """A config section for one sample (isonet.samples.sample_settings)."""
    return sample_sheet.sample_settings(SAMPLES, config, sample, section)


def settings(section):
    """Input-function form of sample_settings, for params:."""
    return lambda wildcards: sample_settings(wildcards.sample, section)


def is_synthetic(sample):
    return SAMPLES[sample].synthetic


def model_source(sample):
    """The sample whose model restores ``sample`` (itself unless model_from is set)."""
    return SAMPLES[sample].model_from or sample


def trains_model(sample):
    return model_source(sample) == sample


def ground_truth(sample):
    """{gt, iso_gt, gt_labels: path} of the ground truth a sample has."""
    if is_synthetic(sample):
        folder = f"resources/synthetic/{sample}"
        return {
            "gt": f"{folder}/gt.tif",
            "iso_gt": f"{folder}/iso_gt.tif",
            "gt_labels": f"{folder}/labels.tif",
        }
    return SAMPLES[sample].ground_truth


def quoted_json(obj):
    return shlex.quote(json.dumps(obj))


def join(values):
    return " ".join(str(v) for v in values)


# ------------------------------------------------------------------------------------------
# Input functions and command-line fragments


def camera_arg(wildcards):
    """--camera: the config's; ``auto`` on a synthetic sample is the simulation's own camera."""
    camera = sample_settings(wildcards.sample, "patches")["camera"]
    if camera == "auto" and is_synthetic(wildcards.sample):
        sim = sample_settings(wildcards.sample, "synthetic")
        camera = {"offset": sim["offset"], "read_noise": sim["read_noise"], "gain": 1.0}
    return f"--camera {quoted_json(camera) if isinstance(camera, dict) else camera}"


def tta_arg(wildcards):
    return "--tta" if sample_settings(wildcards.sample, "predict")["tta"] else ""


def predict_shards(sample):
    return int(sample_settings(sample, "predict").get("shards", 1))


def predict_options(wildcards):
    """Options every `isonet predict` step of a sample gets alike (its store is signed with them)."""
    c = sample_settings(wildcards.sample, "predict")
    return join(
        [
            "--chunks",
            *c["chunks"],
            "--block",
            *c["block"],
            "--combine",
            c["combine"],
            "--batch-size",
            c["batch_size"],
            "--device",
            c["device"],
            "--precision",
            c["precision"],
            "--workers",
            c["workers"],
            "--edges",
            c.get("edges", "clip"),
            subsample_arg(wildcards),
            tta_arg(wildcards),
            "--uncertainty",
            shlex.quote(f"{RESULTS}/{wildcards.sample}/predict/uncertainty.ome.zarr"),
        ]
    )


def predict_inputs(wildcards):
    """Input and model; with predict.shards N > 1 also the N shards' markers (rule predict then
    only checks and publishes what they computed)."""
    inputs = {
        "zarr": f"{RESULTS}/{wildcards.sample}/input.ome.zarr",
        "model": model_input(wildcards),
    }
    n = predict_shards(wildcards.sample)
    if n > 1:
        inputs["shards"] = [
            f"{RESULTS}/{wildcards.sample}/predict/shards/{i}-of-{n}.json"
            for i in range(n)
        ]
    return inputs


def predict_step_arg(wildcards):
    return "--finish" if predict_shards(wildcards.sample) > 1 else ""


def sample_input(wildcards):
    if is_synthetic(wildcards.sample):
        return f"resources/synthetic/{wildcards.sample}/acquired.tif"
    return SAMPLES[wildcards.sample].input


def convert_selection_arg(wildcards):
    """--axes / --channels / --timepoints of a time-lapse or multi-channel sample's sheet row."""
    row = SAMPLES[wildcards.sample]
    args = []
    if row.axes:
        args += ["--axes", row.axes]
    if row.channels:
        args += ["--channels", *row.channels]
    if row.timepoints:
        args += ["--timepoints", *row.timepoints]
    return join(shlex.quote(str(a)) for a in args)


def voxel_size_arg(wildcards):
    voxel_size = SAMPLES[wildcards.sample].voxel_size
    return join(["--voxel-size", *voxel_size]) if voxel_size else ""


def subsample_arg(wildcards):
    value = SAMPLES[wildcards.sample].subsample
    return f"--subsample {value}" if value is not None else ""


def psf_file_input(wildcards):
    psf = sample_settings(wildcards.sample, "psf")
    return [psf["file"]] if psf["kind"] == "measured" else []


def psf_file_arg(wildcards, input):
    return f"--measured {shlex.quote(input.bead)}" if input.get("bead") else ""


def model_input(wildcards):
    return f"{RESULTS}/{model_source(wildcards.sample)}/train/model.safetensors"


def evaluate_inputs(wildcards):
    return {
        "zarr": f"{RESULTS}/{wildcards.sample}/input.ome.zarr",
        "restored": f"{RESULTS}/{wildcards.sample}/restored.ome.zarr",
        "labels": f"{RESULTS}/{wildcards.sample}/labels.json",
        **ground_truth(wildcards.sample),
    }


def evaluate_gt_args(wildcards, input):
    flags = {"gt": "--gt", "iso_gt": "--iso-gt", "gt_labels": "--gt-labels"}
    return " ".join(
        f"{flag} {shlex.quote(input[k])}"
        for k, flag in flags.items()
        if k in input.keys()
    )


def orthoview_inputs(wildcards):
    inputs = {
        "zarr": f"{RESULTS}/{wildcards.sample}/input.ome.zarr",
        "restored": f"{RESULTS}/{wildcards.sample}/restored.ome.zarr",
    }
    truth = ground_truth(wildcards.sample)
    reference = truth.get("gt") or truth.get("iso_gt")
    if reference:
        inputs["gt"] = reference
    return inputs


def assess_inputs(wildcards):
    inputs = {
        "zarr": f"{RESULTS}/{wildcards.sample}/input.ome.zarr",
        "restored": f"{RESULTS}/{wildcards.sample}/restored.ome.zarr",
        "uncertainty": f"{RESULTS}/{wildcards.sample}/predict/uncertainty.ome.zarr",
        # the PSF the model was trained for: a model is only valid for data acquired like that
        "psf": f"{RESULTS}/{model_source(wildcards.sample)}/psf/psf.npz",
    }
    iso_gt = ground_truth(wildcards.sample).get("iso_gt")
    if iso_gt:
        inputs["iso_gt"] = iso_gt
    return inputs


def assess_iso_gt_arg(wildcards, input):
    return f"--iso-gt {shlex.quote(input.iso_gt)}" if input.get("iso_gt") else ""


def orthoview_gt_arg(wildcards, input):
    return f"--gt {shlex.quote(input.gt)}" if input.get("gt") else ""


# ------------------------------------------------------------------------------------------
# Time-lapse and multi-channel samples (rules/timelapse.smk): one model per channel c, one
# predict job per (time point t, channel c), indices counted in the converted input


def volume_samples():
    """Wildcard constraint: the 3D z-stack samples (their rules never take a series sample)."""
    return names_regex(s for s in SAMPLES if s not in SERIES)


def series_samples():
    return names_regex(SERIES)


def series_parts(sample):
    """[(t, c)] of every volume the sample restores."""
    layout = SERIES[sample]
    return [(t, c) for t in range(layout.n_times) for c in range(layout.n_channels)]


def series_prediction(sample, t, c):
    return f"{RESULTS}/{sample}/predict/t{t}_c{c}.ome.zarr"


def series_predictions(wildcards):
    return [
        series_prediction(wildcards.sample, t, c)
        for t, c in series_parts(wildcards.sample)
    ]


def series_part_args(wildcards, input):
    parts = zip(series_parts(wildcards.sample), input.parts)
    return join(f"--part {t} {c} {shlex.quote(path)}" for (t, c), path in parts)


def series_model_input(wildcards):
    """The channel's model: this sample's, or model_from's (per channel when that is a series too)."""
    source = model_source(wildcards.sample)
    if source in SERIES:
        return f"{RESULTS}/{source}/c{wildcards.c}/train/model.safetensors"
    return f"{RESULTS}/{source}/train/model.safetensors"


def psf_source_input(wildcards):
    """The converted input, which kind auto reads the optics from (3D samples: only for auto)."""
    sample = wildcards.sample
    if sample in SERIES or sample_settings(sample, "psf")["kind"] == "auto":
        return {"zarr": f"{RESULTS}/{sample}/input.ome.zarr"}
    return {}


def psf_kind_args(wildcards, input):
    """--kind/--params (and --from/--channel for kind auto) of a sample's PSF, or one channel's."""
    sample, channel = wildcards.sample, int(wildcards.get("c", 0))
    psf = sample_settings(sample, "psf")
    params = psf["params"]
    if psf["kind"] != "auto":
        return f"--kind {psf['kind']} --params {quoted_json(params)}"
    # psf.params are auto's settings only where given for this kind (not the config's other kind)
    given = (
        psf["params"]
        if config["psf"]["kind"] == "auto" or params is not config["psf"]["params"]
        else {}
    )
    settings = sample_sheet.psf_auto_settings(SAMPLES[sample], channel, given)
    return (
        f"--kind auto --from {shlex.quote(input.zarr)} --channel {channel}"
        f" --params {quoted_json(settings)}"
    )


def segmented_channels(sample):
    """Indices of the channels config segment.channels names (none unless configured)."""
    layout = SERIES[sample]
    wanted = sample_settings(sample, "segment").get("channels") or []
    try:
        return sorted(
            {
                layout.channel_index(c, f"segment.channels of sample {sample}")
                for c in wanted
            }
        )
    except InputError as err:
        raise WorkflowError(str(err)) from None


def previous_segment_summary(wildcards):
    """The summary of the channel segmented before this one ([] for the first): the channels'
    labels go into one image, whose labels listing each job updates, so they run in turn.
    """
    channels = segmented_channels(wildcards.sample)
    i = channels.index(int(wildcards.c))
    if i == 0:
        return []
    return [f"{RESULTS}/{wildcards.sample}/segment/c{channels[i - 1]}.json"]


def series_labels_arg(wildcards, input):
    """restored.ome.zarr/labels/<name of the channel>, where segment_channel writes its labels."""
    name = SERIES[wildcards.sample].label_names[int(wildcards.c)]
    return shlex.quote(f"{input.image}/labels/{name}")


def series_evaluate_inputs(wildcards):
    truth = ground_truth(wildcards.sample)
    return {
        "zarr": f"{RESULTS}/{wildcards.sample}/input.ome.zarr",
        "restored": f"{RESULTS}/{wildcards.sample}/restored.ome.zarr",
        **{k: truth[k] for k in ("gt", "iso_gt") if k in truth},
    }


def series_outputs(sample):
    layout = SERIES[sample]
    # the (t, c) predictions are targets too: one deleted or lost is redone (then assemble)
    parts = [series_prediction(sample, t, c) for t, c in series_parts(sample)]
    out = [*parts, f"{RESULTS}/{sample}/restored.ome.zarr"]
    if sample_settings(sample, "stitch")["export_tiff"]:
        out.append(f"{RESULTS}/{sample}/restored.tif")
    for c in range(layout.n_channels):
        out.append(f"{RESULTS}/{sample}/c{c}/report/orthoviews.png")
        if trains_model(sample):
            out.append(f"{RESULTS}/{sample}/c{c}/report/training_curve.png")
    out += [f"{RESULTS}/{sample}/segment/c{c}.json" for c in segmented_channels(sample)]
    if ground_truth(sample):
        out += [
            f"{RESULTS}/{sample}/metrics.json",
            f"{RESULTS}/{sample}/report/metrics.html",
        ]
    return out


# ------------------------------------------------------------------------------------------
# Resources: config resources.<rule>, falling back to resources.default


def rule_resource(rule, key, fallback=None):
    table = config["resources"]
    return (table.get(rule) or {}).get(key, table["default"].get(key, fallback))


def rule_threads(rule):
    return rule_resource(rule, "threads")


def rule_mem_mb(rule):
    """Memory of attempt n: n times the configured value (jobs retried after --retries)."""
    base = rule_resource(rule, "mem_mb")
    return lambda wildcards, attempt: base * attempt


def rule_runtime(rule):
    return rule_resource(rule, "runtime")


def gpu_resources(rule):
    """gpu / gpu_model resources, present only when the config asks for a GPU."""
    gpus = rule_resource(rule, "gpu", 0)
    if not gpus:
        return {}
    model = rule_resource(rule, "gpu_model", "")
    return {"gpu": gpus, **({"gpu_model": model} if model else {})}


# ------------------------------------------------------------------------------------------
# Targets


def all_outputs():
    out = []
    for s in SAMPLES:
        if s in SERIES:
            out += series_outputs(s)
            continue
        out += [
            f"{RESULTS}/{s}/restored.ome.zarr",
            f"{RESULTS}/{s}/labels.json",
            f"{RESULTS}/{s}/report/orthoviews.png",
            f"{RESULTS}/{s}/quality.json",
        ]
        if sample_settings(s, "stitch")["export_tiff"]:
            out.append(f"{RESULTS}/{s}/restored.tif")
        if sample_settings(s, "stitch")["export_ngff04"]:
            out.append(f"{RESULTS}/{s}/restored.ngff04.zarr")
        if trains_model(s):
            out.append(f"{RESULTS}/{s}/report/training_curve.png")
        if ground_truth(s):
            out += [f"{RESULTS}/{s}/metrics.json", f"{RESULTS}/{s}/report/metrics.html"]
    return out
