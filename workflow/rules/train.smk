rule train:
    input:
        patches=f"{RESULTS}/{{sample}}/train/patches.npz",
        psf=f"{RESULTS}/{{sample}}/psf/psf.json",
    output:
        model=f"{RESULTS}/{{sample}}/train/model.pt",
        curve=f"{RESULTS}/{{sample}}/train/training.tsv",
    params:
        c=config["train"],
        checkpoint=f"{RESULTS}/{{sample}}/train/checkpoint.pt",
    log:
        "logs/{sample}/train.log",
    threads: workflow.cores
    shell:
        "isonet train {input.patches} {input.psf} {output.model} {output.curve}"
        " --checkpoint {params.checkpoint} --model {params.c[model]} --epochs {params.c[epochs]}"
        " --batch-size {params.c[batch_size]} --learning-rate {params.c[learning_rate]}"
        " --validation-fraction {params.c[validation_fraction]} --dropout {params.c[dropout]}"
        " --device {params.c[device]} --precision {params.c[precision]} --seed {params.c[seed]}"
        " --threads {threads} > {log} 2>&1"
