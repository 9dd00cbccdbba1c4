# The sweep: a stage-1 grid, R rounds of stage-2 proposals, reruns of the top K with new seeds, and the tables.
# Every trial is a file target; stage-2 and rerun trials read their hyperparameters from the proposals or
# selection file at run time, so the DAG is static and `snakemake -n` shows every job.


rule trial_stage1:
    input:
        unpack(trial_data),
    output:
        metrics="results/trials/stage1/{dataset}/{trial}/metrics.json",
        curve="results/trials/stage1/{dataset}/{trial}/curve.csv",
    log:
        "logs/trials/stage1/{dataset}/{trial}.log",
    benchmark:
        "results/benchmarks/trials/stage1/{dataset}/{trial}.tsv"
    wildcard_constraints:
        trial=r"g[0-9a-f]{10}",
    conda:
        "../envs/metatune.yaml"
    params:
        spec=lambda wc, input, output: trial_spec("stage1", wc, input, output),
    shell:
        "python -m metatune.trial {params.spec:q} > {log} 2>&1"


rule stage1_history:
    input:
        metrics=trial_metrics("stage1"),
    output:
        "results/stage1/history.csv",
    log:
        "logs/stage1_history.log",
    conda:
        "../envs/metatune.yaml"
    params:
        space=config["space"],
    script:
        "../workflow/scripts/stage1_history.py"


rule propose:
    input:
        history="results/stage1/history.csv",
        earlier=earlier_rounds,
        metafeatures=expand(
            "results/data/{dataset}/metafeatures.json", dataset=DATASETS
        ),
    output:
        "results/stage2/{dataset}/round{round}/proposals.json",
    log:
        "logs/propose/{dataset}/round{round}.log",
    benchmark:
        "results/benchmarks/propose/{dataset}/round{round}.tsv"
    conda:
        "../envs/metatune.yaml"
    params:
        space=config["space"],
        method=config["optimizer"]["method"],
        batch=config["stage2"]["batch"],
        seed=config["seed"],
        datasets=list(DATASETS),
    script:
        "../workflow/scripts/propose.py"


rule trial_stage2:
    input:
        unpack(trial_data),
        proposals=lambda wc: f"results/stage2/{wc.dataset}/round{wc.trial[1:].split('-')[0]}/proposals.json",
    output:
        metrics="results/trials/stage2/{dataset}/{trial}/metrics.json",
        curve="results/trials/stage2/{dataset}/{trial}/curve.csv",
    log:
        "logs/trials/stage2/{dataset}/{trial}.log",
    benchmark:
        "results/benchmarks/trials/stage2/{dataset}/{trial}.tsv"
    wildcard_constraints:
        trial=r"r\d+-\d+",
    conda:
        "../envs/metatune.yaml"
    params:
        spec=lambda wc, input, output: trial_spec("stage2", wc, input, output),
        hp_source=lambda wc: hp_source("stage2", wc),
    shell:
        "python -m metatune.trial {params.spec:q} {params.hp_source} > {log} 2>&1"


rule select:
    input:
        stage1=lambda wc: trial_metrics("stage1", [wc.dataset]),
        stage2=lambda wc: trial_metrics("stage2", [wc.dataset]),
    output:
        "results/rerun/{dataset}/selection.json",
    log:
        "logs/select/{dataset}.log",
    conda:
        "../envs/metatune.yaml"
    params:
        top_k=config["rerun"]["top_k"],
    script:
        "../workflow/scripts/select.py"


rule trial_rerun:
    input:
        unpack(trial_data),
        selection="results/rerun/{dataset}/selection.json",
    output:
        metrics="results/trials/rerun/{dataset}/{trial}/metrics.json",
        curve="results/trials/rerun/{dataset}/{trial}/curve.csv",
    log:
        "logs/trials/rerun/{dataset}/{trial}.log",
    benchmark:
        "results/benchmarks/trials/rerun/{dataset}/{trial}.tsv"
    wildcard_constraints:
        trial=r"top\d+-seed\d+",
    conda:
        "../envs/metatune.yaml"
    params:
        spec=lambda wc, input, output: trial_spec("rerun", wc, input, output),
        hp_source=lambda wc: hp_source("rerun", wc),
    shell:
        "python -m metatune.trial {params.spec:q} {params.hp_source} > {log} 2>&1"


rule summarize_reruns:
    input:
        selections=expand("results/rerun/{dataset}/selection.json", dataset=DATASETS),
        metrics=trial_metrics("rerun"),
    output:
        "results/tables/best.csv",
    log:
        "logs/summarize_reruns.log",
    conda:
        "../envs/metatune.yaml"
    params:
        datasets=list(DATASETS),
    script:
        "../workflow/scripts/summarize_reruns.py"


rule export:
    input:
        metrics=trial_metrics("stage1")
        + trial_metrics("stage2")
        + trial_metrics("rerun"),
        metafeatures=expand(
            "results/data/{dataset}/metafeatures.json", dataset=DATASETS
        ),
    output:
        "results/tables/runs.csv",
    log:
        "logs/export.log",
    conda:
        "../envs/metatune.yaml"
    params:
        space=config["space"],
        datasets=list(DATASETS),
    script:
        "../workflow/scripts/export.py"


# Named targets, as the original pipeline's commands (README: "Stages").
rule stage1:
    input:
        trial_metrics("stage1"),


rule stage2:
    input:
        trial_metrics("stage2"),


rule reruns:
    input:
        trial_metrics("rerun"),


rule export_csv:
    input:
        runs="results/tables/runs.csv",
        best="results/tables/best.csv",
