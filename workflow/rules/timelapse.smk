# Time-lapse and multi-channel samples (SERIES, from the input's header when the DAG is built):
# rule convert writes results/<sample>/input.ome.zarr with its t and c axes; then one PSF,
# one patch set and one model per channel (results/<sample>/c<c>/...), one predict job per
# (time point, channel) (results/<sample>/predict/t<t>_c<c>.ome.zarr; a rerun redoes only the
# missing ones), and assemble gathers them into results/<sample>/restored.ome.zarr (TCZYX).
# Indices t and c count in the converted input, after the sheet's timepoints/channels selection.
# Time points already run in parallel, so these jobs do not use predict.shards.


wildcard_constraints:
    t=r"\d+",
    c=r"\d+",


rule psf_channel:
    input:
        unpack(psf_source_input),
        bead=psf_file_input,
    output:
        npz=f"{RESULTS}/{{sample}}/c{{c}}/psf/psf.npz",
        json=f"{RESULTS}/{{sample}}/c{{c}}/psf/psf.json",
    log:
        "logs/{sample}/c{c}/psf.log",
    benchmark:
        "logs/benchmarks/{sample}/c{c}/psf.tsv"
    wildcard_constraints:
        sample=series_samples(),
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


rule patches_channel:
    input:
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
        psf=f"{RESULTS}/{{sample}}/c{{c}}/psf/psf.npz",
    output:
        f"{RESULTS}/{{sample}}/c{{c}}/train/patches.npz",
    log:
        "logs/{sample}/c{c}/patches.log",
    benchmark:
        "logs/benchmarks/{sample}/c{c}/patches.tsv"
    wildcard_constraints:
        sample=series_samples(),
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("patches")
    resources:
        mem_mb=rule_mem_mb("patches"),
        runtime=rule_runtime("patches"),
    params:
        c=settings("patches"),
        t=settings("train"),
        subsample=subsample_arg,
        camera=camera_arg,
        percentiles=lambda wildcards: join(
            sample_settings(wildcards.sample, "patches")["norm_percentiles"]
        ),
        n_timepoints=lambda wildcards: SAMPLES[wildcards.sample].train_timepoints,
    shell:
        "isonet patches {input.zarr:q} {input.psf:q} {output:q} {params.subsample}"
        " --channel {wildcards.c} --n-timepoints {params.n_timepoints}"
        " --n-patches {params.c[n_patches]} --patch-size {params.c[patch_size]}"
        " --foreground-percentile {params.c[foreground_percentile]}"
        " --foreground-fraction {params.c[foreground_fraction]}"
        " --norm-percentiles {params.percentiles} --seed {params.c[seed]}"
        " --validation-fraction {params.t[validation_fraction]} {params.camera} > {log:q} 2>&1"


rule train_channel:
    input:
        patches=f"{RESULTS}/{{sample}}/c{{c}}/train/patches.npz",
        psf=f"{RESULTS}/{{sample}}/c{{c}}/psf/psf.json",
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
    output:
        model=f"{RESULTS}/{{sample}}/c{{c}}/train/model.safetensors",
        curve=f"{RESULTS}/{{sample}}/c{{c}}/train/training.tsv",
    log:
        "logs/{sample}/c{c}/train.log",
    benchmark:
        "logs/benchmarks/{sample}/c{c}/train.tsv"
    wildcard_constraints:
        sample=series_samples(),
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("train")
    resources:
        **gpu_resources("train"),
        mem_mb=rule_mem_mb("train"),
        runtime=rule_runtime("train"),
    params:
        c=settings("train"),
        checkpoint=lambda wildcards, output: os.path.join(
            os.path.dirname(output.model), "checkpoint.safetensors"
        ),
    shell:
        "isonet train {input.patches:q} {input.psf:q} {output.model:q} {output.curve:q}"
        " --checkpoint {params.checkpoint:q} --model {params.c[model]} --epochs {params.c[epochs]}"
        " --steps {params.c[steps]} --minutes {params.c[minutes]}"
        " --batch-size {params.c[batch_size]} --learning-rate {params.c[learning_rate]}"
        " --validation-fraction {params.c[validation_fraction]} --dropout {params.c[dropout]}"
        " --device {params.c[device]} --precision {params.c[precision]} --seed {params.c[seed]}"
        " --lr-patience {params.c[lr_patience]} --warmup-steps {params.c[warmup_steps]}"
        " --schedule {params.c[schedule]} --input {input.zarr:q} --rounds {params.c[rounds]}"
        " --refine-steps {params.c[refine_steps]} --refine-planes {params.c[refine_planes]}"
        " --threads {threads} > {log:q} 2>&1"


rule predict_timepoint:
    input:
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
        model=series_model_input,
    output:
        directory(f"{RESULTS}/{{sample}}/predict/t{{t}}_c{{c}}.ome.zarr"),
    log:
        "logs/{sample}/predict/t{t}_c{c}.log",
    benchmark:
        "logs/benchmarks/{sample}/predict/t{t}_c{c}.tsv"
    wildcard_constraints:
        sample=series_samples(),
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("predict")
    resources:
        **gpu_resources("predict"),
        mem_mb=rule_mem_mb("predict"),
        runtime=rule_runtime("predict"),
    params:
        c=settings("predict"),
        chunks=lambda wildcards: join(
            sample_settings(wildcards.sample, "predict")["chunks"]
        ),
        block=lambda wildcards: join(
            sample_settings(wildcards.sample, "predict")["block"]
        ),
        subsample=subsample_arg,
        tta=tta_arg,
    shell:
        "isonet predict {input.zarr:q} {input.model:q} {output:q} --time {wildcards.t}"
        " --channel {wildcards.c} --chunks {params.chunks}"
        " --block {params.block} --combine {params.c[combine]} --batch-size {params.c[batch_size]}"
        " --device {params.c[device]} --precision {params.c[precision]} --workers {params.c[workers]}"
        " --threads {threads} {params.subsample} {params.tta} > {log:q} 2>&1"


rule assemble:
    input:
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
        parts=series_predictions,
    output:
        directory(f"{RESULTS}/{{sample}}/restored.ome.zarr"),
    log:
        "logs/{sample}/assemble.log",
    benchmark:
        "logs/benchmarks/{sample}/assemble.tsv"
    wildcard_constraints:
        sample=series_samples(),
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("stitch")
    resources:
        mem_mb=rule_mem_mb("stitch"),
        runtime=rule_runtime("stitch"),
    params:
        c=settings("stitch"),
        parts=series_part_args,
    shell:
        "isonet assemble {input.zarr:q} {output:q} {params.parts}"
        " --levels {params.c[pyramid_levels]} > {log:q} 2>&1"


# Labels of one channel at every time point, as NGFF labels of the restored image
# (restored.ome.zarr/labels/<channel name>, axes t, c (length 1), z, y, x), for the channels of
# segment.channels. As for rule segment, the labels cannot be an output (they are inside
# assemble's directory output): the rule's output is the summary segment/c<c>.json. The channels'
# jobs run one after the other (each waits for the previous channel's summary), because each
# adds its name to the image's labels listing.
rule segment_channel:
    input:
        image=f"{RESULTS}/{{sample}}/restored.ome.zarr",
        previous=previous_segment_summary,
    output:
        summary=f"{RESULTS}/{{sample}}/segment/c{{c}}.json",
    log:
        "logs/{sample}/segment/c{c}.log",
    benchmark:
        "logs/benchmarks/{sample}/segment/c{c}.tsv"
    wildcard_constraints:
        sample=series_samples(),
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("segment")
    resources:
        mem_mb=rule_mem_mb("segment"),
        runtime=rule_runtime("segment"),
    params:
        c=settings("segment"),
        labels=series_labels_arg,
        block=lambda wildcards: join(
            sample_settings(wildcards.sample, "segment")["block"]
        ),
    shell:
        "isonet segment {input.image:q} {params.labels} --channel {wildcards.c}"
        " --summary-json {output.summary:q} --min-distance {params.c[min_distance]}"
        " --min-size {params.c[min_size]} --block {params.block} --halo {params.c[halo]} --max-window {params.c[max_window]}"
        " > {log:q} 2>&1"


# PSNR of every restored (time point, channel) volume against the sheet's gt / iso_gt (which
# have the input file's time points and channels) and of cubic upsampling: metrics.json, .md.
rule evaluate_series:
    input:
        unpack(series_evaluate_inputs),
    output:
        json=f"{RESULTS}/{{sample}}/metrics.json",
        md=f"{RESULTS}/{{sample}}/metrics.md",
    log:
        "logs/{sample}/evaluate.log",
    benchmark:
        "logs/benchmarks/{sample}/evaluate.tsv"
    wildcard_constraints:
        sample=series_samples(),
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("evaluate")
    resources:
        mem_mb=rule_mem_mb("evaluate"),
        runtime=rule_runtime("evaluate"),
    params:
        gt=evaluate_gt_args,
        subsample=subsample_arg,
    shell:
        "isonet evaluate-series {input.zarr:q} {input.restored:q} {output.json:q} {output.md:q}"
        " {params.gt} {params.subsample} > {log:q} 2>&1"


# The report's orthogonal views of one channel, at the middle time point.
rule orthoviews_channel:
    input:
        zarr=f"{RESULTS}/{{sample}}/input.ome.zarr",
        restored=f"{RESULTS}/{{sample}}/restored.ome.zarr",
    output:
        report(
            f"{RESULTS}/{{sample}}/c{{c}}/report/orthoviews.png",
            caption="../report/orthoviews.rst",
            category="{sample}",
            subcategory="Restoration",
            labels={
                "sample": "{sample}",
                "channel": "{c}",
                "figure": "orthogonal views",
            },
        ),
    log:
        "logs/{sample}/c{c}/orthoviews.log",
    benchmark:
        "logs/benchmarks/{sample}/c{c}/orthoviews.tsv"
    wildcard_constraints:
        sample=series_samples(),
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("report")
    resources:
        mem_mb=rule_mem_mb("report"),
        runtime=rule_runtime("report"),
    params:
        max_size=config["report"]["max_plane_size"],
        t=lambda wildcards: SERIES[wildcards.sample].n_times // 2,
        title=lambda wildcards: shlex.quote(
            f"{wildcards.sample} {SERIES[wildcards.sample].channel_names[int(wildcards.c)]}"
        ),
    shell:
        "isonet orthoviews {output:q} --input {input.zarr:q} --restored {input.restored:q}"
        " --time {params.t} --channel {wildcards.c} --title {params.title}"
        " --max-plane-size {params.max_size} > {log:q} 2>&1"


rule training_curve_channel:
    input:
        f"{RESULTS}/{{sample}}/c{{c}}/train/training.tsv",
    output:
        report(
            f"{RESULTS}/{{sample}}/c{{c}}/report/training_curve.png",
            caption="../report/training_curve.rst",
            category="{sample}",
            subcategory="Training",
            labels={
                "sample": "{sample}",
                "channel": "{c}",
                "figure": "training curve",
            },
        ),
    log:
        "logs/{sample}/c{c}/training_curve.log",
    benchmark:
        "logs/benchmarks/{sample}/c{c}/training_curve.tsv"
    wildcard_constraints:
        sample=series_samples(),
    conda:
        "../envs/isonet.yaml"
    threads: rule_threads("report")
    resources:
        mem_mb=rule_mem_mb("report"),
        runtime=rule_runtime("report"),
    shell:
        "isonet training-curve {input:q} {output:q} --title '{wildcards.sample} c{wildcards.c}'"
        " > {log:q} 2>&1"
