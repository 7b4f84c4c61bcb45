rule convert:
    input:
        sample_input,
    output:
        directory(f"{RESULTS}/{{sample}}/input.ome.zarr"),
    log:
        "logs/{sample}/convert.log",
    benchmark:
        "logs/benchmarks/{sample}/convert.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("convert")
    resources:
        mem_mb=rule_mem_mb("convert"),
        runtime=rule_runtime("convert"),
    params:
        c=settings("convert"),
        chunks=lambda wildcards: join(
            sample_settings(wildcards.sample, "convert")["chunks"]
        ),
        voxel_size=voxel_size_arg,
        selection=convert_selection_arg,
    shell:
        "isonet convert {input:q} {output:q} --chunks {params.chunks}"
        " --compression-level {params.c[compression_level]} --levels {params.c[pyramid_levels]}"
        " {params.voxel_size} {params.selection} > {log:q} 2>&1"
