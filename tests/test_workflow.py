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


INVALID = [
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
    ("sample\tinput\tvoxel_size_z\tvoxel_size_y\tvoxel_size_x\nd\tsynthetic\t0.1\t0.2\t0.2\n", {},
     "sample d: voxel size ratio z/x = 0.1/0.2 = 0.5 is below 1"),
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
]
INVALID_IDS = ["wrong-key", "unknown-section", "override-range", "override-unknown-sample", "voxel-negative",
               "voxel-text", "voxel-incomplete", "voxel-ratio", "missing-input", "no-metadata",
               "no-metadata-subsample", "model-from-unknown", "psf-kind-without-params", "unknown-column",
               "bad-name", "bad-json"]


def merged(base: dict, overlay: dict) -> dict:
    """Snakemake's merge of a --configfile over the workflow's configfile (recursive)."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.mark.parametrize("samples, overlay, message", INVALID, ids=INVALID_IDS)
def test_invalid_config_is_one_clear_problem(tmp_path, monkeypatch, samples, overlay, message):
    # the checks workflow/rules/common.smk runs before any job, called as it calls them
    from isonet.errors import InputError
    from isonet.samples import load_samples, validate_config

    write_tiff_without_voxel_size(tmp_path / "nometa.tif")
    deploy(tmp_path, samples, overlay)
    monkeypatch.chdir(tmp_path)
    config = merged(yaml.safe_load((tmp_path / "config" / "config.yaml").read_text()),
                    yaml.safe_load((tmp_path / "overlay.yaml").read_text()))
    schemas = REPO / "workflow" / "schemas"
    with pytest.raises(InputError) as raised:
        load_samples(validate_config(config, schemas / "config.schema.yaml"), schemas / "samples.schema.yaml")
    assert message in str(raised.value)
    assert "Traceback" not in str(raised.value)


@pytest.mark.parametrize("case", ["wrong-key", "voxel-incomplete", "no-metadata"])
def test_invalid_config_fails_before_any_job(tmp_path, case):
    # the same checks through Snakemake: its error, before any job (a config key, a sheet cell, a file)
    samples, overlay, message = INVALID[INVALID_IDS.index(case)]
    write_tiff_without_voxel_size(tmp_path / "nometa.tif")
    deploy(tmp_path, samples, overlay)
    result = run_snakemake(tmp_path, "-n", "--configfile", "overlay.yaml", timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output, output
    assert "Traceback" not in output
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


def test_non_integer_axial_factor_passes_to_the_stages(tmp_path):
    write_tiff_without_voxel_size(tmp_path / "nometa.tif")
    deploy(tmp_path, "sample\tinput\tvoxel_size_z\tvoxel_size_y\tvoxel_size_x\tsubsample\n"
                     "d\tnometa.tif\t0.9\t0.2\t0.2\t\ne\tnometa.tif\t0.8\t0.2\t0.2\t4.5\n")
    result = run_snakemake(tmp_path, "-n", "-p", "--configfile", "overlay.yaml", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--voxel-size 0.9 0.2 0.2" in result.stdout and "--subsample 4.5" in result.stdout


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
# A fresh clone in a clean shell: the README's commands, nothing activated


def fresh_clone(tmp_path: Path) -> Path:
    """The workflow files of a clone, with its `make install` venv at .venv (the running one)."""
    clone = tmp_path / "isonet"
    outputs = shutil.ignore_patterns("results", "resources", "logs", ".snakemake", "__pycache__")
    for name in ("workflow", "profiles", "config", ".test"):
        shutil.copytree(REPO / name, clone / name, ignore=outputs)
    shutil.copy(REPO / ".snakemake-workflow-catalog.yml", clone)
    (clone / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return clone


def clean_shell(command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """`command` in bash started as `env -i HOME=$HOME PATH=/usr/bin:/bin`: no venv on PATH.

    PYTHONPATH is passed on when set: development checkouts (worktrees sharing one venv) put
    themselves there; a venv made by `make install` has isonet installed and needs none.
    """
    env = ["HOME=" + os.environ.get("HOME", "/tmp"), "PATH=/usr/bin:/bin"]
    if os.environ.get("PYTHONPATH"):
        env.append("PYTHONPATH=" + os.environ["PYTHONPATH"])
    return subprocess.run(["env", "-i", *env, "bash", "--noprofile", "--norc", "-c", command], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_own_data_as_the_readme_says_in_a_clean_shell(tmp_path):
    clone = fresh_clone(tmp_path)
    assert clean_shell("command -v isonet snakemake", clone, 30).stdout == ""  # nothing activated
    (clone / "data").mkdir()
    volume = np.random.default_rng(0).integers(0, 1000, (6, 32, 32), dtype=np.uint16)
    tifffile.imwrite(clone / "data" / "embryo.tif", volume, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"spacing": 0.8, "unit": "um"})
    (clone / "config" / "samples.tsv").write_text("sample\tinput\nembryo\tdata/embryo.tif\n")
    result = clean_shell(".venv/bin/snakemake --until convert", clone, 300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    from isonet.storage import read_ome_zarr

    converted, voxel_size = read_ome_zarr(clone / "results" / "embryo" / "input.ome.zarr")
    np.testing.assert_array_equal(converted[:], volume)
    assert voxel_size == pytest.approx((0.8, 0.2, 0.2))


def test_catalog_test_config_runs_in_a_clean_shell(tmp_path):
    """The catalog's standardized test, `snakemake --directory .test`, end to end; and its rule graph."""
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert catalog["usage"]["software-stack-deployment"]["conda"] is True
    clone = fresh_clone(tmp_path)
    graph = clean_shell(".venv/bin/snakemake -s workflow/Snakefile -c 1 -d .test --forceall --rulegraph", clone, 120)
    assert graph.returncode == 0 and "digraph" in graph.stdout, graph.stderr[-3000:]
    result = clean_shell(".venv/bin/snakemake --directory .test --cores 2", clone, 600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = clone / ".test" / "results" / "tiny"
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["psnr"]["gt"]["restored"] > 0 and 0 <= metrics["seg"]["restored"] <= 1, metrics
    assert (results / "restored.tif").is_file() and (results / "report" / "orthoviews.png").is_file()
    assert json.loads((results / "labels.json").read_text())["n_objects"] > 0
    assert (results / "restored.ome.zarr" / "labels" / "nuclei" / "zarr.json").is_file()


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
    labels, labels_vs = read_ome_zarr(results / "restored.ome.zarr" / "labels" / "nuclei")  # NGFF labels of the image
    assert labels.shape == restored.shape and labels_vs == pytest.approx(restored_vs)
    assert np.asarray(labels[:]).max() > 0
    assert (results / "restored.tif").is_file()
    from isonet.stages.verify import verify_store

    for store in ("input.ome.zarr", "predict/predicted.ome.zarr", "restored.ome.zarr", "restored.ome.zarr/labels/nuclei"):
        report = verify_store(results / store, log=lambda m: None)  # every chunk stored and checksummed
        assert (report["problems"], report["absent"], report["unchecksummed"]) == ([], 0, []), report
    metrics = json.loads((results / "metrics.json").read_text())
    for reference in ("gt", "iso_gt"):
        assert metrics["psnr"][reference]["restored"] > metrics["psnr"][reference]["cubic"], metrics
    for figure in ("orthoviews.png", "training_curve.png"):
        assert (results / "report" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<table>" in (results / "report" / "metrics.html").read_text()
    quality = json.loads((results / "quality.json").read_text())
    ratio = quality["isotropy_ratio"]  # the input's z has too few planes (8) for an estimate: None
    # a 3-epoch model on 32 isotropic planes: 0.79 with predict.edges clip, 0.8x with mirror; the issue's
    # >= 0.8 target is the demo's (0.823 either way, docs/evidence/demo-quality.json)
    assert ratio["restored"] > 0.7 and (ratio["input"] is None or ratio["input"] < ratio["restored"]), ratio
    assert set(quality["reacquisition"]) == {"restored", "cubic", "iso_gt"}
    assert (results / "report" / "uncertainty.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert verify_store(results / "predict" / "uncertainty.ome.zarr", log=lambda m: None)["problems"] == []
    for rule in ("synthetic", "convert", "psf", "patches", "train", "predict", "stitch", "segment", "evaluate"):
        assert (tiny_run / "logs" / "tiny" / f"{rule}.log").is_file(), rule
        assert (tiny_run / "logs" / "benchmarks" / "tiny" / f"{rule}.tsv").is_file(), rule


def test_every_ome_zarr_of_the_workflow_validates(tiny_run):
    from test_ngff import check_every_ome_zarr_of_the_workflow  # skips when ome-zarr-models is absent

    check_every_ome_zarr_of_the_workflow(tiny_run / "results" / "tiny")


def test_tiny_run_report(tiny_run):
    result = run_snakemake(tiny_run, "--configfile", "overlay.yaml", "--report", "report.html", timeout=120)
    assert result.returncode == 0, result.stderr
    page = (tiny_run / "report.html").read_text()
    for name in ("orthoviews.png", "training_curve.png", "metrics.html", "Restoration", "Training", "Evaluation",
                 "quality.html", "uncertainty.png"):
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
    assert set(counts) == {"predict", "stitch", "export_tiff", "segment", "evaluate", "orthoviews", "metrics_table",
                           "assess", "export_ngff04", "all"}, counts



# A 16x48x48 phantom, isonet1, 3 short epochs (as tests/test_faults.py): 13 x 48 x 48 restored
# in 4 blocks of (4, 48, 48)
SHARDS_CONFIG = {
    "synthetic": {"shape": [16, 48, 48]},
    "convert": {"chunks": [2, 48, 48], "pyramid_levels": 2},
    "patches": {"n_patches": 96, "patch_size": 16},
    "train": {"model": "isonet1", "epochs": 3, "batch_size": 16, "steps": None, "rounds": 1},
    "predict": {"chunks": [4, 48, 48], "block": [4, 48, 48]},
    "resources": {"default": {"threads": 1, "mem_mb": 1000, "runtime": 10}, "train": {"threads": 1},
                  "predict": {"threads": 1}},
}


def test_predict_in_three_shards_is_bit_identical_to_one_job(tmp_path):
    import zarr

    workdir = deploy(tmp_path / "w", "sample\tinput\ntiny\tsynthetic\n", SHARDS_CONFIG)
    predicted = workdir / "results" / "tiny" / "predict" / "predicted.ome.zarr"
    args = ["--workflow-profile", str(REPO / "profiles" / "default"), "--cores", "1", "--configfile"]
    target = str(predicted.relative_to(workdir))
    result = run_snakemake(workdir, target, *args, "overlay.yaml", timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    before = np.asarray(zarr.open_array(predicted / "0")[:])
    uncertainty = predicted.parent / "uncertainty.ome.zarr"
    spread_before = np.asarray(zarr.open_array(uncertainty / "0")[:])

    overlay = yaml.safe_load((workdir / "overlay.yaml").read_text())
    overlay["predict"]["shards"] = 3
    (workdir / "overlay-shards.yaml").write_text(yaml.safe_dump(overlay))
    dry = run_snakemake(workdir, "-n", target, *args, "overlay-shards.yaml", timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert job_counts(dry.stdout) == {"predict_init": 1, "predict_shard": 3, "predict": 1}, dry.stdout
    result = run_snakemake(workdir, target, *args, "overlay-shards.yaml", timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    assert np.asarray(zarr.open_array(predicted / "0")[:]).tobytes() == before.tobytes()
    assert np.asarray(zarr.open_array(uncertainty / "0")[:]).tobytes() == spread_before.tobytes()
    for i in range(3):
        log = (workdir / "logs" / "tiny" / f"predict_shard-{i}-of-3.log").read_text()
        assert f"shard {i}/3 ({2 if i == 0 else 1} blocks)" in log, log
    assert not list(predicted.parent.glob("*.partial"))
    assert not list((predicted.parent / "shards").glob("*.json"))  # the markers are temporary
    again = run_snakemake(workdir, "-n", target, *args, "overlay-shards.yaml", timeout=120)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout
