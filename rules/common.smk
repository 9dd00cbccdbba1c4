# Validation of the config (before any job), helpers shared by the rules, and wildcard constraints.
import json
import os

from metatune import config as metatune_config
from metatune import space as metatune_space

try:
    _validated = metatune_config.validate(config)
except metatune_config.ConfigError as e:
    raise WorkflowError(f"invalid config: {e}")
config.clear()
config.update(_validated)

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
# Trainers that read the nanoGPT bins, or the prompt/completion JSONL; the simulated one needs only the
# metafeatures.
TRAINERS_READING_BINS = {"external", "nanogpt_lora"}
TRAINERS_READING_JSONL = {"hf_sft"}
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


def trial_data(wildcards):
    """The data a trial reads: always the metafeatures; the bins (and their meta.json) or the JSONL splits for
    trainers that train on them; the pretrained base model where the trials fine-tune it.
    """
    data = {"metafeatures": f"results/data/{wildcards.dataset}/metafeatures.json"}
    mode = config["training"]["mode"]
    if mode in TRAINERS_READING_BINS:
        data["train"] = f"results/bins/{wildcards.dataset}/train.bin"
        data["val"] = f"results/bins/{wildcards.dataset}/val.bin"
        data["meta"] = f"results/bins/{wildcards.dataset}/meta.json"
    elif mode in TRAINERS_READING_JSONL:
        data["train"] = f"results/data/{wildcards.dataset}/train.jsonl"
        data["val"] = f"results/data/{wildcards.dataset}/val.jsonl"
    if USES_PRETRAINED_BASE:
        data["base_model"] = f"{PRETRAINED_BASE}/model.safetensors"
    return data


def trial_seed(stage, trial):
    """Stages 1 and 2 share the base seed (configurations compare fairly); rerun seed s is a new one."""
    if stage == "rerun":
        return config["seed"] + 1000 + int(trial.rsplit("seed", 1)[1])
    return config["seed"]


def trial_spec(stage, wildcards, input, output):
    """The TrialSpec (metatune.contract) as JSON; stage-2 and rerun trials get their hp from --hp-file."""
    settings = config["stage1"] if stage == "stage1" else config["stage2"]
    budget = settings["token_budget"] or config["stage1"]["token_budget"]
    seq_len = settings["seq_len"] or config["stage1"]["seq_len"]
    if stage == "rerun":
        budget = max(
            1,
            round(
                config["stage1"]["token_budget"]
                * config["rerun"]["token_budget_factor"]
            ),
        )
        seq_len = config["stage1"]["seq_len"]
    bins = f"results/bins/{wildcards.dataset}"
    spec = {
        "run_id": wildcards.trial,
        "stage": stage,
        "dataset": wildcards.dataset,
        "seed": trial_seed(stage, wildcards.trial),
        "hp": STAGE1[wildcards.trial] if stage == "stage1" else None,
        "token_budget": budget,
        "seq_len": seq_len,
        "train_path": input.get("train", f"{bins}/train.bin"),
        "val_path": input.get("val", f"{bins}/val.bin"),
        "metafeatures_path": input.metafeatures,
        "out_dir": os.path.dirname(output.metrics),
        "trainer": config["training"]["mode"],
        "settings": TRAINING,
        "save_adapter": stage == "rerun" and config["rerun"]["save_adapter"],
    }
    return json.dumps(spec, sort_keys=True)


def hp_source(stage, wildcards):
    """--hp-file/--hp-index arguments of a stage-2 or rerun trial."""
    if stage == "stage2":
        round_, k = wildcards.trial[1:].split("-")
        return f"--hp-file results/stage2/{wildcards.dataset}/round{round_}/proposals.json --hp-index {k}"
    rank = wildcards.trial[3:].split("-")[0]
    return f"--hp-file results/rerun/{wildcards.dataset}/selection.json --hp-index {int(rank) - 1}"


def earlier_rounds(wildcards):
    """Stage-2 metrics of this dataset's rounds before this one."""
    batch = config["stage2"]["batch"]
    return [
        f"results/trials/stage2/{wildcards.dataset}/r{r}-{k}/metrics.json"
        for r in range(1, int(wildcards.round))
        for k in range(batch)
    ]
