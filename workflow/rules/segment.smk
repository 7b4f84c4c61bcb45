# The labels are written into the restored image, as NGFF labels (restored.ome.zarr/labels/nuclei,
# listed in restored.ome.zarr/labels), where OME-Zarr viewers find and overlay them. They cannot be
# an output of this rule: Snakemake refuses an output inside another rule's directory output. So
# the rule's output is the summary labels.json, written after the labels are in place (atomically),
# and what reads the labels (evaluate) takes labels.json as its input. isonet keeps the mtime of
# restored.ome.zarr when it adds the labels, so the image does not look newer than what was made
# from it; a rerun of stitch replaces restored.ome.zarr, labels included, and so reruns segment.
rule segment:
    input:
        f"{RESULTS}/{{sample}}/restored.ome.zarr",
    output:
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
        labels=lambda wildcards, input: shlex.quote(f"{input[0]}/{LABELS}"),
        block=lambda wildcards: join(
            sample_settings(wildcards.sample, "segment")["block"]
        ),
    shell:
        "isonet segment {input:q} {params.labels} --summary-json {output.summary:q}"
        " --min-distance {params.c[min_distance]} --min-size {params.c[min_size]}"
        " --block {params.block} --halo {params.c[halo]} --max-window {params.c[max_window]} > {log:q} 2>&1"
