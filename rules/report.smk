# What researchers look at after a sweep: plots, a plain summary and an Optuna journal of every trial, all drawn
# from the sweep's files. `snakemake --report report.html` gathers the plots flagged report() into one page.
# The MBPP plot exists for configs with MBPP datasets; the summary's zero-shot recommendations need two datasets
# or more (leave-one-out).
REPORT_MBPP = ["results/report/mbpp.png"] if MBPP_DATASETS else []


rule plot_landscape:
    input:
        runs="results/tables/runs.csv",
    output:
        pairs=report(
            "results/report/landscape/{dataset}.png",
            caption="../workflow/report/landscape.rst",
            category="Loss landscapes",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "view": "pairs"},
        ),
        slices=report(
            "results/report/slices/{dataset}.png",
            caption="../workflow/report/slices.rst",
            category="Loss landscapes",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "view": "1-D slices"},
        ),
    log:
        "logs/report/landscape/{dataset}.log",
    conda:
        "../envs/metatune.yaml"
    params:
        space=config["space"],
    script:
        "../workflow/scripts/plot_landscape.py"


rule plot_search:
    input:
        runs="results/tables/runs.csv",
    output:
        report(
            "results/report/best_so_far.png",
            caption="../workflow/report/best_so_far.rst",
            category="Search",
        ),
    log:
        "logs/report/search.log",
    conda:
        "../envs/metatune.yaml"
    params:
        method=config["optimizer"]["method"],
    script:
        "../workflow/scripts/plot_search.py"


# The learning curves are read from the curve.csv beside each rerun metrics.json: not a declared output of the
# trials (each declared file costs a sweep's DAG time), so the rerun collections stand in for them here.
rule plot_reruns:
    input:
        runs="results/tables/runs.csv",
        best="results/tables/best.csv",
        collected=collected("rerun"),
    output:
        intervals=report(
            "results/report/reruns.png",
            caption="../workflow/report/reruns.rst",
            category="Reruns",
        ),
        curves=report(
            "results/report/learning_curves.png",
            caption="../workflow/report/learning_curves.rst",
            category="Reruns",
        ),
    log:
        "logs/report/reruns.log",
    conda:
        "../envs/metatune.yaml"
    script:
        "../workflow/scripts/plot_reruns.py"


rule plot_transfer:
    input:
        runs="results/tables/runs.csv",
        best="results/tables/best.csv",
    output:
        metafeatures=report(
            "results/report/transfer_metafeatures.png",
            caption="../workflow/report/transfer_metafeatures.rst",
            category="Transfer",
        ),
        stage_gain=report(
            "results/report/stage2_vs_stage1.png",
            caption="../workflow/report/stage_gain.rst",
            category="Transfer",
        ),
    log:
        "logs/report/transfer.log",
    conda:
        "../envs/metatune.yaml"
    params:
        space=config["space"],
        n_metafeatures=4,
        method=config["optimizer"]["method"],
    script:
        "../workflow/scripts/plot_transfer.py"


rule plot_cost:
    input:
        runs="results/tables/runs.csv",
    output:
        report(
            "results/report/cost_quality.png",
            caption="../workflow/report/cost_quality.rst",
            category="Cost",
        ),
    log:
        "logs/report/cost.log",
    conda:
        "../envs/metatune.yaml"
    script:
        "../workflow/scripts/plot_cost.py"


rule plot_mbpp:
    input:
        comparison=rules.mbpp_compare.output[0],
    output:
        report(
            "results/report/mbpp.png",
            caption="../workflow/report/mbpp.rst",
            category="MBPP",
        ),
    log:
        "logs/report/mbpp.log",
    conda:
        "../envs/metatune.yaml"
    script:
        "../workflow/scripts/plot_mbpp.py"


rule summary:
    input:
        runs="results/tables/runs.csv",
        best="results/tables/best.csv",
        recommendations=rules.recommendations.input if len(DATASETS) > 1 else [],
        mbpp=rules.mbpp_compare.output if MBPP_DATASETS else [],
    output:
        report(
            "results/report/summary.md",
            caption="../workflow/report/summary.rst",
            category="Summary",
        ),
    log:
        "logs/report/summary.log",
    conda:
        "../envs/metatune.yaml"
    params:
        method=config["optimizer"]["method"],
    script:
        "../workflow/scripts/summary.py"


# The live journal: each collection's trials are appended to it as the collection lands (a high priority runs
# these jobs as soon as they can; a dataset's rounds append in order), so `optuna-dashboard
# results/optuna/live.log` follows a running sweep. Each job's declared output is a receipt; rule optuna_journal
# below writes the complete journal once every collection is in.
rule optuna_live:
    input:
        collection="results/collected/{stage}/{dataset}.jsonl",
    output:
        "results/optuna/landed/{stage}/{dataset}.json",
    log:
        "logs/report/optuna_live/{stage}/{dataset}.log",
    wildcard_constraints:
        stage="stage1|rerun",
    priority: 50
    conda:
        "../envs/metatune.yaml"
    params:
        space=config["space"],
        journal=LIVE_JOURNAL,
    script:
        "../workflow/scripts/optuna_live.py"


rule optuna_live_round:
    input:
        collection="results/collected/stage2/{dataset}/round{round}.jsonl",
        earlier=lambda wc: landed(earlier_rounds(wc)),
    output:
        "results/optuna/landed/stage2/{dataset}/round{round}.json",
    log:
        "logs/report/optuna_live/stage2/{dataset}/round{round}.log",
    priority: 50
    conda:
        "../envs/metatune.yaml"
    params:
        space=config["space"],
        journal=LIVE_JOURNAL,
    script:
        "../workflow/scripts/optuna_live.py"


rule optuna_journal:
    input:
        collected=ALL_COLLECTED,
    output:
        "results/optuna/journal.log",
    log:
        "logs/report/optuna_journal.log",
    conda:
        "../envs/metatune.yaml"
    params:
        space=config["space"],
        datasets=list(DATASETS),
    script:
        "../workflow/scripts/optuna_journal.py"


# Named target: every file of the report (README: "Seeing the results").
rule report_files:
    input:
        landscapes=expand("results/report/landscape/{dataset}.png", dataset=DATASETS),
        slices=expand("results/report/slices/{dataset}.png", dataset=DATASETS),
        search="results/report/best_so_far.png",
        reruns=rules.plot_reruns.output,
        transfer=rules.plot_transfer.output,
        cost="results/report/cost_quality.png",
        mbpp=REPORT_MBPP,
        summary="results/report/summary.md",
        journal="results/optuna/journal.log",
        live=landed(ALL_COLLECTED),
