rule convert:
    input:
        sample_input,
    output:
        directory(f"{RESULTS}/{{sample}}/input.ome.zarr"),
    params:
        chunks=" ".join(str(c) for c in config["convert"]["chunks"]),
        level=config["convert"]["compression_level"],
        voxel_size=voxel_size_arg,
    log:
        "logs/{sample}/convert.log",
    threads: 1
    shell:
        "isonet convert {input} {output} --chunks {params.chunks} --compression-level {params.level}"
        " {params.voxel_size} > {log} 2>&1"
