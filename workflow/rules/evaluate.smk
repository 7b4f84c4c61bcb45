rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        json=f"{RESULTS}/{{sample}}/metrics.json",
        md=f"{RESULTS}/{{sample}}/metrics.md",
    log:
        "logs/{sample}/evaluate.log",
    benchmark:
        "logs/benchmarks/{sample}/evaluate.tsv"
    wildcard_constraints:
        sample=volume_samples(),  # series samples: rule evaluate_series (timelapse.smk)
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("evaluate")
    resources:
        mem_mb=rule_mem_mb("evaluate"),
        runtime=rule_runtime("evaluate"),
    params:
        labels=lambda wildcards, input: shlex.quote(f"{input.restored}/{LABELS}"),
        gt=evaluate_gt_args,
        subsample=subsample_arg,
        c=settings("segment"),
        block=lambda wildcards: join(
            sample_settings(wildcards.sample, "segment")["block"]
        ),
    shell:
        "isonet evaluate {input.zarr:q} {input.restored:q} {params.labels} {output.json:q}"
        " {output.md:q} {params.gt} {params.subsample} --min-distance {params.c[min_distance]}"
        " --min-size {params.c[min_size]} --block {params.block} --halo {params.c[halo]} --max-window {params.c[max_window]}"
        " > {log:q} 2>&1"
