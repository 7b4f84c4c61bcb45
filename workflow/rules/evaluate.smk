def evaluate_inputs(wildcards):
    gt = {k: v for k, v in ground_truth(wildcards.sample).items() if v}
    return {
        "zarr": f"{RESULTS}/{wildcards.sample}/input.ome.zarr",
        "restored": f"{RESULTS}/{wildcards.sample}/restored.ome.zarr",
        "labels": f"{RESULTS}/{wildcards.sample}/labels.ome.zarr",
        **gt,
    }


def evaluate_gt_args(wildcards, input):
    flags = {"gt": "--gt", "iso_gt": "--iso-gt", "gt_labels": "--gt-labels"}
    return " ".join(f"{flag} {input[k]}" for k, flag in flags.items() if k in input.keys())


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        json=f"{RESULTS}/{{sample}}/metrics.json",
        md=f"{RESULTS}/{{sample}}/metrics.md",
    params:
        gt=evaluate_gt_args,
        subsample=subsample_arg,
        c=config["segment"],
    log:
        "logs/{sample}/evaluate.log",
    threads: 1
    shell:
        "isonet evaluate {input.zarr} {input.restored} {input.labels} {output.json} {output.md}"
        " {params.gt} {params.subsample} --min-distance {params.c[min_distance]}"
        " --min-size {params.c[min_size]} > {log} 2>&1"
