rule train:
    input:
        patches=f"{RESULTS}/{{sample}}/train/patches.npz",
        psf=f"{RESULTS}/{{sample}}/psf/psf.json",
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
    output:
        model=f"{RESULTS}/{{sample}}/train/model.safetensors",
        curve=f"{RESULTS}/{{sample}}/train/training.tsv",
    log:
        "logs/{sample}/train.log",
    benchmark:
        "logs/benchmarks/{sample}/train.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("train")
    resources:
        **gpu_resources("train"),
        mem_mb=rule_mem_mb("train"),
        runtime=rule_runtime("train"),
    params:
        c=settings("train"),
        checkpoint=lambda wildcards, output: os.path.join(
            os.path.dirname(output.model), "checkpoint.safetensors"
        ),
    shell:
        "isonet train {input.patches:q} {input.psf:q} {output.model:q} {output.curve:q}"
        " --checkpoint {params.checkpoint:q} --model {params.c[model]} --epochs {params.c[epochs]}"
        " --steps {params.c[steps]} --minutes {params.c[minutes]}"
        " --batch-size {params.c[batch_size]} --learning-rate {params.c[learning_rate]}"
        " --validation-fraction {params.c[validation_fraction]} --dropout {params.c[dropout]}"
        " --device {params.c[device]} --precision {params.c[precision]} --seed {params.c[seed]}"
        " --lr-patience {params.c[lr_patience]} --warmup-steps {params.c[warmup_steps]}"
        " --schedule {params.c[schedule]} --input {input.zarr:q} --rounds {params.c[rounds]}"
        " --refine-steps {params.c[refine_steps]} --refine-planes {params.c[refine_planes]}"
        " --threads {threads} > {log:q} 2>&1"


# Optional target (not in `all`): snakemake results/<sample>/bioimageio/model.zip
rule export_bioimageio:
    input:
        f"{RESULTS}/{{sample}}/train/model.safetensors",
    output:
        f"{RESULTS}/{{sample}}/bioimageio/model.zip",
    log:
        "logs/{sample}/export_bioimageio.log",
    benchmark:
        "logs/benchmarks/{sample}/export_bioimageio.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("report")
    resources:
        mem_mb=rule_mem_mb("report"),
        runtime=rule_runtime("report"),
    shell:
        "isonet export-bioimageio {input:q} {output:q} --name {wildcards.sample:q} > {log:q} 2>&1"
