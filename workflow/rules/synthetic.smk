rule synthetic:
    output:
        acquired="resources/synthetic/{sample}/acquired.tif",
        gt="resources/synthetic/{sample}/gt.tif",
        iso_gt="resources/synthetic/{sample}/iso_gt.tif",
        labels="resources/synthetic/{sample}/labels.tif",
        info="resources/synthetic/{sample}/synthetic.json",
    params:
        c=config["synthetic"],
        shape=" ".join(str(s) for s in config["synthetic"]["shape"]),
        psf=as_json(config["synthetic"]["psf"]),
    log:
        "logs/{sample}/synthetic.log",
    threads: 1
    shell:
        "isonet synthetic --out-dir resources/synthetic/{wildcards.sample} --shape {params.shape}"
        " --kind {params.c[kind]} --seed {params.c[seed]} --pixel-size {params.c[pixel_size_um]}"
        " --subsample {params.c[subsample]} --psf-kind gaussian --psf-params {params.psf}"
        " --photons {params.c[photons]} --read-noise {params.c[read_noise]} --offset {params.c[offset]}"
        " > {log} 2>&1"
