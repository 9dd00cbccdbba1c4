# The data stage: prefetch -> normalize -> metafeatures -> nanoGPT bins -> one table of every dataset.


rule prefetch_dataset:
    output:
        records="resources/raw/{dataset}/records.jsonl",
        manifest="resources/raw/{dataset}/manifest.json",
    log:
        "logs/prefetch/{dataset}.log",
    benchmark:
        "results/benchmarks/prefetch/{dataset}.tsv"
    # Downloads need the internet, which cluster compute nodes may lack: run on the submitting machine.
    localrule: True
    conda:
        "../envs/metatune.yaml"
    params:
        source=lambda wc: DATASETS[wc.dataset]["source"],
        cache_dir="resources/hf_cache",
    script:
        "../workflow/scripts/prefetch.py"


rule normalize:
    input:
        records="resources/raw/{dataset}/records.jsonl",
    output:
        train="results/data/{dataset}/train.jsonl",
        val="results/data/{dataset}/val.jsonl",
        test="results/data/{dataset}/test.jsonl",
        stats="results/data/{dataset}/stats.json",
    log:
        "logs/normalize/{dataset}.log",
    benchmark:
        "results/benchmarks/normalize/{dataset}.tsv"
    conda:
        "../envs/metatune.yaml"
    params:
        dataset=lambda wc: DATASETS[wc.dataset],
        split=lambda wc: DATASETS[wc.dataset].get("split") or config["split"],
    script:
        "../workflow/scripts/normalize.py"


rule metafeatures:
    input:
        train="results/data/{dataset}/train.jsonl",
        stats="results/data/{dataset}/stats.json",
    output:
        "results/data/{dataset}/metafeatures.json",
    log:
        "logs/metafeatures/{dataset}.log",
    benchmark:
        "results/benchmarks/metafeatures/{dataset}.tsv"
    conda:
        "../envs/metatune.yaml"
    params:
        tokenizer=config["tokenizer"],
        sample_bytes=config["metafeatures"]["sample_bytes"],
    script:
        "../workflow/scripts/metafeatures.py"


rule nanogpt_bins:
    input:
        train="results/data/{dataset}/train.jsonl",
        val="results/data/{dataset}/val.jsonl",
        manifest="resources/raw/{dataset}/manifest.json",
    output:
        train="results/bins/{dataset}/train.bin",
        val="results/bins/{dataset}/val.bin",
        meta="results/bins/{dataset}/meta.json",
    log:
        "logs/nanogpt_bins/{dataset}.log",
    benchmark:
        "results/benchmarks/nanogpt_bins/{dataset}.tsv"
    conda:
        "../envs/metatune.yaml"
    threads: config["bins"]["workers"]
    params:
        tokenizer=config["tokenizer"],
        settings=config["bins"],
    script:
        "../workflow/scripts/nanogpt_bins.py"


rule nanogpt_table:
    input:
        meta=expand("results/bins/{dataset}/meta.json", dataset=DATASETS),
        metafeatures=expand(
            "results/data/{dataset}/metafeatures.json", dataset=DATASETS
        ),
    output:
        "results/tables/nanogpt_datasets.csv",
    log:
        "logs/nanogpt_table.log",
    conda:
        "../envs/metatune.yaml"
    params:
        datasets=list(DATASETS),
    script:
        "../workflow/scripts/nanogpt_table.py"


# Named targets, as the original pipeline's commands (README: "Stages").
rule prefetch:
    input:
        expand("resources/raw/{dataset}/manifest.json", dataset=DATASETS),


rule prepare_nanogpt_data:
    input:
        "results/tables/nanogpt_datasets.csv",
