"""The Snakemake workflow: validation before any job, per-sample settings, lint, formatting,
environment files, and one tiny end-to-end run (with its report and rerun behaviour).

Snakemake runs in a subprocess, in a temporary working directory laid out as a deployed workflow
(config/config.yaml, config/samples.tsv), with ``-s workflow/Snakefile`` of this repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from _workflow import BIN, REPO, TINY, deploy, run_snakemake  # the tiny_run fixture is in conftest.py


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake (dry) run: {rule: count}."""
    counts, inside = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            inside = True
            continue
        if inside:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total"):
                break
    return counts


# ------------------------------------------------------------------------------------------
# Validation: clear errors before any job starts


def write_tiff_without_voxel_size(path: Path) -> Path:
    tifffile.imwrite(path, np.zeros((8, 16, 16), np.uint16), photometric="minisblack")
    return path


@pytest.mark.parametrize(
    "samples, overlay, message",
    [
        ("sample\tinput\nd\tsynthetic\n", {"train": {"epoch": 3}},
         "config: train: Additional properties are not allowed ('epoch' was unexpected)"),
        ("sample\tinput\nd\tsynthetic\n", {"colour": "red"},
         "config: Additional properties are not allowed ('colour' was unexpected)"),
        ("sample\tinput\nd\tsynthetic\n", {"overrides": {"d": {"train": {"epochs": 0}}}},
         "config: overrides.d.train.epochs: 0 is less than the minimum of 1"),
        ("sample\tinput\nd\tsynthetic\n", {"overrides": {"other": {"train": {"epochs": 2}}}},
         "overrides: 'other' is not a sample"),
        ("sample\tinput\tvoxel_size_z\tvoxel_size_y\tvoxel_size_x\nd\tsynthetic\t-1\t0.2\t0.2\n", {},
         "sample d: voxel_size_z: -1.0 is less than or equal to the minimum of 0"),
        ("sample\tinput\tvoxel_size_z\tvoxel_size_y\tvoxel_size_x\nd\tsynthetic\t1\tabc\t0.2\n", {},
         "sample d: voxel_size_y: 'abc' is not of type 'number'"),
        ("sample\tinput\tvoxel_size_z\nd\tsynthetic\t1\n", {},
         "sample d: voxel size incomplete (voxel_size_z given)"),
        ("sample\tinput\tvoxel_size_z\tvoxel_size_y\tvoxel_size_x\nd\tsynthetic\t0.5\t0.2\t0.2\n", {},
         "sample d: voxel size ratio z/x = 0.5/0.2 = 2.5 is not an integer"),
        ("sample\tinput\nd\tdata/missing.tif\n", {}, "sample d: input data/missing.tif does not exist"),
        ("sample\tinput\nd\tnometa.tif\n", {},
         "sample d: nometa.tif has no voxel size in its metadata; fill voxel_size_z, voxel_size_y and voxel_size_x"),
        ("sample\tinput\tsubsample\nd\tnometa.tif\t4\n", {},
         "sample d: nometa.tif has no voxel size in its metadata"),
        ("sample\tinput\tmodel_from\nd\tsynthetic\tnone\n", {}, "sample d: model_from 'none' is not a sample"),
        ("sample\tinput\tpsf_kind\nd\tsynthetic\tconfocal\n", {},
         "sample d: psf kind 'confocal' differs from the config's, but its parameters are the config's"),
        ("sample\tinput\tcolour\nd\tsynthetic\tred\n", {}, "unknown column(s) 'colour'"),
        ("sample\tinput\nd/x\tsynthetic\n", {}, "sample d/x: sample: 'd/x' does not match"),
        ("sample\tinput\tpsf_params\nd\tsynthetic\t{sigma\n", {}, "psf_params '{sigma' is not valid JSON"),
    ],
    ids=["wrong-key", "unknown-section", "override-range", "override-unknown-sample", "voxel-negative",
         "voxel-text", "voxel-incomplete", "voxel-ratio", "missing-input", "no-metadata", "no-metadata-subsample",
         "model-from-unknown",
         "psf-kind-without-params", "unknown-column", "bad-name", "bad-json"],
)
def test_invalid_config_fails_before_any_job(tmp_path, samples, overlay, message):
    write_tiff_without_voxel_size(tmp_path / "nometa.tif")
    deploy(tmp_path, samples, overlay)
    result = run_snakemake(tmp_path, "-n", "--configfile", "overlay.yaml", timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output, output
    assert "Job stats" not in output
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_valid_real_input_with_explicit_voxel_size_passes(tmp_path):
    write_tiff_without_voxel_size(tmp_path / "nometa.tif")
    deploy(tmp_path, "sample\tinput\tvoxel_size_z\tvoxel_size_y\tvoxel_size_x\nd\tnometa.tif\t0.8\t0.2\t0.2\n")
    result = run_snakemake(tmp_path, "-n", "-p", "--configfile", "overlay.yaml", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert job_counts(result.stdout)["convert"] == 1
    assert "--voxel-size 0.8 0.2 0.2" in result.stdout


# ------------------------------------------------------------------------------------------
# Many datasets: per-sample settings, model_from, GPU resources


def test_per_sample_settings_model_from_and_gpu_resources(tmp_path):
    samples = (
        "sample\tinput\tpsf_kind\tpsf_params\tmodel\tmodel_from\n"
        "a\tsynthetic\t\t\t\t\n"
        'b\tsynthetic\tgaussian\t{"sigma_xy": 1.5, "sigma_z": 6}\tisonet1\t\n'
        "c\tsynthetic\t\t\t\ta\n"
    )
    overlay = {
        "overrides": {"a": {"train": {"epochs": 5}}, "c": {"synthetic": {"seed": 7}, "predict": {"combine": "geometric"}}},
        "resources": {"train": {"gpu": 1, "gpu_model": "a100"}},
    }
    deploy(tmp_path, samples, overlay)
    result = run_snakemake(tmp_path, "-n", "-p", "--configfile", "overlay.yaml", "--cores", "2", timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    counts = job_counts(out)
    # c reuses a's model: no psf/patches/train/training curve of its own
    assert counts["train"] == 2 and counts["patches"] == 2 and counts["psf"] == 2
    assert counts["predict"] == 3 and counts["training_curve"] == 2
    assert "results/c/train" not in out
    assert re.search(r"isonet predict results/c/input.ome.zarr results/a/train/model.safetensors .*--combine geometric", out)
    assert re.search(r"isonet predict results/a/input.ome.zarr results/a/train/model.safetensors .*--combine mean", out)
    # overrides and sheet columns reach the commands of their sample only
    assert re.search(r"isonet train results/a/\S+ .*--model isonet2 --epochs 5", out)
    assert re.search(r"isonet train results/b/\S+ .*--model isonet1 --epochs 8", out)
    assert 'isonet psf --out-npz results/b/psf/psf.npz' in out and '"sigma_xy": 1.5' in out
    assert re.search(r"isonet synthetic --out-dir resources/synthetic/c .*--seed 7", out)
    # GPU request on train only, as resources the SLURM plugin turns into --gpus
    train_jobs = re.findall(r"rule train:\n(?:    .*\n)*?    resources: (.*)", out)
    predict_jobs = re.findall(r"rule predict:\n(?:    .*\n)*?    resources: (.*)", out)
    assert train_jobs and all("gpu=1" in r and "gpu_model=a100" in r for r in train_jobs)
    assert predict_jobs and not any("gpu" in r for r in predict_jobs)
    assert all("mem_mb=16000" in r and "runtime=360" in r for r in train_jobs)


def test_sample_sheet_column_and_override_of_one_key_conflict(tmp_path):
    deploy(tmp_path, "sample\tinput\tmodel\nd\tsynthetic\tisonet1\n", {"overrides": {"d": {"train": {"model": "isonet2"}}}})
    result = run_snakemake(tmp_path, "-n", "--configfile", "overlay.yaml", timeout=120)
    assert result.returncode != 0
    assert "train.model is set both by the sample sheet column model and by overrides" in result.stdout + result.stderr


# ------------------------------------------------------------------------------------------
# Lint, formatting, environment files


def test_snakemake_lint_reports_nothing():
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output, output
    assert "Congratulations, your workflow is in a good condition!" in output


def test_snakefmt_check_passes():
    snakefmt = shutil.which("snakefmt", path=str(BIN)) or shutil.which("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt is not installed (pip install snakefmt)")
    result = subprocess.run([snakefmt, "--check", "workflow"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge/pytorch channel name


def _requirement(text: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", text)
    name = m.group(1).lower().replace("_", "-")
    return CONDA_NAMES.get(name, name), m.group(2).replace(" ", "")


def _environment_packages(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    packages = {}
    for dep in env["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            if entry.startswith("-e") or entry in ("pip",):
                continue
            name, spec = _requirement(entry)
            packages[name] = spec
    packages.pop("python", None)
    return packages


def test_environment_files_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = dict(_requirement(r) for r in project["dependencies"])
    test = dict(_requirement(r) for r in project.get("optional-dependencies", {}).get("test", []))
    assert _environment_packages(REPO / "environment.yml") == {**runtime, **test}
    assert _environment_packages(REPO / "workflow" / "envs" / "isonet.yaml") == runtime
    for path in (REPO / "environment.yml", REPO / "workflow" / "envs" / "isonet.yaml"):
        assert yaml.safe_load(path.read_text())["channels"][:2] == ["conda-forge", "pytorch"], path
    python = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"][0]
    assert python == f"python{project['requires-python']}"


def test_every_rule_has_log_benchmark_threads_resources_and_conda():
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        if smk.name in ("common.smk", "benchmark.smk"):
            continue
        for rule in re.split(r"\n(?=rule )", smk.read_text()):
            if not rule.startswith("rule "):
                continue
            name = rule.split()[1].rstrip(":")
            for directive in ("log:", "benchmark:", "threads:", "conda:", "mem_mb=", "runtime="):
                assert directive in rule, f"{smk.name}: rule {name} lacks {directive}"
            if name in ("train", "predict"):
                assert "gpu_resources(" in rule, f"rule {name} takes no GPU resources"


# ------------------------------------------------------------------------------------------
# The tiny end-to-end run


def test_tiny_run_outputs(tiny_run):
    from isonet.storage import read_ome_zarr

    results = tiny_run / "results" / "tiny"
    _, input_vs = read_ome_zarr(results / "input.ome.zarr")
    restored, restored_vs = read_ome_zarr(results / "restored.ome.zarr")
    assert input_vs[0] == pytest.approx(4 * input_vs[2])
    assert restored_vs == pytest.approx((input_vs[2],) * 3)  # isotropic
    levels = [read_ome_zarr(results / "restored.ome.zarr", level)[0].shape for level in range(TINY["stitch"]["pyramid_levels"])]
    assert len(levels) == 2 and all(b <= a for a, b in zip(levels[0], levels[1])) and levels[1] != levels[0]
    labels, labels_vs = read_ome_zarr(results / "labels.ome.zarr")
    assert labels.shape == restored.shape and labels_vs == pytest.approx(restored_vs)
    assert np.asarray(labels[:]).max() > 0
    assert (results / "restored.tif").is_file()
    from isonet.stages.verify import verify_store

    for store in ("input.ome.zarr", "predict/predicted.ome.zarr", "restored.ome.zarr", "labels.ome.zarr"):
        report = verify_store(results / store, log=lambda m: None)  # every chunk stored and checksummed
        assert (report["problems"], report["absent"], report["unchecksummed"]) == ([], 0, []), report
    metrics = json.loads((results / "metrics.json").read_text())
    for reference in ("gt", "iso_gt"):
        assert metrics["psnr"][reference]["restored"] > metrics["psnr"][reference]["cubic"], metrics
    for figure in ("orthoviews.png", "training_curve.png"):
        assert (results / "report" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<table>" in (results / "report" / "metrics.html").read_text()
    for rule in ("synthetic", "convert", "psf", "patches", "train", "predict", "stitch", "segment", "evaluate"):
        assert (tiny_run / "logs" / "tiny" / f"{rule}.log").is_file(), rule
        assert (tiny_run / "logs" / "benchmarks" / "tiny" / f"{rule}.tsv").is_file(), rule


def test_tiny_run_report(tiny_run):
    result = run_snakemake(tiny_run, "--configfile", "overlay.yaml", "--report", "report.html", timeout=120)
    assert result.returncode == 0, result.stderr
    page = (tiny_run / "report.html").read_text()
    for name in ("orthoviews.png", "training_curve.png", "metrics.html", "Restoration", "Training", "Evaluation"):
        assert name in page, name


def test_tiny_rerun_does_nothing_then_only_predict_and_downstream(tiny_run):
    profile = ["--workflow-profile", str(REPO / "profiles" / "default")]
    result = run_snakemake(tiny_run, "-n", *profile, "--configfile", "overlay.yaml", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout

    overlay = yaml.safe_load((tiny_run / "overlay.yaml").read_text())
    assert overlay["predict"].get("combine", "mean") == "mean"
    overlay["predict"]["combine"] = "geometric"
    (tiny_run / "overlay-geometric.yaml").write_text(yaml.safe_dump(overlay))
    result = run_snakemake(tiny_run, "-n", *profile, "--configfile", "overlay-geometric.yaml", timeout=120)
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert set(counts) == {"predict", "stitch", "export_tiff", "export_ngff04", "segment", "evaluate", "orthoviews",
                           "metrics_table", "all"}, counts
