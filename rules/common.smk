# Validation of the config (before any job), helpers shared by the rules, and wildcard constraints.
import json
import os
import shlex
import sys

# The workflow's own library comes from the workflow's directory, not from an install: the controller imports it
# from there (below), and every job's shell exports it first, because a conda env (and Snakemake, which drops
# PYTHONPATH when it activates one) knows nothing of metatune. The prefix also runs before `script:` rules.
WORKFLOW_SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, WORKFLOW_SRC)
shell.prefix(
    "set -euo pipefail; export PYTHONPATH="
    + shlex.quote(WORKFLOW_SRC).replace("{", "{{").replace("}", "}}")
    + "${{PYTHONPATH:+:$PYTHONPATH}}; "
)

from metatune import config as metatune_config
from metatune import space as metatune_space
from metatune.trainers import registry as metatune_trainers

# The config is resolved from the files given on the command line (or a profile's configfile), else the demo,
# then the --config overrides: Snakemake's own key-by-key merge of them is replaced. Cluster jobs re-read this
# with the same arguments and so resolve the same config. `metatune check-config` calls the same function.
try:
    _resolved = metatune_config.resolve(
        workflow.overwrite_configfiles, workflow.config_settings.config
    )
except metatune_config.ConfigError as e:
    raise WorkflowError(f"invalid config: {e}")
config.clear()
config.update(_resolved)


def profile_slurm_account():
    """The account the profile's default resources give every job (profiles/slurm: $METATUNE_SLURM_ACCOUNT),
    evaluated as Snakemake does; None when no profile sets one."""
    defaults = workflow.resource_settings.default_resources
    account = defaults.get("slurm_account") if defaults is not None else None
    if account is None:
        return None
    return account.evaluate(
        wildcards=None, input=None, attempt=1, threads=1, rulename="", async_run=None
    ).value


# Without an account the Slurm plugin submits every job without -A, and Slurm charges the user's default account:
# say so once, in the controller (every job parses this file again).
if workflow.is_main_process and profile_slurm_account() == "":
    logger.warning(
        "warning: no Slurm account: METATUNE_SLURM_ACCOUNT is not set, so every job is submitted without -A "
        "and Slurm charges your default account. Set it: export METATUNE_SLURM_ACCOUNT=<share_name> "
        "(docs/profiles.md)."
    )

DATASETS = {d["name"]: d for d in config["datasets"]}
STAGE1 = metatune_space.stage1_configs(
    config["space"],
    config["stage1"]["design"],
    config["stage1"]["size"],
    config["seed"],
)
STAGE2_ROUNDS = range(1, config["stage2"]["rounds"] + 1)
STAGE2_IDS = [
    f"r{r}-{k}" for r in STAGE2_ROUNDS for k in range(config["stage2"]["batch"])
]
RERUN_IDS = [
    f"top{k}-seed{s}"
    for k in range(1, config["rerun"]["top_k"] + 1)
    for s in range(1, config["rerun"]["seeds"] + 1)
]
# What the trainer's trials read: the nanoGPT bins, the prompt/completion JSONL, or only the metafeatures.
TRAINER = metatune_trainers.get(config["training"]["mode"])
# nanogpt_lora's `base_model: pretrain`: a tiny model that rule pretrain_base trains from scratch into this folder.
PRETRAINED_BASE = "results/base_model"
USES_PRETRAINED_BASE = (
    config["training"]["mode"] == "nanogpt_lora"
    and config["training"]["nanogpt"]["base_model"] == "pretrain"
)
# The trainers' settings as trials see them: the pretrained base by its path.
TRAINING = {
    **config["training"],
    "nanogpt": {
        **config["training"]["nanogpt"],
        **({"base_model": PRETRAINED_BASE} if USES_PRETRAINED_BASE else {}),
    },
}

# MBPP evaluates these datasets' winning adapters against MBPP_MODEL zero-shot (rules/eval.smk).
MBPP_DATASETS = [d["name"] for d in config["datasets"] if d["mbpp"]]
MBPP_MODEL = metatune_config.mbpp_model(config)


wildcard_constraints:
    dataset="|".join(DATASETS),
    round=r"\d+",


def trial_ids(stage):
    return {"stage1": list(STAGE1), "stage2": STAGE2_IDS, "rerun": RERUN_IDS}[stage]


def trial_metrics(stage, datasets=None):
    return [
        f"results/trials/{stage}/{d}/{t}/metrics.json"
        for d in (datasets or DATASETS)
        for t in trial_ids(stage)
    ]


def collected(stage, datasets=None, rounds=STAGE2_ROUNDS):
    """The collections that stand for a stage's trials as inputs (history.py says why): one per dataset, and
    one per round of each dataset in stage 2."""
    if stage == "stage2":
        return [
            f"results/collected/stage2/{d}/round{r}.jsonl"
            for d in (datasets or DATASETS)
            for r in rounds
        ]
    return [f"results/collected/{stage}/{d}.jsonl" for d in (datasets or DATASETS)]


ALL_COLLECTED = collected("stage1") + collected("stage2") + collected("rerun")
# The Optuna journal that rule optuna_live appends each collection to as it lands.
LIVE_JOURNAL = "results/optuna/live.log"


def landed(collections):
    """The receipts of rule optuna_live for these collections."""
    names = (
        c.removeprefix("results/collected/").removesuffix(".jsonl") for c in collections
    )
    return [f"results/optuna/landed/{name}.json" for name in names]


# What every trial reads, as wildcard patterns: the metafeatures; the bins (and their meta.json) or the JSONL
# splits for trainers that train on them; the pretrained base model where trials fine-tune it. Static
# patterns, not an input function: a sweep has thousands of trials, and each pattern is applied per job.
TRIAL_DATA = {"metafeatures": "results/data/{dataset}/metafeatures.json"}
if TRAINER.reads == "bins":
    TRIAL_DATA |= {
        "train": "results/bins/{dataset}/train.bin",
        "val": "results/bins/{dataset}/val.bin",
        "meta": "results/bins/{dataset}/meta.json",
    }
elif TRAINER.reads == "jsonl":
    TRIAL_DATA |= {
        "train": "results/data/{dataset}/train.jsonl",
        "val": "results/data/{dataset}/val.jsonl",
    }
if USES_PRETRAINED_BASE:
    TRIAL_DATA["base_model"] = f"{PRETRAINED_BASE}/model.safetensors"


def stage_settings_json(stage):
    """The JSON every trial of a stage shares (metatune.trial builds its TrialSpec from it and its wildcards)."""
    settings = {
        "stage1": (config["stage1"]["token_budget"], config["stage1"]["seq_len"]),
        "stage2": (
            config["stage2"]["token_budget"] or config["stage1"]["token_budget"],
            config["stage2"]["seq_len"] or config["stage1"]["seq_len"],
        ),
        "rerun": (
            max(
                1,
                round(
                    config["stage1"]["token_budget"]
                    * config["rerun"]["token_budget_factor"]
                ),
            ),
            config["stage1"]["seq_len"],
        ),
    }
    token_budget, seq_len = settings[stage]
    return json.dumps(
        {
            "stage": stage,
            "base_seed": config["seed"],
            "token_budget": token_budget,
            "seq_len": seq_len,
            "trainer": config["training"]["mode"],
            "training": TRAINING,
            "save_adapter": stage == "rerun" and config["rerun"]["save_adapter"],
            # the trial's data, as templates over the dataset (the bins when the trainer reads none)
            "train_path": TRIAL_DATA.get("train", "results/bins/{dataset}/train.bin"),
            "val_path": TRIAL_DATA.get("val", "results/bins/{dataset}/val.bin"),
        },
        sort_keys=True,
    )


# Trials get these through functions: a plain string param would be wildcard-expanded, and the external
# trainer's command template is full of braces.
STAGE_SETTINGS = {
    stage: stage_settings_json(stage) for stage in ("stage1", "stage2", "rerun")
}


def stage_settings(stage):
    return lambda wildcards: STAGE_SETTINGS[stage]


def stage1_hp(wildcards):
    return json.dumps(STAGE1[wildcards.trial], sort_keys=True)


def earlier_rounds(wildcards):
    """The collections of this dataset's stage-2 rounds before this one."""
    return collected("stage2", [wildcards.dataset], range(1, int(wildcards.round)))
