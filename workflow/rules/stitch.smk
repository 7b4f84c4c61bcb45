rule stitch:
    input:
        f"{RESULTS}/{{sample}}/predict/predicted.ome.zarr",
    output:
        directory(f"{RESULTS}/{{sample}}/restored.ome.zarr"),
    log:
        "logs/{sample}/stitch.log",
    benchmark:
        "logs/benchmarks/{sample}/stitch.tsv"
    wildcard_constraints:
        sample=volume_samples(),  # series samples: rule assemble (timelapse.smk)
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("stitch")
    resources:
        mem_mb=rule_mem_mb("stitch"),
        runtime=rule_runtime("stitch"),
    params:
        c=settings("stitch"),
    shell:
        "isonet stitch {input:q} {output:q} --levels {params.c[pyramid_levels]} > {log:q} 2>&1"


rule export_tiff:
    input:
        f"{RESULTS}/{{sample}}/restored.ome.zarr",
    output:
        f"{RESULTS}/{{sample}}/restored.tif",
    log:
        "logs/{sample}/export_tiff.log",
    benchmark:
        "logs/benchmarks/{sample}/export_tiff.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("export_tiff")
    resources:
        mem_mb=rule_mem_mb("export_tiff"),
        runtime=rule_runtime("export_tiff"),
    shell:
        "isonet export-tiff {input:q} {output:q} > {log:q} 2>&1"


rule export_ngff04:
    input:
        image=f"{RESULTS}/{{sample}}/restored.ome.zarr",
        # segment writes its labels into the image (labels/nuclei); the export takes them along
        labels=f"{RESULTS}/{{sample}}/labels.json",
    output:
        directory(f"{RESULTS}/{{sample}}/restored.ngff04.zarr"),
    log:
        "logs/{sample}/export_ngff04.log",
    benchmark:
        "logs/benchmarks/{sample}/export_ngff04.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("export_ngff04")
    resources:
        mem_mb=rule_mem_mb("export_ngff04"),
        runtime=rule_runtime("export_ngff04"),
    shell:
        "isonet export-ngff04 {input.image:q} {output:q} > {log:q} 2>&1"
