rule patches:
    input:
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
        psf=f"{RESULTS}/{{sample}}/psf/psf.npz",
    output:
        f"{RESULTS}/{{sample}}/train/patches.npz",
    params:
        c=config["patches"],
        subsample=subsample_arg,
        percentiles=" ".join(str(p) for p in config["patches"]["norm_percentiles"]),
    log:
        "logs/{sample}/patches.log",
    threads: 1
    shell:
        "isonet patches {input.zarr} {input.psf} {output} {params.subsample}"
        " --n-patches {params.c[n_patches]} --patch-size {params.c[patch_size]}"
        " --foreground-percentile {params.c[foreground_percentile]}"
        " --foreground-fraction {params.c[foreground_fraction]}"
        " --norm-percentiles {params.percentiles} --seed {params.c[seed]} > {log} 2>&1"
