# One job per volume (predict.shards: 1), or, with predict.shards: N, a job that creates the
# shared store, N jobs that fill disjoint sets of its blocks at the same time (GPUs or nodes of a
# cluster) and rule predict, which checks and publishes it.


rule predict_init:
    input:
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
        model=model_input,
    output:
        temp(f"{RESULTS}/{{sample}}/predict/shards/init.json"),
    log:
        "logs/{sample}/predict_init.log",
    benchmark:
        "logs/benchmarks/{sample}/predict_init.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: 1
    resources:
        mem_mb=rule_mem_mb("predict_init"),
        runtime=rule_runtime("predict_init"),
    params:
        store=f"{RESULTS}/{{sample}}/predict/predicted.ome.zarr",
        options=predict_options,
    shell:
        "isonet predict {input.zarr:q} {input.model:q} {params.store:q} {params.options} --threads {threads}"
        " --init --done {output:q} > {log:q} 2>&1"


rule predict_shard:
    input:
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
        model=model_input,
        init=f"{RESULTS}/{{sample}}/predict/shards/init.json",
    output:
        temp(f"{RESULTS}/{{sample}}/predict/shards/{{shard}}-of-{{n}}.json"),
    log:
        "logs/{sample}/predict_shard-{shard}-of-{n}.log",
    benchmark:
        "logs/benchmarks/{sample}/predict_shard-{shard}-of-{n}.tsv"
    wildcard_constraints:
        shard=r"\d+",
        n=r"\d+",
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("predict")
    resources:
        **gpu_resources("predict"),
        mem_mb=rule_mem_mb("predict"),
        runtime=rule_runtime("predict"),
    params:
        store=f"{RESULTS}/{{sample}}/predict/predicted.ome.zarr",
        options=predict_options,
    shell:
        "isonet predict {input.zarr:q} {input.model:q} {params.store:q} {params.options} --threads {threads}"
        " --shard {wildcards.shard}/{wildcards.n} --done {output:q} > {log:q} 2>&1"


rule predict:
    input:
        unpack(predict_inputs),
    output:
        predicted=directory(f"{RESULTS}/{{sample}}/predict/predicted.ome.zarr"),
        uncertainty=directory(f"{RESULTS}/{{sample}}/predict/uncertainty.ome.zarr"),
    log:
        "logs/{sample}/predict.log",
    benchmark:
        "logs/benchmarks/{sample}/predict.tsv"
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("predict")
    resources:
        **gpu_resources("predict"),
        mem_mb=rule_mem_mb("predict"),
        runtime=rule_runtime("predict"),
    params:
        options=predict_options,
        step=predict_step_arg,
    shell:
        "isonet predict {input.zarr:q} {input.model:q} {output.predicted:q} {params.options} --threads {threads}"
        " {params.step} > {log:q} 2>&1"
