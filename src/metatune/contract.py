"""The seams between the workflow and the trainers (DESIGN.md, "Contracts").

TrialSpec is what a trial rule hands a trainer; TrialOutcome is what a trainer hands back; metrics.json is
what the runner writes from it, checked by `validate_metrics`, for stage 2, the reruns and runs.csv to read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

STATUSES = ("ok", "diverged", "oom", "failed")
METRIC_FIELDS = ("val_loss", "best_val_loss", "train_loss", "tokens_seen", "wall_s", "gpu_hours", "peak_mem_mb")
REQUIRED_KEYS = ("run_id", "stage", "dataset", "status", *METRIC_FIELDS, "device", "seed", "hp", "trainer", "error", "versions")


@dataclass(frozen=True)
class TrialSpec:
    run_id: str
    stage: str  # stage1 | stage2 | rerun
    dataset: str
    seed: int
    hp: dict
    token_budget: int
    seq_len: int
    train_path: str  # nanoGPT train.bin (or the train JSONL for SFT trainers)
    val_path: str
    metafeatures_path: str
    out_dir: str  # metrics.json, curve.csv and adapter/ go here
    trainer: str  # simulated | external | ...
    settings: dict = field(default_factory=dict)  # the config's `training` section
    save_adapter: bool = False
    # Successive-halving rungs (metatune.fidelity): the schedule (learning rate, evaluation points) always spans
    # token_budget; a rung trial stops at stop_at_tokens, writes checkpoint_path, and the next rung resumes it.
    rung: int | None = None  # None: no rungs, train the whole budget
    rung_tokens: tuple[int, ...] = ()  # every rung's token target; trainers also evaluate there
    stop_at_tokens: int | None = None
    resume_from: str | None = None  # a checkpoint of the previous rung
    checkpoint_path: str | None = None  # where this rung's checkpoint goes (None at the last rung)


@dataclass
class TrialOutcome:
    status: str
    val_loss: float | None = None
    best_val_loss: float | None = None
    train_loss: float | None = None
    tokens_seen: int = 0  # in total, including what a resumed trial's earlier rungs trained
    tokens_resumed: int = 0  # of those, the tokens its checkpoint had already trained
    wall_s: float = 0.0
    gpu_hours: float = 0.0
    peak_mem_mb: float | None = None
    tokens_per_s: float | None = None  # training throughput (not a contract field: recorded when measured)
    device: str = "cpu"
    error: str | None = None
    curve: list[dict] = field(default_factory=list)  # rows of curve.csv: step, tokens, train_loss, val_loss
    versions: dict = field(default_factory=dict)


class MetricsError(ValueError):
    pass


def _finite_or_none(value, key: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MetricsError(f"{key}: expected a finite number or null, got {value!r}")


def validate_metrics(m: dict) -> dict:
    """Check a metrics.json object against the contract; return it or raise MetricsError naming the key."""
    if not isinstance(m, dict):
        raise MetricsError(f"expected a JSON object, got {type(m).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise MetricsError(f"missing keys {missing}")
    if m["status"] not in STATUSES:
        raise MetricsError(f"status: {m['status']!r} is not one of {STATUSES}")
    for k in METRIC_FIELDS:
        _finite_or_none(m[k], k)
    if m["status"] == "ok" and m["val_loss"] is None:
        raise MetricsError("val_loss: an ok trial needs a validation loss")
    if m["status"] != "ok" and not m["error"]:
        raise MetricsError(f"error: a {m['status']} trial needs a reason")
    if not isinstance(m["hp"], dict):
        raise MetricsError("hp: expected an object")
    return m
