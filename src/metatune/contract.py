"""The seams between the workflow and the trainers (DESIGN.md, "Contracts").

TrialSpec is what a trial rule hands a trainer; TrialOutcome is what a trainer hands back; metrics.json is
what the runner writes from it, checked by `validate_metrics`, for stage 2, the reruns and runs.csv to read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

STATUSES = ("ok", "diverged", "oom", "failed")
METRIC_FIELDS = ("val_loss", "best_val_loss", "train_loss", "tokens_seen", "wall_s", "gpu_hours", "peak_mem_mb")
REQUIRED_KEYS = ("run_id", "stage", "dataset", "status", *METRIC_FIELDS, "device", "seed", "hp", "trainer", "error",
                 "versions")
# Where the trial sits in the sweep, and when it ran: recorded by the runner since metatune 0.2 (older
# metrics.json files lack them, so they are checked where present). round: the stage-2 round; rank and
# seed_index: the rerun's configuration (1 is the best) and which of its new seeds; source_trial_id: the trial
# a rerun repeats; started_at and finished_at: ISO-8601 UTC times around the trainer's call.
PLACEMENT_KEYS = ("round", "rank", "seed_index", "source_trial_id")
TIME_KEYS = ("started_at", "finished_at")


def trial_id(dataset: str, stage: str, run_id: str) -> str:
    """A trial's key, unique across the sweep (run ids repeat across datasets and stages): its folder under
    results/trials/."""
    return f"{dataset}/{stage}/{run_id}"


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
    round: int | None = None  # stage 2: the round that proposed it
    rank: int | None = None  # reruns: the rank of the configuration repeated (1 is the best)
    seed_index: int | None = None  # reruns: which of the new seeds (1, 2, ...)
    source_trial_id: str | None = None  # reruns: trial_id of the stage-1 or stage-2 trial repeated
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
    for k in ("round", "rank", "seed_index"):
        if m.get(k) is not None and (isinstance(m[k], bool) or not isinstance(m[k], int) or m[k] < 0):
            raise MetricsError(f"{k}: expected a non-negative integer or null, got {m[k]!r}")
    if m.get("source_trial_id") is not None and not isinstance(m["source_trial_id"], str):
        raise MetricsError(f"source_trial_id: expected a string or null, got {m['source_trial_id']!r}")
    for k in TIME_KEYS:
        if m.get(k) is not None:
            parse_utc(m[k], k)
    if m.get("started_at") and m.get("finished_at") and parse_utc(m["finished_at"]) < parse_utc(m["started_at"]):
        raise MetricsError(f"finished_at {m['finished_at']} is before started_at {m['started_at']}")
    return m


def utc_now() -> str:
    """Now as ISO-8601 UTC with microseconds (what started_at and finished_at hold)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def parse_utc(text, key: str = "timestamp") -> datetime:
    """An ISO-8601 time with its UTC offset; a naive or malformed one is an error naming `key`."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise MetricsError(f"{key}: expected an ISO-8601 time, got {text!r}") from None
    if when.utcoffset() is None:
        raise MetricsError(f"{key}: {text!r} has no UTC offset")
    return when
