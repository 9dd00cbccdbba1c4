# metatune: meta-tuning of LoRA hyperparameters across many datasets.
# This file is the index: the rules live in rules/, the code in src/metatune/, the settings in config/.
# The config: --configfile STUDY (else the demo, config/config.yaml), resolved in rules/common.smk.
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/sweep.smk"
include: "rules/eval.smk"
include: "rules/report.smk"


# Each run keeps the config it resolved: results/configs/<hash>.yaml (only here, not in dry runs or cluster jobs).
onstart:
    metatune_config.write_resolved(config)


rule all:
    default_target: True
    input:
        tables=rules.prepare_nanogpt_data.input,
        runs="results/tables/runs.csv",
        best="results/tables/best.csv",
        # leave-one-out advice needs another dataset to learn from
        recommendations=rules.recommendations.input if len(DATASETS) > 1 else [],
        mbpp=rules.mbpp.input if MBPP_DATASETS else [],
        report=rules.report_files.input,
