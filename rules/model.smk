# The base model of nanogpt_lora trials when training.nanogpt.base_model is `pretrain`: a tiny GPT-2-config model
# trained from scratch on every dataset's train.bin, so the offline demo downloads nothing.


rule pretrain_base:
    input:
        train=expand("results/bins/{dataset}/train.bin", dataset=DATASETS),
        meta=expand("results/bins/{dataset}/meta.json", dataset=DATASETS),
    output:
        config=f"{PRETRAINED_BASE}/config.json",
        weights=f"{PRETRAINED_BASE}/model.safetensors",
    log:
        "logs/pretrain_base.log",
    benchmark:
        "results/benchmarks/pretrain_base.tsv"
    conda:
        "../envs/metatune.yaml"
    threads: 2
    params:
        settings={**config["training"]["pretrain"], "seed": config["seed"]},
    script:
        "../workflow/scripts/pretrain_base.py"
