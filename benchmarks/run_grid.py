"""Run the benchmark grid of config/benchmark.yaml without Snakemake: tune, cells in parallel, table.

The same ``isonet benchmark-tune``, ``benchmark-cell`` and ``benchmark-table`` commands the rules
in workflow/rules/benchmark.smk run, for a machine where Snakemake is not installed (e.g. a GPU
node). Cells already written are kept, so a rerun finishes an interrupted grid.

    python benchmarks/run_grid.py OUTDIR [--size quick] [--device cuda] [--lanes 8] [--threads 2]
                                         [--phantoms nuclei ...] [--psfs gaussian ...] [--stacks N]
                                         [--methods cubic isonet2_full ...] [--tuned TUNED.json] [--peer]
                                         [--settings '{"schedule": "cosine"}']

``--peer`` also restores each cell's stack with CSBDeep IsotropicCARE (benchmarks/csbdeep_peer.py,
after ``make peer-venv``) right after the cell, in the same lane, for the wall time IsoNet-2 full
trained there; the table gets its column. ``--tuned`` reuses a tuning result instead of searching.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ISONET = [sys.executable, "-m", "isonet.cli"]


def run_logged(command: list[str], log: Path, env: dict) -> int:
    """Run ``command`` with its output in ``log``; print its exit status and wall time."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT, env=env)
    print(f"{log.name}: rc {rc}, {time.perf_counter() - t0:.0f} s", flush=True)
    return rc


def psf_args(psfs: dict, name: str) -> list[str]:
    return ["--psf-name", name, "--psf-kind", psfs[name]["kind"], "--psf-params", json.dumps(psfs[name]["params"])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--config", default="config/benchmark.yaml")
    p.add_argument("--size", default="quick")
    p.add_argument("--device", default="cpu", help="overrides the size's device (cpu, cuda)")
    p.add_argument("--lanes", type=int, default=1, help="cells run at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per cell")
    p.add_argument("--phantoms", nargs="*", default=None)
    p.add_argument("--psfs", nargs="*", default=None)
    p.add_argument("--stacks", type=int, default=None, help="stacks per cell (default: the size's; 0: only tune)")
    p.add_argument("--methods", nargs="*", default=None, help="overrides the size's methods")
    p.add_argument("--tuned", type=Path, default=None, help="a tuned.json to reuse (no search)")
    p.add_argument("--peer", action="store_true", help="CSBDeep IsotropicCARE on every cell's stack")
    p.add_argument("--settings", default=None, help="JSON merged over the size's settings, e.g. an ablation's")
    args = p.parse_args()

    bench = yaml.safe_load(Path(args.config).read_text())["benchmark"]
    size = bench["sizes"][args.size]
    settings = dict(size["settings"], device=args.device)
    if args.methods:
        settings["methods"] = args.methods
    if args.settings:
        settings.update(json.loads(args.settings))
    psfs, tune = bench["psfs"], bench["tune"]
    (args.out / "cells").mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    if args.peer:
        (args.out / "peer").mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    threads = ["--threads", str(args.threads)]

    tuned = args.out / "tuned.json"
    if args.tuned and not tuned.exists():
        tuned.write_text(args.tuned.read_text())
    if not tuned.exists():
        # nothing else runs before the search ends: it gets the lanes' threads
        tune_threads = min(int(tune.get("threads", args.threads)), args.lanes * args.threads)
        command = [*ISONET, "benchmark-tune", str(tuned), "--phantom", tune["phantom"], *psf_args(psfs, tune["psf"]),
                   "--grid", json.dumps(tune["grid"]), "--settings", json.dumps(settings),
                   "--threads", str(tune_threads)]
        if run_logged(command, args.out / "logs" / "tune.log", dict(env, OMP_NUM_THREADS=str(tune_threads))):
            sys.exit("tuning failed; see logs/tune.log")

    jobs = []
    for phantom in args.phantoms or bench["phantoms"]:
        for psf in args.psfs or list(psfs):
            for stack in range(int(size["stacks"]) if args.stacks is None else args.stacks):
                name = f"{phantom}_{psf}_{stack}"
                out = args.out / "cells" / f"{name}.json"
                peer = args.out / "peer" / f"{name}.json"
                steps = []
                stack_npz = args.out / "cells" / f"{name}.npz"
                # the peer needs the cell's stack and its training time from the same run
                if not out.exists() or (args.peer and not peer.exists() and not stack_npz.exists()):
                    cell = dict(settings, rl_iterations=int(psfs[psf]["rl_iterations"]))
                    command = [*ISONET, "benchmark-cell", str(out), "--phantom", phantom, *psf_args(psfs, psf),
                               "--stack", str(stack), "--settings", json.dumps(cell), *threads, "--tuned", str(tuned)]
                    if args.peer:
                        command += ["--stack-npz", str(stack_npz)]
                    steps.append((command, args.out / "logs" / f"{name}.log"))
                if args.peer and not peer.exists():
                    command = [sys.executable, str(Path(__file__).parent / "csbdeep_peer.py"), str(out), str(stack_npz),
                               str(peer)]
                    steps.append((command, args.out / "logs" / f"peer_{name}.log"))
                if steps:
                    jobs.append(steps)

    def run_steps(steps) -> int:  # a cell, then its peer on the stack it wrote
        for command, log in steps:
            if run_logged(command, log, env):
                return 1
        return 0

    with ThreadPoolExecutor(max(1, args.lanes)) as pool:
        failed = sum(pool.map(run_steps, jobs))

    cells = sorted(str(c) for c in (args.out / "cells").glob("*.json"))
    cells += sorted(str(c) for c in (args.out / "peer").glob("*.json")) if args.peer else []
    if cells:  # none with --stacks 0 (tuning only)
        run_logged([*ISONET, "benchmark-table", *cells, "--tuned", str(tuned), "--out-md", str(args.out / "table1.md")],
                   args.out / "logs" / "table.log", env)
    if failed:
        sys.exit(f"{failed} cell(s) failed; see {args.out / 'logs'}")


if __name__ == "__main__":
    main()
