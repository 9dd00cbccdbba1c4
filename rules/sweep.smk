# The sweep: a stage-1 grid, R rounds of stage-2 proposals, reruns of the top K with new seeds, and the tables.
# Every trial is a file target; stage-2 and rerun trials read their hyperparameters from the proposals or
# selection file at run time, so the DAG is static and `snakemake -n` shows every job.
# A trial's only declared output is metrics.json (written last, atomically); curve.csv and spec.json beside it
# are written before it. Each declared file and each input edge costs the DAG time, and sweeps have tens of
# thousands of trials: so every metrics.json is read by one collect job only, and the rules downstream read
# the collections (one JSONL per dataset and stage, per round in stage 2).


rule trial_stage1:
    input:
        **TRIAL_DATA,
    output:
        metrics="results/trials/stage1/{dataset}/{trial}/metrics.json",
    log:
        "logs/trials/stage1/{dataset}/{trial}.log",
    wildcard_constraints:
        trial=r"g[0-9a-f]{10}",
    conda:
        "../envs/metatune.yaml"
    params:
        settings=stage_settings("stage1"),
        hp=stage1_hp,
    shell:
        "python -m metatune.trial --stage-settings {params.settings:q} --dataset {wildcards.dataset}"
        " --run-id {wildcards.trial} --metafeatures {input.metafeatures} --metrics {output.metrics}"
        " --hp {params.hp:q} > {log} 2>&1"


rule collect_stage1:
    input:
        metrics=lambda wc: trial_metrics("stage1", [wc.dataset]),
    output:
        "results/collected/stage1/{dataset}.jsonl",
    log:
        "logs/collect/stage1/{dataset}.log",
    conda:
        "../envs/metatune.yaml"
    script:
        "../workflow/scripts/collect_trials.py"


rule collect_round:
    input:
        metrics=lambda wc: [
            f"results/trials/stage2/{wc.dataset}/r{wc.round}-{k}/metrics.json"
            for k in range(config["stage2"]["batch"])
        ],
    output:
        "results/collected/stage2/{dataset}/round{round}.jsonl",
    log:
        "logs/collect/stage2/{dataset}/round{round}.log",
    conda:
        "../envs/metatune.yaml"
    script:
        "../workflow/scripts/collect_trials.py"


rule collect_reruns:
    input:
        metrics=lambda wc: trial_metrics("rerun", [wc.dataset]),
    output:
        "results/collected/rerun/{dataset}.jsonl",
    log:
        "logs/collect/rerun/{dataset}.log",
    conda:
        "../envs/metatune.yaml"
    script:
        "../workflow/scripts/collect_trials.py"


# Every dataset's stage-1 trials and metafeatures: what the optimizer learns from.
rule stage1_history:
    input:
        collected=collected("stage1"),
        metafeatures=expand(
            "results/data/{dataset}/metafeatures.json", dataset=DATASETS
        ),
    output:
        history="results/stage1/history.csv",
        metafeatures="results/stage1/metafeatures.json",
    log:
        "logs/stage1_history.log",
    conda:
        "../envs/metatune.yaml"
    params:
        space=config["space"],
        datasets=list(DATASETS),
    script:
        "../workflow/scripts/stage1_history.py"


# A proposal, once made, is kept, like a trial: growing a finished sweep (a dataset, a grid value) proposes only
# the new dataset's rounds. So the inputs every dataset shares are ancient (their newer copies do not redo old
# proposals), and the space comes from the config, not a param (a param that changes reruns its jobs).
# Delete results/stage2/ to propose anew.
rule propose:
    input:
        history=ancient("results/stage1/history.csv"),
        metafeatures=ancient("results/stage1/metafeatures.json"),
        earlier=earlier_rounds,
    output:
        "results/stage2/{dataset}/round{round}/proposals.json",
    log:
        "logs/propose/{dataset}/round{round}.log",
    benchmark:
        "results/benchmarks/propose/{dataset}/round{round}.tsv"
    conda:
        "../envs/metatune.yaml"
    params:
        method=config["optimizer"]["method"],
        batch=config["stage2"]["batch"],
        seed=config["seed"],
    script:
        "../workflow/scripts/propose.py"


# Leave-one-out: what the zero-shot method would have recommended for each dataset from the others' trials,
# to compare with what its own sweep found.
rule recommend:
    input:
        history="results/stage1/history.csv",
        metafeatures=expand(
            "results/data/{dataset}/metafeatures.json", dataset=DATASETS
        ),
    output:
        "results/recommend/{dataset}.json",
    log:
        "logs/recommend/{dataset}.log",
    conda:
        "../envs/metatune.yaml"
    params:
        space=config["space"],
        n=config["optimizer"]["recommend_n"],
        seed=config["seed"],
    script:
        "../workflow/scripts/recommend.py"


rule trial_stage2:
    input:
        **TRIAL_DATA,
        proposals="results/stage2/{dataset}/round{round}/proposals.json",
    output:
        metrics="results/trials/stage2/{dataset}/r{round}-{index}/metrics.json",
    log:
        "logs/trials/stage2/{dataset}/r{round}-{index}.log",
    wildcard_constraints:
        index=r"\d+",
    conda:
        "../envs/metatune.yaml"
    params:
        settings=stage_settings("stage2"),
    shell:
        "python -m metatune.trial --stage-settings {params.settings:q} --dataset {wildcards.dataset}"
        " --run-id r{wildcards.round}-{wildcards.index} --metafeatures {input.metafeatures}"
        " --metrics {output.metrics} --hp-file {input.proposals} --hp-index {wildcards.index}"
        " --round {wildcards.round} > {log} 2>&1"


rule select:
    input:
        collected=lambda wc: collected("stage1", [wc.dataset])
        + collected("stage2", [wc.dataset]),
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
        **TRIAL_DATA,
        selection="results/rerun/{dataset}/selection.json",
    output:
        metrics="results/trials/rerun/{dataset}/top{rank}-seed{seed}/metrics.json",
    log:
        "logs/trials/rerun/{dataset}/top{rank}-seed{seed}.log",
    wildcard_constraints:
        rank=r"[1-9]\d*",
        seed=r"[1-9]\d*",
    conda:
        "../envs/metatune.yaml"
    params:
        settings=stage_settings("rerun"),
    shell:
        "python -m metatune.trial --stage-settings {params.settings:q} --dataset {wildcards.dataset}"
        " --run-id top{wildcards.rank}-seed{wildcards.seed} --metafeatures {input.metafeatures}"
        " --metrics {output.metrics} --hp-file {input.selection} --hp-rank {wildcards.rank}"
        " --seed-index {wildcards.seed} > {log} 2>&1"


rule summarize_reruns:
    input:
        selections=expand("results/rerun/{dataset}/selection.json", dataset=DATASETS),
        collected=collected("rerun"),
    output:
        report(
            "results/tables/best.csv",
            caption="../workflow/report/best_table.rst",
            category="Tables",
        ),
    log:
        "logs/summarize_reruns.log",
    conda:
        "../envs/metatune.yaml"
    params:
        datasets=list(DATASETS),
        space=config["space"],
    script:
        "../workflow/scripts/summarize_reruns.py"


# Whatever target a run built, it ends by saying whether each dataset's winner is settled (if best.csv exists).
onsuccess:
    from metatune import verdict_cli

    verdict_cli.print_after_run()


rule export:
    input:
        collected=ALL_COLLECTED,
        metafeatures=expand(
            "results/data/{dataset}/metafeatures.json", dataset=DATASETS
        ),
    output:
        report(
            "results/tables/runs.csv",
            caption="../workflow/report/runs_table.rst",
            category="Tables",
        ),
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
        collected("stage1"),


rule stage2:
    input:
        collected("stage2"),


rule reruns:
    input:
        collected("rerun"),


rule recommendations:
    input:
        expand("results/recommend/{dataset}.json", dataset=DATASETS),


rule export_csv:
    input:
        runs="results/tables/runs.csv",
        best="results/tables/best.csv",
