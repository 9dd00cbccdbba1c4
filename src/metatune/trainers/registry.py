"""The trainers, and what each one reads: its module, its settings section under `training`, the hyperparameters
it understands with their one default, whether it saves adapters, and the data its trials need.

The config checks (metatune.config), the trial runner (metatune.trial) and the rules (rules/common.smk) all
ask this table, so a space parameter the trainer would never read is a config error, not a dead dimension of
the search, and a hyperparameter the space neither searches nor fixes (a one-choice categorical or a range of
zero width fixes one) trains with the same default in every trainer.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

# The LoRA hyperparameters of the built-in trainers, each with its one default (the documentation is this table).
LORA_HYPERPARAMETERS = MappingProxyType({
    "learning_rate": 2e-4,  # peak AdamW rate
    "lora_r": 16,  # adapter rank
    "lora_alpha": 32,  # LoRA scaling numerator: updates scale with alpha / r (alpha / sqrt(r) with rsLoRA)
    "lora_dropout": 0.0,
    "batch_size": 32,  # sequences (records for hf_sft) per optimizer step
    "warmup_ratio": 0.0,  # share of the steps with a linear warmup
    "weight_decay": 0.0,
    "target_modules": "attn_mlp",  # attn (attention projections) or attn_mlp (and the MLP)
})
# training.timeout_s when a TrialSpec's settings lack it (the schema's default, which a test holds equal).
TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Trainer:
    name: str  # training.mode
    module: str  # defines train(TrialSpec) -> TrialOutcome
    section: str | None  # its settings: training.<section>
    hyperparameters: Mapping[str, object] | None  # name -> default; None: any name (the command reads them)
    saves_adapter: bool  # rerun trials can keep a LoRA adapter (what MBPP evaluates)
    reads: str  # what its trials read: bins (nanoGPT train.bin), jsonl (prompt/completion) or metafeatures


TRAINERS: Mapping[str, Trainer] = MappingProxyType({t.name: t for t in (
    Trainer("simulated", "metatune.trainers.simulated", "simulated", LORA_HYPERPARAMETERS, False, "metafeatures"),
    Trainer("external", "metatune.trainers.external", None, None, False, "bins"),
    Trainer("nanogpt_lora", "metatune.trainers.nanogpt_lora", "nanogpt", LORA_HYPERPARAMETERS, True, "bins"),
    Trainer("hf_sft", "metatune.trainers.hf_sft", "sft", LORA_HYPERPARAMETERS, True, "jsonl"),
)})


def get(name: str) -> Trainer:
    if name not in TRAINERS:
        raise ValueError(f"training.mode: unknown trainer {name!r} (one of {sorted(TRAINERS)})")
    return TRAINERS[name]


def check_space(trainer: str, names: Iterable[str]) -> None:
    """Raise SpaceError naming the first space parameter `trainer` does not understand, with the names it knows
    and the closest of them."""
    from metatune.space import (
        SpaceError,  # numpy: not for every trial process, which imports this module
    )

    known = get(trainer).hyperparameters
    if known is None:
        return
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SpaceError(f"space.{name}: training.mode {trainer} does not read a hyperparameter {name!r} "
                             f"({hint}it reads {', '.join(known)})")


def complete_hp(trainer: str, hp: Mapping) -> dict:
    """The trial's hyperparameters with the trainer's default for each one it reads that `hp` leaves out."""
    return {**(get(trainer).hyperparameters or {}), **hp}


def timeout_s(settings: Mapping) -> float:
    return float(settings.get("timeout_s", TIMEOUT_S))
