"""Shared pieces of the optimizer: the history check, near-duplicate filtering, and the top-up that makes every
proposal `n` configurations long whatever the method managed."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pandas as pd

from metatune.contract import STATUSES
from metatune.space import Space, SpaceError, canonical_hp

# Two configurations closer than this (Euclidean, in the unit cube of the space) count as the same one.
NEAR_DUPLICATE = 1e-3
# History columns that are not hyperparameters: what the optimizer reads, and the bookkeeping of the workflow's
# history.csv. Any other column is a parameter the space does not know.
HISTORY_COLUMNS = ("dataset", "objective", "status")
BOOKKEEPING_COLUMNS = ("run_id", "stage", "seed")
# A finite space with at most this many configurations is listed whole when random draws run out of new ones.
ENUMERABLE = 4096


def check_history(space: Space, history: pd.DataFrame | None) -> pd.DataFrame:
    """The history with each value as its parameter's type, or a ValueError naming the column, the value and
    its row: a missing or unknown column, an unknown status, a value outside the space."""
    params = space.names
    if history is None or (len(history) == 0 and not len(history.columns)):
        history = pd.DataFrame(columns=[*HISTORY_COLUMNS, *params])
    missing = [c for c in (*HISTORY_COLUMNS, *params) if c not in history.columns]
    if missing:
        raise ValueError(f"history: missing columns {missing}")
    unknown = [c for c in history.columns if c not in (*HISTORY_COLUMNS, *BOOKKEEPING_COLUMNS, *params)]
    if unknown:
        raise ValueError(f"history: column(s) {unknown} are not parameters of the space (its parameters: {params})")
    history = history.reset_index(drop=True).copy()
    bad = sorted(set(history["status"].astype(str).unique()) - set(STATUSES))
    if bad:
        raise ValueError(f"history: unknown status values {bad} (known: {list(STATUSES)})")
    history["dataset"] = history["dataset"].astype(str)
    history["objective"] = pd.to_numeric(history["objective"], errors="coerce").astype(float)
    for p in space:
        history[p.name] = _checked_column(p, history)
    return history


def _checked_column(p, history: pd.DataFrame) -> pd.Series:
    """One parameter's column as its type, values within rounding of a bound moved onto it; the first value
    outside the space is a ValueError naming its row."""
    raw = history[p.name]
    if p.kind == "categorical":
        try:
            choices = np.empty(len(p.choices), dtype=object)
            for i, c in enumerate(p.choices):  # one by one: a choice may be a list
                choices[i] = c
            return pd.Series(choices[p.indices(raw.tolist())], dtype=object)
        except SpaceError:
            bad = next(i for i, v in enumerate(raw) if not _admits(p, v))
    else:
        v = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        tol = 1e-9 * (p.high - p.low) + 1e-12 * max(abs(p.low), abs(p.high))
        with np.errstate(invalid="ignore"):
            fine = np.isfinite(v) & (v >= p.low - tol) & (v <= p.high + tol)
        if fine.all():
            v = np.clip(v, p.low, p.high)
            return pd.Series(np.clip(np.round(v), *p.int_bounds).astype(int) if p.kind == "int" else v)
        bad = int(np.flatnonzero(~fine)[0])
    try:
        p.check(raw.iloc[bad])
        message = f"{p.key}: {raw.iloc[bad]!r} is not a value of the space"
    except SpaceError as e:
        message = str(e)
    raise ValueError(f"history row {bad} (dataset {history['dataset'].iloc[bad]!r}): {message}")


def _admits(p, v) -> bool:
    try:
        p.check(v)
        return True
    except SpaceError:
        return False


def min_sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of `a`, the squared distance to its nearest row of `b` (inf if `b` is empty); memory grows
    with len(a) x len(b), not with the dimension too."""
    if not len(b):
        return np.full(len(a), np.inf)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d2, 0.0).min(1)


def target_matrix(space: Space, history: pd.DataFrame, target: str) -> np.ndarray:
    return space.unit_matrix(history[history["dataset"] == target])


def finite_configurations(space: Space) -> list[dict] | None:
    """Every configuration of a space small enough to list (only categoricals, ints and fixed values), else None."""
    values = []
    for p in space:
        if p.kind == "categorical":
            values.append(p.choices)
        elif p.kind == "int":
            lo, hi = p.int_bounds
            values.append(range(lo, hi + 1))
        elif p.low == p.high:
            values.append((p.low,))
        else:
            return None
    if math.prod(len(v) for v in values) > ENUMERABLE:
        return None
    return [space.coerce(dict(zip(space.names, combo))) for combo in itertools.product(*values)]


class Picker:
    """Configurations that are new to the target and to each other, collected in order."""

    def __init__(self, space: Space, taken: np.ndarray):
        self.space, self.taken = space, taken
        self.configs: list[dict] = []
        self._x: list[np.ndarray] = []

    def offer(self, hp: dict) -> bool:
        x = self.space.unit_vector(hp)[None, :]
        others = np.concatenate([self.taken, *self._x]) if self._x else self.taken
        if min_sq_dist(x, others)[0] < NEAR_DUPLICATE ** 2:
            return False
        self.configs.append(hp)
        self._x.append(x)
        return True


def finalize(space: Space, history: pd.DataFrame, target: str, candidates: list[dict], n: int,
             seed: int) -> tuple[list[dict], list[str]]:
    """The first `n` candidates that are new to the target and to each other, topped up with random ones when a
    method ran short (a tiny space, or one mostly explored); where the space holds fewer than `n` new
    configurations, the rest repeat earlier ones. Returns the configurations and why a top-up was needed."""
    picker = Picker(space, target_matrix(space, history, target))
    for hp in candidates:
        picker.offer(space.coerce(hp))
        if len(picker.configs) == n:
            return picker.configs, []
    from_method = len(picker.configs)
    rng = random.Random(f"finalize|{seed}|{target}")
    finite = finite_configurations(space)
    if finite is None:  # a continuous space: random draws are almost always new
        for _ in range(100 * n):
            picker.offer(space.sample(rng))
            if len(picker.configs) == n:
                break
    else:
        rng.shuffle(finite)
        for hp in finite:
            picker.offer(hp)
            if len(picker.configs) == n:
                break
    notes = []
    if from_method < n:
        notes.append(f"the method proposed {from_method} new configuration(s) of {n}: "
                     f"{len(picker.configs) - from_method} random one(s) added")
    out = picker.configs
    if len(out) < n:
        pool = out or tried_by_rank(space, history, target) or [space.sample(rng)]
        notes.append(f"the space holds only {len(out)} configuration(s) new to {target}: "
                     f"{n - len(out)} repeat earlier ones")
        out = out + [pool[i % len(pool)] for i in range(n - len(out))]
    return out, notes


def tried_by_rank(space: Space, history: pd.DataFrame, target: str) -> list[dict]:
    """The target's distinct configurations, best first (failures last)."""
    rows = history[history["dataset"] == target]
    rows = rows.assign(_ok=rows["status"].eq("ok") & np.isfinite(rows["objective"]))
    rows = rows.sort_values(["_ok", "objective"], ascending=[False, True], kind="stable")
    seen, out = set(), []
    for hp in (space.coerce({k: row[k] for k in space.names}) for _, row in rows.iterrows()):
        if canonical_hp(hp) not in seen:
            seen.add(canonical_hp(hp))
            out.append(hp)
    return out
