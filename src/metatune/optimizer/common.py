"""Shared pieces of the optimizer: history checks, sampling, near-duplicate filtering."""

from __future__ import annotations

import math
import random

import pandas as pd

from metatune.space import coerce, unit_vector

# Two configurations closer than this (Euclidean, in the unit cube of the space) count as the same one.
NEAR_DUPLICATE = 1e-3
STATUSES = {"ok", "diverged", "oom", "failed"}


def check_history(space: dict, history: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("dataset", "objective", "status", *space) if c not in history.columns]
    if missing:
        raise ValueError(f"history: missing columns {missing}")
    bad = set(history["status"].unique()) - STATUSES
    if bad:
        raise ValueError(f"history: unknown status values {sorted(bad)}")
    return history.reset_index(drop=True)


def sample_uniform(space: dict, rng: random.Random) -> dict:
    hp = {}
    for name, p in space.items():
        if p["type"] == "categorical":
            hp[name] = rng.choice(p["choices"])
        elif p["type"] == "log_float" or p.get("log"):
            hp[name] = math.exp(rng.uniform(math.log(p["low"]), math.log(p["high"])))
        else:
            hp[name] = rng.uniform(p["low"], p["high"])
    return coerce(space, hp)


def tried_configs(space: dict, history: pd.DataFrame, target: str) -> list[dict]:
    rows = history[history["dataset"] == target]
    return [coerce(space, {k: row[k] for k in space}) for _, row in rows.iterrows()]


def is_near(space: dict, a: dict, others: list[dict]) -> bool:
    va = unit_vector(space, a)
    for b in others:
        vb = unit_vector(space, b)
        if math.dist(va, vb) < NEAR_DUPLICATE:
            return True
    return False


def finalize(space: dict, history: pd.DataFrame, target: str, candidates: list[dict], n: int, seed: int) -> list[dict]:
    """Keep the first `n` candidates that are new to the target and to each other; top up with random ones
    when a method ran short (a tiny space, or one mostly explored)."""
    taken = tried_configs(space, history, target)
    out: list[dict] = []
    for hp in candidates:
        hp = coerce(space, hp)
        if not is_near(space, hp, taken + out):
            out.append(hp)
        if len(out) == n:
            return out
    rng = random.Random(f"finalize|{seed}|{target}")
    for _ in range(1000 * n):
        hp = sample_uniform(space, rng)
        if not is_near(space, hp, taken + out):
            out.append(hp)
            if len(out) == n:
                return out
    raise ValueError(f"could only find {len(out)} of {n} new configurations for {target}: the space is exhausted")
