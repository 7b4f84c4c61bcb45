rule segment:
    input:
        f"{RESULTS}/{{sample}}/restored.ome.zarr",
    output:
        labels=directory(f"{RESULTS}/{{sample}}/labels.ome.zarr"),
        summary=f"{RESULTS}/{{sample}}/labels.json",
    params:
        c=config["segment"],
    log:
        "logs/{sample}/segment.log",
    threads: 1
    shell:
        "isonet segment {input} {output.labels} --summary-json {output.summary}"
        " --min-distance {params.c[min_distance]} --min-size {params.c[min_size]} > {log} 2>&1"
