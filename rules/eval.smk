# MBPP: the zero-shot base model, the winning rerun adapter of every dataset with `mbpp: true`, and a table
# comparing them. Generation needs a GPU for real models (the profiles give these rules one).


rule mbpp_baseline:
    output:
        generations="results/eval/mbpp/baseline/generations.jsonl",
        results="results/eval/mbpp/baseline/results.json",
    log:
        "logs/mbpp/baseline.log",
    benchmark:
        "results/benchmarks/mbpp/baseline.tsv"
    conda:
        "../envs/metatune.yaml"
    params:
        model=MBPP_MODEL,
        settings=config["mbpp"],
        seed=config["seed"],
    script:
        "../workflow/scripts/mbpp_eval.py"


rule mbpp_eval:
    input:
        best="results/tables/best.csv",
        reruns=lambda wc: collected("rerun", [wc.dataset]),
    output:
        generations="results/eval/mbpp/{dataset}/generations.jsonl",
        results="results/eval/mbpp/{dataset}/results.json",
    log:
        "logs/mbpp/{dataset}.log",
    benchmark:
        "results/benchmarks/mbpp/{dataset}.tsv"
    conda:
        "../envs/metatune.yaml"
    params:
        model=MBPP_MODEL,
        settings=config["mbpp"],
        seed=config["seed"],
    script:
        "../workflow/scripts/mbpp_eval.py"


rule mbpp_compare:
    input:
        baseline="results/eval/mbpp/baseline/results.json",
        adapters=expand(
            "results/eval/mbpp/{dataset}/results.json", dataset=MBPP_DATASETS
        ),
    output:
        "results/tables/mbpp_comparison.csv",
    log:
        "logs/mbpp/compare.log",
    conda:
        "../envs/metatune.yaml"
    params:
        datasets=MBPP_DATASETS,
    script:
        "../workflow/scripts/mbpp_compare.py"


rule mbpp:
    input:
        "results/tables/mbpp_comparison.csv",
