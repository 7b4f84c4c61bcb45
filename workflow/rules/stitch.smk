rule stitch:
    input:
        f"{RESULTS}/{{sample}}/predict/predicted.ome.zarr",
    output:
        directory(f"{RESULTS}/{{sample}}/restored.ome.zarr"),
    params:
        levels=config["stitch"]["pyramid_levels"],
    log:
        "logs/{sample}/stitch.log",
    threads: 1
    shell:
        "isonet stitch {input} {output} --levels {params.levels} > {log} 2>&1"


rule export_tiff:
    input:
        f"{RESULTS}/{{sample}}/restored.ome.zarr",
    output:
        f"{RESULTS}/{{sample}}/restored.tif",
    log:
        "logs/{sample}/export_tiff.log",
    threads: 1
    shell:
        "isonet export-tiff {input} {output} > {log} 2>&1"
