# The synthetic benchmark (Weigert et al. 2017, Table 1): one job tuning the networks on a
# validation stack, one job per (phantom, PSF, stack) cell writing a JSON, optionally one CSBDeep
# peer job per cell, and one job gathering them into results/benchmark/table1.md.
#
# Standalone:  snakemake -s workflow/rules/benchmark.smk --configfile config/benchmark.yaml --cores 2
# Rules are defined only when the config has a `benchmark` section, so including this file from
# workflow/Snakefile changes nothing for the ordinary workflow.

import json
import shlex
from pathlib import Path

if "benchmark" in config:
    BENCH = config["benchmark"]
    BENCH_SIZE = BENCH["sizes"][BENCH.get("size", "quick")]
    BENCH_RESULTS = BENCH.get("results", "results/benchmark")
    BENCH_PSFS = BENCH["psfs"]
    BENCH_TUNE = BENCH["tune"]
    BENCH_PEER = BENCH.get("peer", {}).get("enabled", False)
    BENCH_REPO = Path(workflow.current_basedir).parents[1]
    BENCH_CELL = f"{BENCH_RESULTS}/cells/{{phantom}}_{{psf}}_{{stack}}"
    BENCH_STACKS = {
        "phantom": BENCH["phantoms"],
        "psf": list(BENCH_PSFS),
        "stack": range(int(BENCH_SIZE["stacks"])),
    }

    wildcard_constraints:
        phantom="nuclei|membranes|both",
        psf="|".join(BENCH_PSFS),
        stack=r"\d+",

    rule benchmark:
        default_target: True
        input:
            f"{BENCH_RESULTS}/table1.md",

    rule benchmark_tune:
        output:
            f"{BENCH_RESULTS}/tuned.json",
        log:
            f"{BENCH_RESULTS}/logs/tune.log",
        benchmark:
            f"{BENCH_RESULTS}/logs/tune.benchmark.tsv"
        conda:
            "../envs/isonet.yaml"
        # every cell waits for it: it may use more threads than a cell (capped by --cores)
        threads: int(BENCH_TUNE.get("threads", BENCH.get("threads", 1)))
        resources:
            mem_mb=4000,
            runtime=240,
        params:
            phantom=BENCH_TUNE["phantom"],
            psf=BENCH_TUNE["psf"],
            kind=BENCH_PSFS[BENCH_TUNE["psf"]]["kind"],
            psf_params=shlex.quote(json.dumps(BENCH_PSFS[BENCH_TUNE["psf"]]["params"])),
            grid=shlex.quote(json.dumps(BENCH_TUNE["grid"])),
            settings=shlex.quote(json.dumps(BENCH_SIZE["settings"])),
        shell:
            "OMP_NUM_THREADS={threads} isonet benchmark-tune {output} --phantom {params.phantom}"
            " --psf-name {params.psf} --psf-kind {params.kind} --psf-params {params.psf_params}"
            " --grid {params.grid} --settings {params.settings} --threads {threads} > {log} 2>&1"

    rule benchmark_cell:
        input:
            tuned=f"{BENCH_RESULTS}/tuned.json",
        output:
            **{"json": f"{BENCH_CELL}.json"},
            **({"stack": temp(f"{BENCH_CELL}.npz")} if BENCH_PEER else {}),
        log:
            f"{BENCH_RESULTS}/logs/{{phantom}}_{{psf}}_{{stack}}.log",
        benchmark:
            f"{BENCH_RESULTS}/logs/{{phantom}}_{{psf}}_{{stack}}.benchmark.tsv"
        conda:
            "../envs/isonet.yaml"
        threads: int(BENCH.get("threads", 1))
        resources:
            mem_mb=4000,
            runtime=120,
        params:
            kind=lambda w: BENCH_PSFS[w.psf]["kind"],
            psf_params=lambda w: shlex.quote(json.dumps(BENCH_PSFS[w.psf]["params"])),
            settings=lambda w: shlex.quote(
                json.dumps(
                    {
                        **BENCH_SIZE["settings"],
                        "rl_iterations": int(BENCH_PSFS[w.psf]["rl_iterations"]),
                    }
                )
            ),
            stack_npz=lambda w, output: (
                f"--stack-npz {output.stack}" if BENCH_PEER else ""
            ),
        shell:
            "OMP_NUM_THREADS={threads} isonet benchmark-cell {output.json} --phantom {wildcards.phantom}"
            " --psf-name {wildcards.psf} --psf-kind {params.kind} --psf-params {params.psf_params}"
            " --stack {wildcards.stack} --settings {params.settings} --threads {threads}"
            " --tuned {input.tuned} {params.stack_npz} > {log} 2>&1"

    # CSBDeep IsotropicCARE on the cell's stack, for the wall time IsoNet-2 trained there; runs
    # in its own venv (make peer-venv), see benchmarks/csbdeep_peer.py
    rule benchmark_peer:
        input:
            cell=f"{BENCH_CELL}.json",
            stack=f"{BENCH_CELL}.npz",
        output:
            f"{BENCH_RESULTS}/peer/{{phantom}}_{{psf}}_{{stack}}.json",
        log:
            f"{BENCH_RESULTS}/logs/peer_{{phantom}}_{{psf}}_{{stack}}.log",
        benchmark:
            f"{BENCH_RESULTS}/logs/peer_{{phantom}}_{{psf}}_{{stack}}.benchmark.tsv"
        conda:
            "../envs/isonet.yaml"
        threads: int(BENCH.get("threads", 1))
        resources:
            mem_mb=3000,
            runtime=120,
        params:
            script=BENCH_REPO / "benchmarks" / "csbdeep_peer.py",
            python=BENCH.get("peer", {}).get(
                "python", str(BENCH_REPO / ".venv-peer" / "bin" / "python")
            ),
        shell:
            "python {params.script} {input.cell} {input.stack} {output} --threads {threads}"
            " --peer-python {params.python} > {log} 2>&1"

    rule benchmark_table:
        input:
            tuned=f"{BENCH_RESULTS}/tuned.json",
            cells=expand(f"{BENCH_CELL}.json", **BENCH_STACKS),
            peers=(
                expand(
                    f"{BENCH_RESULTS}/peer/{{phantom}}_{{psf}}_{{stack}}.json",
                    **BENCH_STACKS,
                )
                if BENCH_PEER
                else []
            ),
        output:
            f"{BENCH_RESULTS}/table1.md",
        log:
            f"{BENCH_RESULTS}/logs/table.log",
        benchmark:
            f"{BENCH_RESULTS}/logs/table.benchmark.tsv"
        conda:
            "../envs/isonet.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        shell:
            "isonet benchmark-table {input.cells} {input.peers} --tuned {input.tuned} --out-md {output} > {log} 2>&1"
