rule segment:
    input:
        f"{RESULTS}/{{sample}}/restored.ome.zarr",
    output:
        labels=directory(f"{RESULTS}/{{sample}}/labels.ome.zarr"),
        summary=f"{RESULTS}/{{sample}}/labels.json",
    log:
        "logs/{sample}/segment.log",
    benchmark:
        "logs/benchmarks/{sample}/segment.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("segment")
    resources:
        mem_mb=rule_mem_mb("segment"),
        runtime=rule_runtime("segment"),
    params:
        c=settings("segment"),
        block=lambda wildcards: join(
            sample_settings(wildcards.sample, "segment")["block"]
        ),
    shell:
        "isonet segment {input:q} {output.labels:q} --summary-json {output.summary:q}"
        " --min-distance {params.c[min_distance]} --min-size {params.c[min_size]}"
        " --block {params.block} --halo {params.c[halo]} > {log:q} 2>&1"
