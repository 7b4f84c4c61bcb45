"""Running the workflow from tests: a deployed working directory and snakemake in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
BIN = Path(sys.executable).parent
TINY = yaml.safe_load((REPO / "tests" / "config" / "tiny.yaml").read_text())


def run_snakemake(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def deploy(workdir: Path, samples: str, overlay: dict | None = None) -> Path:
    """A working directory with the repository's config, the given sample sheet and a config overlay."""
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config" / "config.yaml", workdir / "config" / "config.yaml")
    (workdir / "config" / "samples.tsv").write_text(samples)
    (workdir / "overlay.yaml").write_text(yaml.safe_dump({"samples": "config/samples.tsv", **(overlay or {})}))
    return workdir
