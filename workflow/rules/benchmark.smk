# The synthetic benchmark (Weigert et al. 2017, Table 1): one job per (phantom, PSF, stack) cell,
# each writing a JSON, and one job gathering them into results/benchmark/table1.md.
#
# Standalone:  snakemake -s workflow/rules/benchmark.smk --configfile config/benchmark.yaml --cores 2
# Rules are defined only when the config has a `benchmark` section, so including this file from
# workflow/Snakefile changes nothing for the ordinary workflow.

import json
import shlex

if "benchmark" in config:
    BENCH = config["benchmark"]
    BENCH_SIZE = BENCH["sizes"][BENCH.get("size", "quick")]
    BENCH_RESULTS = BENCH.get("results", "results/benchmark")
    BENCH_PSFS = BENCH["psfs"]

    wildcard_constraints:
        phantom="nuclei|membranes|both",
        psf="|".join(BENCH_PSFS),
        stack=r"\d+",

    rule benchmark:
        default_target: True
        input:
            f"{BENCH_RESULTS}/table1.md",

    rule benchmark_cell:
        output:
            f"{BENCH_RESULTS}/cells/{{phantom}}_{{psf}}_{{stack}}.json",
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
        shell:
            "OMP_NUM_THREADS={threads} isonet benchmark-cell {output} --phantom {wildcards.phantom}"
            " --psf-name {wildcards.psf} --psf-kind {params.kind} --psf-params {params.psf_params}"
            " --stack {wildcards.stack} --settings {params.settings} --threads {threads} > {log} 2>&1"

    rule benchmark_table:
        input:
            expand(
                f"{BENCH_RESULTS}/cells/{{phantom}}_{{psf}}_{{stack}}.json",
                phantom=BENCH["phantoms"],
                psf=list(BENCH_PSFS),
                stack=range(int(BENCH_SIZE["stacks"])),
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
            "isonet benchmark-table {input} --out-md {output} > {log} 2>&1"
