rule predict:
    input:
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
        model=f"{RESULTS}/{{sample}}/train/model.pt",
    output:
        directory(f"{RESULTS}/{{sample}}/predict/predicted.ome.zarr"),
    params:
        c=config["predict"],
        chunks=" ".join(str(c) for c in config["predict"]["chunks"]),
        block=" ".join(str(c) for c in config["predict"]["block"]),
        subsample=subsample_arg,
    log:
        "logs/{sample}/predict.log",
    threads: workflow.cores
    shell:
        "isonet predict {input.zarr} {input.model} {output} --chunks {params.chunks} --block {params.block}"
        " --combine {params.c[combine]} --batch-size {params.c[batch_size]} --device {params.c[device]}"
        " --precision {params.c[precision]} --workers {params.c[workers]} --threads {threads}"
        " {params.subsample} > {log} 2>&1"
