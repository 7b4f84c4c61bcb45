rule psf:
    input:
        unpack(psf_source_input),
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
        psf=psf_kind_args,
        measured=psf_file_arg,
    shell:
        "isonet psf --out-npz {output.npz:q} --out-json {output.json:q} {params.psf}"
        " --mode {params.c[mode]} {params.measured} > {log:q} 2>&1"
