"""The history as numbers the transfer models can compare across datasets.

Each dataset becomes a Task: its trials in the unit cube of the space, and its objective turned into normal
scores of its ranks (a Gaussian copula). Losses of different datasets live on different scales (a code corpus
bottoms out far below a prose one); ranks within a dataset do not, so models of different datasets can be
averaged. A trial that diverged, ran out of memory or failed ties for the worst rank: the surrogate learns the
region is bad, and the feasibility model (transfer.py) learns that it fails.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from metatune.space import Space


@dataclass(frozen=True)
class Task:
    name: str
    x: np.ndarray  # one row per trial, in the unit cube
    z: np.ndarray  # normal scores of the ranks: lower is better, failures tied worst
    failed: np.ndarray  # 1.0 where the trial did not finish ok
    objective: np.ndarray  # the raw objectives of the ok trials, to map a predicted rank back to a loss


def normal_scores(objective: np.ndarray, failed: np.ndarray) -> np.ndarray:
    values = np.where(failed > 0, np.inf, objective)
    ranks = rankdata(values, method="average")
    return norm.ppf((ranks - 0.5) / len(values))


def tasks_from_history(space: Space, history: pd.DataFrame) -> dict[str, Task]:
    objective = pd.to_numeric(history["objective"], errors="coerce").to_numpy(dtype=float)
    failed = (history["status"].ne("ok").to_numpy() | ~np.isfinite(objective)).astype(float)
    x = space.unit_matrix(history)
    tasks = {}
    for name, idx in history.groupby("dataset", sort=True).indices.items():
        f = failed[idx]
        tasks[name] = Task(name, x[idx], normal_scores(objective[idx], f), f, objective[idx][f == 0])
    return tasks


def keep_indices(scores: np.ndarray, cap: int, name: str) -> np.ndarray:
    """At most `cap` positions of `scores` (lower is better; NaN counts as worst), in order: the better half of
    the cap by rank, the rest spread over the others by a draw seeded with `name`. A surrogate must be sharpest
    where the good configurations are; the choice depends on the data alone, so memoized fits are reused."""
    n = len(scores)
    if n <= cap:
        return np.arange(n)
    order = np.argsort(np.where(np.isnan(scores), np.inf, scores), kind="stable")
    best, rest = order[: cap // 2], order[cap // 2:]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return np.sort(np.r_[best, rng.choice(rest, cap - len(best), replace=False)])


def subsample(task: Task, cap: int) -> Task:
    """At most `cap` of the task's trials (see keep_indices)."""
    if len(task.z) <= cap:
        return task
    keep = keep_indices(task.z, cap, task.name)
    return Task(task.name, task.x[keep], task.z[keep], task.failed[keep], task.objective)


def _number(v) -> float:
    """A metafeature as a float; NaN for anything that is not a finite number (text, booleans, missing)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return math.nan
    return float(v) if math.isfinite(v) else math.nan


def metafeature_matrix(metafeatures: dict | None, names: list[str], target: str) -> tuple[np.ndarray, list[str]]:
    """Standardized metafeatures of `names`, one row each, and what was missing. The columns are the numeric
    features the target has and at least one other dataset too; a positive feature spanning more than two
    decades (counts, sizes) on a log scale first; constant ones dropped. A dataset without a feature (or with a
    NaN or infinite one) sits at the feature's mean, so it neither attracts nor repels."""
    table = {n: (metafeatures or {}).get(n) for n in names}
    table = {n: (row if isinstance(row, dict) else {}) for n, row in table.items()}
    keys = sorted({k for row in table.values() for k in row}, key=str)
    columns, partial = [], set()
    for key in keys:
        v = np.array([_number(table[n].get(key)) for n in names])
        have = np.isfinite(v)
        if not have[names.index(target)] or have.sum() < 2:
            continue
        with np.errstate(all="ignore"):  # features near the float limits: dropped below if they overflow
            if v[have].min() > 0 and v[have].max() / v[have].min() > 100:
                v = np.log10(v)
            mean, std = v[have].mean(), v[have].std()
            z = (v - mean) / std
        if not (np.isfinite(std) and std > 1e-12 and np.isfinite(z[have]).all()):
            continue
        partial.update(n for n, h in zip(names, have) if not h)
        columns.append(np.where(have, z, 0.0))
    notes = []
    if not columns and len(names) > 2:
        notes.append("no metafeature the target shares with other datasets varies: sources weighed equally")
    elif partial:
        notes.append(f"metafeatures missing or not finite for {sorted(partial)}: taken as the mean")
    return (np.column_stack(columns) if columns else np.zeros((len(names), 0))), notes
