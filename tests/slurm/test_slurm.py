"""The workflow on a real single-node SLURM, through profiles/slurm and the SLURM executor plugin.

tests/slurm/slurm.sh installs Debian's slurm-wlm and munge when missing (root and apt-get
needed), starts slurmctld and slurmd on localhost and stops them afterwards. Where SLURM cannot
start (no root, no apt, an existing cluster configuration) the test is skipped with the reason.
Opt-in: ``make slurm-test`` (sets ISONET_SLURM_TEST=1); .ci/run runs it after ``make test``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("slurm.sh")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.environ.get("ISONET_SLURM_TEST") != "1":
        # Opt-in: it installs packages and starts daemons as root, and while SLURM is installed
        # but stopped every snakemake start waits ~9 s on scontrol (the executor plugin asks it).
        pytest.skip("the real-SLURM test runs with `make slurm-test` (ISONET_SLURM_TEST=1)")
    if sys.platform != "linux" or shutil.which("bash") is None:
        pytest.skip("SLURM test needs Linux and bash")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')")
    started = time.perf_counter()
    result = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    if result.returncode == 3:
        pytest.skip(f"SLURM cannot start here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"SLURM up in {time.perf_counter() - started:.0f} s")
    yield
    subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=60)


def test_tiny_workflow_runs_through_sbatch(slurm_cluster, tmp_path):
    workdir = tmp_path
    (workdir / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", workdir / "config" / "config.yaml")
    (workdir / "config" / "samples.tsv").write_text("sample\tinput\ntiny\tsynthetic\n")
    overlay = yaml.safe_load((REPO / "tests" / "config" / "tiny.yaml").read_text())
    for section, values in yaml.safe_load((Path(__file__).with_name("config.yaml")).read_text()).items():
        overlay.setdefault(section, {}).update(values)
    overlay["samples"] = "config/samples.tsv"
    (workdir / "overlay.yaml").write_text(yaml.safe_dump(overlay))

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(workdir),
        "--workflow-profile", str(REPO / "profiles" / "slurm"), "--configfile", "overlay.yaml",
        # no accounting database here: job status from squeue, checked early (a test, not a cluster)
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
    ]
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)
    elapsed = time.perf_counter() - started
    log = result.stdout + result.stderr
    (workdir / "snakemake.log").write_text(log)
    assert result.returncode == 0, log[-6000:]

    # every job went through sbatch: one SLURM job id per rule, each COMPLETED in slurmctld
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", log)
    rules = {re.search(r"/rule_(\w+)/", path).group(1) for _, path in submitted}
    assert rules == {"synthetic", "convert", "psf", "patches", "train", "predict", "stitch", "export_tiff",
                     "segment", "evaluate", "assess", "orthoviews", "training_curve", "metrics_table"}, rules
    states = {}
    for job_id, path in submitted:
        assert Path(path).is_file(), path
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30)
        states[job_id] = re.search(r"JobState=(\w+)", shown.stdout).group(1) if shown.returncode == 0 else "purged"
    assert all(state in ("COMPLETED", "purged") for state in states.values()), states
    assert "COMPLETED" in states.values()
    train_id = next(job_id for job_id, path in submitted if "/rule_train/" in path)
    train = subprocess.run(["scontrol", "show", "job", train_id], capture_output=True, text=True).stdout
    if train:  # the config's resources reached sbatch: train asks for 2 CPUs and 2000 MB
        assert "cpu=2,mem=2000M" in train, train

    results = workdir / "results" / "tiny"
    for output in ("restored.ome.zarr", "restored.ome.zarr/labels/nuclei", "labels.json", "restored.tif", "metrics.json",
                   "report/orthoviews.png", "report/training_curve.png", "report/metrics.html", "quality.json",
                   "report/quality.html"):
        assert (results / output).exists(), output
    metrics = json.loads((results / "metrics.json").read_text())
    print(f"workflow through SLURM: {len(submitted)} sbatch jobs in {elapsed:.0f} s; PSNR vs GT "
          f"{metrics['psnr']['gt']}")
