rule orthoviews:
    input:
        unpack(orthoview_inputs),
    output:
        report(
            f"{RESULTS}/{{sample}}/report/orthoviews.png",
            caption="../report/orthoviews.rst",
            category="{sample}",
            subcategory="Restoration",
            labels={"sample": "{sample}", "figure": "orthogonal views"},
        ),
    log:
        "logs/{sample}/orthoviews.log",
    benchmark:
        "logs/benchmarks/{sample}/orthoviews.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("report")
    resources:
        mem_mb=rule_mem_mb("report"),
        runtime=rule_runtime("report"),
    params:
        gt=orthoview_gt_arg,
        max_size=config["report"]["max_plane_size"],
    shell:
        "isonet orthoviews {output:q} --input {input.zarr:q} --restored {input.restored:q}"
        " {params.gt} --title {wildcards.sample:q} --max-plane-size {params.max_size} > {log:q} 2>&1"


rule training_curve:
    input:
        f"{RESULTS}/{{sample}}/train/training.tsv",
    output:
        report(
            f"{RESULTS}/{{sample}}/report/training_curve.png",
            caption="../report/training_curve.rst",
            category="{sample}",
            subcategory="Training",
            labels={"sample": "{sample}", "figure": "training curve"},
        ),
    log:
        "logs/{sample}/training_curve.log",
    benchmark:
        "logs/benchmarks/{sample}/training_curve.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("report")
    resources:
        mem_mb=rule_mem_mb("report"),
        runtime=rule_runtime("report"),
    shell:
        "isonet training-curve {input:q} {output:q} --title {wildcards.sample:q} > {log:q} 2>&1"


rule metrics_table:
    input:
        f"{RESULTS}/{{sample}}/metrics.json",
    output:
        report(
            f"{RESULTS}/{{sample}}/report/metrics.html",
            caption="../report/metrics.rst",
            category="{sample}",
            subcategory="Evaluation",
            labels={"sample": "{sample}", "figure": "metrics"},
        ),
    log:
        "logs/{sample}/metrics_table.log",
    benchmark:
        "logs/benchmarks/{sample}/metrics_table.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("report")
    resources:
        mem_mb=rule_mem_mb("report"),
        runtime=rule_runtime("report"),
    shell:
        "isonet metrics-table {input:q} {output:q} --title {wildcards.sample:q} > {log:q} 2>&1"


rule assess:
    input:
        unpack(assess_inputs),
    output:
        json=f"{RESULTS}/{{sample}}/quality.json",
        html=report(
            f"{RESULTS}/{{sample}}/report/quality.html",
            caption="../report/quality.rst",
            category="{sample}",
            subcategory="Evidence without ground truth",
            labels={"sample": "{sample}", "figure": "resolution and re-acquisition"},
        ),
        png=report(
            f"{RESULTS}/{{sample}}/report/uncertainty.png",
            caption="../report/uncertainty.rst",
            category="{sample}",
            subcategory="Evidence without ground truth",
            labels={"sample": "{sample}", "figure": "uncertainty"},
        ),
    log:
        "logs/{sample}/assess.log",
    benchmark:
        "logs/benchmarks/{sample}/assess.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("report")
    resources:
        mem_mb=rule_mem_mb("report"),
        runtime=rule_runtime("report"),
    params:
        iso_gt=assess_iso_gt_arg,
        subsample=subsample_arg,
        blocks=config["report"].get("quality_blocks", 24),
    shell:
        "isonet assess {input.zarr:q} {input.restored:q} {input.psf:q} {output.json:q}"
        " --html {output.html:q} --uncertainty {input.uncertainty:q} --uncertainty-png {output.png:q}"
        " {params.iso_gt} {params.subsample} --blocks {params.blocks} --title {wildcards.sample:q}"
        " > {log:q} 2>&1"
