rule synthetic:
    output:
        acquired="resources/synthetic/{sample}/acquired.tif",
        gt="resources/synthetic/{sample}/gt.tif",
        iso_gt="resources/synthetic/{sample}/iso_gt.tif",
        labels="resources/synthetic/{sample}/labels.tif",
        info="resources/synthetic/{sample}/synthetic.json",
    log:
        "logs/{sample}/synthetic.log",
    benchmark:
        "logs/benchmarks/{sample}/synthetic.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("synthetic")
    resources:
        mem_mb=rule_mem_mb("synthetic"),
        runtime=rule_runtime("synthetic"),
    params:
        c=settings("synthetic"),
        shape=lambda wildcards: join(
            sample_settings(wildcards.sample, "synthetic")["shape"]
        ),
        psf=lambda wildcards: quoted_json(
            sample_settings(wildcards.sample, "synthetic")["psf"]
        ),
        out_dir=lambda wildcards, output: os.path.dirname(output.acquired),
    shell:
        "isonet synthetic --out-dir {params.out_dir:q} --shape {params.shape}"
        " --kind {params.c[kind]} --seed {params.c[seed]} --pixel-size {params.c[pixel_size_um]}"
        " --subsample {params.c[subsample]} --psf-kind gaussian --psf-params {params.psf}"
        " --photons {params.c[photons]} --read-noise {params.c[read_noise]} --offset {params.c[offset]}"
        " > {log:q} 2>&1"
