rule patches:
    input:
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
        psf=f"{RESULTS}/{{sample}}/psf/psf.npz",
    output:
        f"{RESULTS}/{{sample}}/train/patches.npz",
    log:
        "logs/{sample}/patches.log",
    benchmark:
        "logs/benchmarks/{sample}/patches.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("patches")
    resources:
        mem_mb=rule_mem_mb("patches"),
        runtime=rule_runtime("patches"),
    params:
        c=settings("patches"),
        t=settings("train"),
        subsample=subsample_arg,
        camera=camera_arg,
        percentiles=lambda wildcards: join(
            sample_settings(wildcards.sample, "patches")["norm_percentiles"]
        ),
    shell:
        "isonet patches {input.zarr:q} {input.psf:q} {output:q} {params.subsample}"
        " --n-patches {params.c[n_patches]} --patch-size {params.c[patch_size]}"
        " --foreground-percentile {params.c[foreground_percentile]}"
        " --foreground-fraction {params.c[foreground_fraction]}"
        " --norm-percentiles {params.percentiles} --seed {params.c[seed]}"
        " --validation-fraction {params.t[validation_fraction]} {params.camera} > {log:q} 2>&1"
