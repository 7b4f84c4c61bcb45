"""Helpers of the isonet workflow: config and sample-sheet validation, per-sample settings,
input functions and resources. Rules live in one file per stage; this file defines no rule.
"""

import csv
import json
import os
import shlex
from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

SYNTHETIC = "synthetic"
SAMPLE_NAME = "[A-Za-z0-9][A-Za-z0-9_.-]*"  # as in the schemas; never a path separator
SCHEMAS = Path(workflow.basedir) / "schemas"
SAMPLE_COLUMNS = (
    "sample input voxel_size_z voxel_size_y voxel_size_x subsample psf_kind psf_params psf_mode"
    " psf_file model model_from gt iso_gt gt_labels"
).split()
VOXEL_COLUMNS = ("voxel_size_z", "voxel_size_y", "voxel_size_x")
GT_COLUMNS = ("gt", "iso_gt", "gt_labels")
# Sample-sheet columns that set one key of a config section for their sample.
SHEET_SETTINGS = {
    "psf_kind": ("psf", "kind"),
    "psf_params": ("psf", "params"),
    "psf_mode": ("psf", "mode"),
    "psf_file": ("psf", "file"),
    "model": ("train", "model"),
}


wildcard_constraints:
    sample=SAMPLE_NAME,


# ------------------------------------------------------------------------------------------
# Validation


def validated(data, schema, what):
    """snakemake.utils.validate(), with a one-line message naming the offending key instead of
    the schema dump."""
    try:
        validate(data, str(SCHEMAS / schema), set_default=False)
    except WorkflowError:
        with open(SCHEMAS / schema) as f:
            contents = yaml.safe_load(f)
        errors = sorted(
            jsonschema.Draft202012Validator(contents).iter_errors(data),
            key=lambda e: list(map(str, e.absolute_path)),
        )
        if not errors:
            raise
        lines = []
        for error in errors:
            key = ".".join(str(p) for p in error.absolute_path)
            lines.append(
                f"{what}: {key}: {error.message}" if key else f"{what}: {error.message}"
            )
        raise WorkflowError("\n".join(lines)) from None
    return data


def _parse_cell(column, text):
    """Typed value of a sample-sheet cell; text that does not parse is kept for the schema to report."""
    if column in VOXEL_COLUMNS:
        try:
            return float(text)
        except ValueError:
            return text
    if column == "subsample":
        try:
            value = float(text)
        except ValueError:
            return text
        return int(value) if value.is_integer() else value
    if column == "psf_params":
        try:
            return json.loads(text)
        except ValueError as err:
            raise WorkflowError(
                f"sample sheet: psf_params {text!r} is not valid JSON ({err}); "
                'write a JSON object such as {"sigma_xy": 2, "sigma_z": 8}'
            ) from None
    return text


def read_sample_sheet(path):
    """Rows of the sample sheet as {sample: record}, validated; empty cells are left out."""
    if not os.path.isfile(path):
        raise WorkflowError(
            f"sample sheet {path} does not exist; set samples: in the config"
        )
    with open(path, newline="") as f:
        lines = [l for l in f if l.strip() and not l.lstrip().startswith("#")]
    reader = csv.DictReader(lines, delimiter="\t")
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in SAMPLE_COLUMNS]
    if unknown:
        raise WorkflowError(
            f"sample sheet {path}: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"columns are: {', '.join(SAMPLE_COLUMNS)} (tab-separated)"
        )
    samples = {}
    for number, row in enumerate(reader, start=1):
        if None in row:
            raise WorkflowError(
                f"sample sheet {path}: row {number} has more cells than the header; "
                "separate columns with tabs"
            )
        record = {
            k: _parse_cell(k, v.strip()) for k, v in row.items() if v and v.strip()
        }
        name = record.get("sample", f"(row {number})")
        given = [c for c in VOXEL_COLUMNS if c in record]
        if given and len(given) < 3:
            raise WorkflowError(
                f"sample sheet {path}, sample {name}: voxel size incomplete ({', '.join(given)} "
                "given); fill voxel_size_z, voxel_size_y and voxel_size_x (µm), or none of them "
                "to use the file's metadata"
            )
        validated(record, "samples.schema.yaml", f"sample sheet {path}, sample {name}")
        if name in samples:
            raise WorkflowError(f"sample sheet {path}: sample {name!r} appears twice")
        samples[name] = record
    if not samples:
        raise WorkflowError(f"sample sheet {path} lists no sample")
    return samples


def _file_voxel_size(path, where):
    """Voxel size stored in an image file, or None; reads metadata only."""
    from isonet.errors import InputError
    from isonet.storage import open_volume

    try:
        _, voxel_size, close = open_volume(path)
    except InputError as err:
        raise WorkflowError(f"{where}: {err}") from None
    close()
    return voxel_size


def _axial_factor_problem(voxel_size):
    vz, vy, vx = voxel_size
    if abs(vy - vx) > 1e-3 * vx:
        return f"lateral voxel sizes differ (y {vy} µm, x {vx} µm)"
    ratio = vz / vx
    if ratio < 0.99 or abs(ratio - round(ratio)) > 1e-2 * ratio:
        return (
            f"voxel size ratio z/x = {vz}/{vx} = {ratio:.4g} is not an integer; "
            "set subsample for this sample"
        )
    return None


def check_samples(samples, config):
    """Cross-field checks the schemas cannot express; all problems are reported at once."""
    problems = []
    overrides = config.get("overrides") or {}
    for name in overrides:
        if name not in samples:
            problems.append(
                f"overrides: {name!r} is not a sample of {config['samples']}"
            )
    for name, row in samples.items():
        where = f"sample {name}"
        synthetic = row["input"] == SYNTHETIC
        if not synthetic and not os.path.exists(row["input"]):
            problems.append(
                f"{where}: input {row['input']} does not exist "
                f"(relative paths start at {os.getcwd()})"
            )
        for column in GT_COLUMNS:
            if column in row and not os.path.exists(row[column]):
                problems.append(f"{where}: {column} {row[column]} does not exist")
        voxel_size = tuple(row[c] for c in VOXEL_COLUMNS if c in row) or None
        if voxel_size is None and not synthetic and os.path.exists(row["input"]):
            voxel_size = _file_voxel_size(row["input"], where)
            if voxel_size is None:
                problems.append(
                    f"{where}: {row['input']} has no voxel size in its metadata; "
                    "fill voxel_size_z, voxel_size_y and voxel_size_x (µm) in the sample sheet"
                )
        if voxel_size is not None and "subsample" not in row:
            problem = _axial_factor_problem(voxel_size)
            if problem:
                problems.append(f"{where}: {problem}")
        source = row.get("model_from")
        if source is not None:
            if source == name:
                problems.append(f"{where}: model_from names the sample itself")
            elif source not in samples:
                problems.append(f"{where}: model_from {source!r} is not a sample")
            elif "model_from" in samples[source]:
                problems.append(
                    f"{where}: model_from {source!r} takes its model from another sample; "
                    "name the sample that trains the model"
                )
        for column, (section, key) in SHEET_SETTINGS.items():
            if column in row and key in overrides.get(name, {}).get(section, {}):
                problems.append(
                    f"{where}: {section}.{key} is set both by the sample sheet column {column} "
                    "and by overrides; set it in one place"
                )
        psf = sample_settings(name, "psf", samples, config)
        if psf["kind"] == "measured":
            if not psf["file"]:
                problems.append(
                    f"{where}: psf kind 'measured' needs a bead stack: set psf_file (sheet) or psf.file"
                )
            elif not os.path.exists(psf["file"]):
                problems.append(f"{where}: psf file {psf['file']} does not exist")
        if (
            psf["kind"] != config["psf"]["kind"]
            and psf["params"] is config["psf"]["params"]
        ):
            problems.append(
                f"{where}: psf kind {psf['kind']!r} differs from the config's, but its parameters "
                "are the config's; give psf_params (sheet) or overrides.<sample>.psf.params"
            )
    if problems:
        raise WorkflowError("\n  ".join(["invalid samples or config:", *problems]))
    return samples


def load_samples(config):
    """The validated sample sheet named by the config."""
    return check_samples(read_sample_sheet(config["samples"]), config)


# ------------------------------------------------------------------------------------------
# Per-sample settings


def sample_settings(sample, section, samples=None, cfg=None):
    """A config section for one sample: config values, then overrides.<sample>.<section>, then
    the sample-sheet columns of that section. Each given key replaces the value as a whole.
    """
    samples = SAMPLES if samples is None else samples
    cfg = config if cfg is None else cfg
    merged = dict(cfg[section])
    merged.update(((cfg.get("overrides") or {}).get(sample) or {}).get(section) or {})
    for column, (target, key) in SHEET_SETTINGS.items():
        if target == section and column in samples[sample]:
            merged[key] = samples[sample][column]
    return merged


def settings(section):
    """Input-function form of sample_settings, for params:."""
    return lambda wildcards: sample_settings(wildcards.sample, section)


def is_synthetic(sample):
    return SAMPLES[sample]["input"] == SYNTHETIC


def model_source(sample):
    """The sample whose model restores ``sample`` (itself unless model_from is set)."""
    return SAMPLES[sample].get("model_from", sample)


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
    return {k: SAMPLES[sample][k] for k in GT_COLUMNS if k in SAMPLES[sample]}


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


def sample_input(wildcards):
    if is_synthetic(wildcards.sample):
        return f"resources/synthetic/{wildcards.sample}/acquired.tif"
    return SAMPLES[wildcards.sample]["input"]


def voxel_size_arg(wildcards):
    row = SAMPLES[wildcards.sample]
    if all(c in row for c in VOXEL_COLUMNS):
        return join(["--voxel-size", *(row[c] for c in VOXEL_COLUMNS)])
    return ""


def subsample_arg(wildcards):
    value = SAMPLES[wildcards.sample].get("subsample")
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
        "labels": f"{RESULTS}/{wildcards.sample}/labels.ome.zarr",
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


def orthoview_gt_arg(wildcards, input):
    return f"--gt {shlex.quote(input.gt)}" if input.get("gt") else ""


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
        out += [
            f"{RESULTS}/{s}/restored.ome.zarr",
            f"{RESULTS}/{s}/labels.ome.zarr",
            f"{RESULTS}/{s}/report/orthoviews.png",
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
