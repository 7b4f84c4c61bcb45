import csv
import json


def read_sample_sheet(path):
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader((l for l in f if not l.startswith("#")), delimiter="\t")]
    return {r["sample"]: {k: (v or "").strip() for k, v in r.items()} for r in rows}


SAMPLES = read_sample_sheet(config["samples"])
RESULTS = config.get("results", "results")
SYNTHETIC = "synthetic"


def sample_row(sample):
    return SAMPLES[sample]


def is_synthetic(sample):
    return sample_row(sample)["input"] == SYNTHETIC


def sample_input(wildcards):
    if is_synthetic(wildcards.sample):
        return f"resources/synthetic/{wildcards.sample}/acquired.tif"
    return sample_row(wildcards.sample)["input"]


def voxel_size_arg(wildcards):
    row = sample_row(wildcards.sample)
    vs = [row.get(k, "") for k in ("voxel_size_z", "voxel_size_y", "voxel_size_x")]
    if all(v != "" for v in vs):
        return "--voxel-size " + " ".join(vs)
    return ""


def subsample_arg(wildcards):
    value = sample_row(wildcards.sample).get("subsample", "")
    return f"--subsample {value}" if value != "" else ""


def ground_truth(sample):
    """Paths of gt, iso_gt and labels for a sample ('' where absent)."""
    if is_synthetic(sample):
        d = f"resources/synthetic/{sample}"
        return {"gt": f"{d}/gt.tif", "iso_gt": f"{d}/iso_gt.tif", "gt_labels": f"{d}/labels.tif"}
    row = sample_row(sample)
    return {k: row.get(k, "") for k in ("gt", "iso_gt", "gt_labels")}


def has_ground_truth(sample):
    return any(ground_truth(sample).values())


def all_outputs():
    out = []
    for s in SAMPLES:
        out += [f"{RESULTS}/{s}/restored.ome.zarr", f"{RESULTS}/{s}/labels.ome.zarr"]
        if config["stitch"].get("export_tiff", False):
            out.append(f"{RESULTS}/{s}/restored.tif")
        if has_ground_truth(s):
            out.append(f"{RESULTS}/{s}/metrics.json")
    return out


def as_json(obj):
    return "'" + json.dumps(obj) + "'"
