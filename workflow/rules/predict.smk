rule predict:
    input:
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
        model=model_input,
    output:
        predicted=directory(f"{RESULTS}/{{sample}}/predict/predicted.ome.zarr"),
        uncertainty=directory(f"{RESULTS}/{{sample}}/predict/uncertainty.ome.zarr"),
    log:
        "logs/{sample}/predict.log",
    benchmark:
        "logs/benchmarks/{sample}/predict.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("predict")
    resources:
        **gpu_resources("predict"),
        mem_mb=rule_mem_mb("predict"),
        runtime=rule_runtime("predict"),
    params:
        c=settings("predict"),
        chunks=lambda wildcards: join(
            sample_settings(wildcards.sample, "predict")["chunks"]
        ),
        block=lambda wildcards: join(
            sample_settings(wildcards.sample, "predict")["block"]
        ),
        subsample=subsample_arg,
        tta=tta_arg,
    shell:
        "isonet predict {input.zarr:q} {input.model:q} {output.predicted:q} --chunks {params.chunks}"
        " --block {params.block} --combine {params.c[combine]} --batch-size {params.c[batch_size]}"
        " --device {params.c[device]} --precision {params.c[precision]} --workers {params.c[workers]}"
        " --threads {threads} {params.subsample} {params.tta}"
        " --uncertainty {output.uncertainty:q} > {log:q} 2>&1"
