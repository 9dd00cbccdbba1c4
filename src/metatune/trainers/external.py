"""The external trainer: the original pipeline's contract. A command template is filled in, run in its own
process group with a timeout, and whatever it wrote to {metrics_path} is validated. A non-zero exit, a timeout,
or missing or malformed metrics become a `failed` trial with the reason, never a crashed sweep."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

from metatune.contract import STATUSES, TrialOutcome, TrialSpec
from metatune.trainers import registry

STDERR_TAIL = 2000
OUT_OF_MEMORY = re.compile(r"out of memory|OutOfMemoryError|MemoryError", re.IGNORECASE)


def command_line(spec: TrialSpec, metrics_path: Path, curve_path: Path) -> str:
    values = {
        "run_id": spec.run_id, "dataset_id": spec.dataset, "train_path": spec.train_path, "val_path": spec.val_path,
        "token_budget": spec.token_budget, "seq_len": spec.seq_len, "hp_json": json.dumps(spec.hp, sort_keys=True),
        "metrics_path": str(metrics_path), "curve_path": str(curve_path),
    }
    return spec.settings["external_command"].format(**{k: shlex.quote(str(v)) for k, v in values.items()})


def _number(value, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return float(value)


def read_reported(metrics_path: Path) -> dict:
    """The trainer's own metrics file: a JSON object with a numeric val_loss (NaN allowed: it means diverged)."""
    try:
        text = metrics_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"the command wrote no metrics file ({metrics_path.name})") from None
    except UnicodeDecodeError:
        raise ValueError("the metrics file is not UTF-8") from None
    try:
        reported = json.loads(text)  # Python's json reads NaN and Infinity, which trainers do write
    except json.JSONDecodeError as e:
        raise ValueError(f"the metrics file is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(reported, dict):
        raise ValueError(f"the metrics file holds a {type(reported).__name__}, not a JSON object")
    if "val_loss" not in reported and reported.get("status", "ok") == "ok":
        raise ValueError("the metrics file has no val_loss")
    return reported


def train(spec: TrialSpec) -> TrialOutcome:
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The command writes next to our own files, under other names, so a half-written file of theirs is never
    # mistaken for ours.
    metrics_path, curve_path = out / "external_metrics.json", out / "external_curve.csv"
    metrics_path.unlink(missing_ok=True)
    cmd = command_line(spec, metrics_path, curve_path)
    timeout = registry.timeout_s(spec.settings)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a shell's children too
        _, stderr = proc.communicate()
        return TrialOutcome(status="failed", wall_s=time.monotonic() - start, device="external",
                            error=f"timeout after {timeout:g} s: {cmd}")
    wall_s = time.monotonic() - start
    tail = stderr.decode("utf-8", "replace")[-STDERR_TAIL:].strip()
    if proc.returncode != 0:
        # An out-of-memory death is its own outcome: the optimizer learns that this configuration does not fit.
        status = "oom" if OUT_OF_MEMORY.search(tail) else "failed"
        return TrialOutcome(status=status, wall_s=wall_s, device="external",
                            error=f"exit code {proc.returncode}: {tail or '(no stderr)'}")
    try:
        reported = read_reported(metrics_path)
        val_loss = _number(reported.get("val_loss"), "val_loss")
        outcome = TrialOutcome(
            status="ok", val_loss=val_loss, best_val_loss=_number(reported.get("best_val_loss"), "best_val_loss"),
            train_loss=_number(reported.get("train_loss"), "train_loss"),
            tokens_seen=int(reported.get("tokens_seen", spec.token_budget)), wall_s=wall_s,
            gpu_hours=_number(reported.get("gpu_hours"), "gpu_hours") or 0.0,
            peak_mem_mb=_number(reported.get("peak_mem_mb"), "peak_mem_mb"), device="external",
        )
    except (ValueError, TypeError) as e:
        return TrialOutcome(status="failed", wall_s=wall_s, device="external",
                            error=f"{e}{'; stderr: ' + tail if tail else ''}")
    reported_status = reported.get("status", "ok")
    if reported_status not in STATUSES:
        return TrialOutcome(status="failed", wall_s=wall_s, device="external",
                            error=f"the metrics file has an unknown status {reported_status!r}")
    if reported_status != "ok":  # the trainer itself says how it went, e.g. it caught its own OOM
        outcome.status, outcome.val_loss = reported_status, None
        outcome.error = str(reported.get("error") or f"the command reported status {reported_status}")
        return outcome
    if not math.isfinite(outcome.val_loss):
        outcome.status, outcome.val_loss, outcome.error = "diverged", None, "the command reported a non-finite val_loss"
    if outcome.best_val_loss is not None and not math.isfinite(outcome.best_val_loss):
        outcome.best_val_loss = None
    if outcome.best_val_loss is None and outcome.val_loss is not None:
        outcome.best_val_loss = outcome.val_loss
    return outcome
