rule psf:
    input:
        bead=psf_file_input,
    output:
        npz=f"{RESULTS}/{{sample}}/psf/psf.npz",
        json=f"{RESULTS}/{{sample}}/psf/psf.json",
    log:
        "logs/{sample}/psf.log",
    benchmark:
        "logs/benchmarks/{sample}/psf.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("psf")
    resources:
        mem_mb=rule_mem_mb("psf"),
        runtime=rule_runtime("psf"),
    params:
        c=settings("psf"),
        psf_params=lambda wildcards: quoted_json(
            sample_settings(wildcards.sample, "psf")["params"]
        ),
        measured=psf_file_arg,
    shell:
        "isonet psf --out-npz {output.npz:q} --out-json {output.json:q} --kind {params.c[kind]}"
        " --params {params.psf_params} --mode {params.c[mode]} {params.measured} > {log:q} 2>&1"
