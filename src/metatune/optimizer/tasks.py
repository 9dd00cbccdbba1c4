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

from metatune.space import unit_matrix


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


def tasks_from_history(space: dict, history: pd.DataFrame) -> dict[str, Task]:
    objective = pd.to_numeric(history["objective"], errors="coerce").to_numpy(dtype=float)
    failed = (history["status"].ne("ok").to_numpy() | ~np.isfinite(objective)).astype(float)
    x = unit_matrix(space, history)
    tasks = {}
    for name, idx in history.groupby("dataset", sort=True).indices.items():
        f = failed[idx]
        tasks[name] = Task(name, x[idx], normal_scores(objective[idx], f), f, objective[idx][f == 0])
    return tasks


def subsample(task: Task, cap: int) -> Task:
    """At most `cap` trials: the better half of the cap by rank, the rest spread over the other trials. The
    surrogate must be sharpest where the good configurations are; the choice depends on the data alone, so the
    memoized GP fit of a source is reused across calls."""
    n = len(task.z)
    if n <= cap:
        return task
    order = np.argsort(task.z, kind="stable")
    best, rest = order[: cap // 2], order[cap // 2:]
    rng = np.random.default_rng(zlib.crc32(task.name.encode()))
    keep = np.sort(np.r_[best, rng.choice(rest, cap - len(best), replace=False)])
    return Task(task.name, task.x[keep], task.z[keep], task.failed[keep], task.objective)


def metafeature_matrix(metafeatures: dict, names: list[str]) -> np.ndarray:
    """Standardized metafeatures of `names`, one row each: the numeric features every dataset has; a positive
    feature spanning more than two decades (counts, sizes) on a log scale first; constant ones dropped."""
    missing = [n for n in names if n not in metafeatures]
    if missing:
        raise ValueError(f"metafeatures: no entry for datasets {missing}")
    keys = set.intersection(*(set(metafeatures[n]) for n in names)) if names else set()
    columns = []
    for key in sorted(keys):
        values = [metafeatures[n][key] for n in names]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            continue
        v = np.asarray(values, dtype=float)
        if v.min() > 0 and v.max() / v.min() > 100:
            v = np.log10(v)
        if v.std() > 1e-12:
            columns.append((v - v.mean()) / v.std())
    return np.column_stack(columns) if columns else np.zeros((len(names), 0))
