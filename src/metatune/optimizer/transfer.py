"""Transfer-aware proposals (`transfer`) and zero-shot recommendations (`zero_shot`) from the history of every
dataset; docs/optimizer.md explains the design.

Both score candidate configurations with the ensemble of ensemble.py and pick greedily, spreading a batch:
- `transfer`: expected improvement over the target's incumbent, times the probability of not failing;
- `zero_shot` (and `transfer` before the target has a trial): the predicted normalized objective, counting a
  failure as the worst outcome; the target's own trials are ignored except that none is proposed again.
Candidates: uniform draws, the best configurations of the heaviest sources (warm start) and of the target, and
Gaussian steps around all of these, then a second round of smaller steps around the best-scored ones.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from metatune.optimizer import ensemble as ens
from metatune.optimizer.common import NEAR_DUPLICATE, min_sq_dist
from metatune.optimizer.tasks import metafeature_matrix, tasks_from_history
from metatune.space import Space

WORST_SCORE = 3.0  # the normal score a failure counts as (worse than any rank of up to ~700 trials)


@dataclass(frozen=True)
class TransferSettings:
    ensemble: ens.EnsembleSettings = field(default_factory=ens.EnsembleSettings)
    n_uniform: int = 128
    n_local: int = 16  # Gaussian steps around each centre
    local_scales: tuple[float, ...] = (0.03, 0.1)  # step sizes, in unit-cube units
    n_centres: int = 8  # best source and target configurations to start from
    refine_top: int = 4  # second round: small steps around the best-scored candidates
    diversity_radius: float = 0.1  # a batch's picks damp each other's scores within about this distance


@dataclass(frozen=True)
class Pick:
    hp: dict
    mean: float  # predicted normal score (lower is better)
    fail: float  # predicted failure probability


def _rng(seed: int, target: str, history: pd.DataFrame) -> np.random.Generator:
    n_target = int((history["dataset"] == target).sum())
    return np.random.default_rng([seed, n_target, zlib.crc32(target.encode())])


def centres(model: ens.Ensemble, k: int, dim: int) -> np.ndarray:
    """Warm starts: the best trials of the sources in proportion to their weight (the heaviest source at least
    one), and the target's best."""
    weights = np.nan_to_num(model.weights[: len(model.sources)])
    rows = []
    for i, (w, s) in enumerate(sorted(zip(weights, model.sources), key=lambda p: -p[0])):
        take = max(int(i == 0), round(k * w))
        rows.extend(s.x[np.argsort(s.z, kind="stable")[:take]])
    if model.target is not None:
        rows.extend(model.target.x[np.argsort(model.target.z, kind="stable")[: max(1, k // 2)]])
    return np.array(rows).reshape(len(rows), dim)


def decode(space: Space, points: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Configurations at these unit-cube points, and their exact encodings (after rounding ints, categoricals)."""
    configs = [space.from_unit(u) for u in points]
    return configs, space.unit_matrix({k: [c[k] for c in configs] for k in space.names})


def around(points: np.ndarray, n: int, scales: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    if not len(points):
        return points
    steps = [p + rng.normal(0, s, size=(n, len(p))) for p in points for s in scales]
    return np.clip(np.concatenate(steps), 0, 1)


def score(model: ens.Ensemble, x: np.ndarray, incumbent: float | None, pseudocount: float):
    """(utility to maximize, predicted mean, failure probability) of each candidate."""
    mu, var = model.predict(x, variance=incumbent is not None)
    fail = model.fail_rate(x, pseudocount)
    if incumbent is None:  # rank by the expected normalized objective, a failure counting as the worst
        util = (1 - fail) * np.maximum(WORST_SCORE - mu, 0.0)
    else:
        std = np.sqrt(var)
        gap = incumbent - mu
        ei = gap * norm.cdf(gap / std) + std * norm.pdf(gap / std)
        util = (1 - fail) * np.maximum(ei, 0.0)
    return np.nan_to_num(util, nan=-np.inf), mu, fail


def select(space: Space, model: ens.Ensemble, tried: np.ndarray, incumbent: float | None, n: int,
           settings: TransferSettings, rng: np.random.Generator) -> list[Pick]:
    """The `n` best candidates, greedily: each pick damps the scores near it, so a batch spreads out."""
    dim = tried.shape[1]
    start = centres(model, settings.n_centres, dim)
    points = np.concatenate([rng.random((settings.n_uniform, dim)), start,
                             around(start, settings.n_local, settings.local_scales, rng)])
    configs, x = decode(space, points)
    util, *_ = score(model, x, incumbent, settings.ensemble.fail_pseudocount)
    best = x[np.argsort(-util, kind="stable")[: settings.refine_top]]
    more, x_more = decode(space, around(best, settings.n_local, (settings.local_scales[0] / 3,), rng))
    configs, x = configs + more, np.concatenate([x, x_more])
    util, mu, fail = score(model, x, incumbent, settings.ensemble.fail_pseudocount)
    # Never a configuration the target already tried (finalize would drop it and fall back on random ones).
    util = np.where(min_sq_dist(x, tried) < NEAR_DUPLICATE ** 2, -np.inf, util)
    picks: list[Pick] = []
    for _ in range(min(n, len(x))):
        i = int(np.argmax(util))
        if not np.isfinite(util[i]):
            break
        picks.append(Pick(configs[i], float(mu[i]), float(fail[i])))
        dist2 = ((x - x[i]) ** 2).sum(1)
        util = util * (1 - np.exp(-dist2 / (2 * settings.diversity_radius ** 2)))
        util[dist2 < NEAR_DUPLICATE ** 2] = -np.inf
    return picks


@dataclass(frozen=True)
class Plan:
    model: ens.Ensemble
    picks: list[Pick]
    notes: list[str]  # where the method fell back on something simpler, and why


def plan(space: Space, history: pd.DataFrame, target: str, metafeatures: dict, n: int, seed: int,
         zero_shot: bool, settings: TransferSettings = TransferSettings()) -> Plan:
    """The ensemble for `target` and its `n` picks."""
    rng = _rng(seed, target, history)
    tasks = tasks_from_history(space, history)
    names = sorted(set(tasks) | {target})
    matrix, notes = metafeature_matrix(metafeatures, names, target)
    mf = dict(zip(names, matrix))
    model = ens.build(tasks, target, mf, space.dim, settings.ensemble, use_target=not zero_shot, rng=rng)
    notes += model.notes
    mine = tasks.get(target)
    tried = mine.x if mine is not None else np.zeros((0, space.dim))
    if not model.models:
        return Plan(model, [], notes)
    incumbent = None
    if not zero_shot and mine is not None and (mine.failed == 0).any():
        incumbent = float(model.predict(mine.x[mine.failed == 0], variance=False)[0].min())
    elif not zero_shot:
        notes.append("no ok trial of the target yet: ranked by the predicted objective, as zero_shot")
    return Plan(model, select(space, model, tried, incumbent, n, settings, rng), notes)


def propose_transfer(space, history, target, metafeatures, n, seed):
    p = plan(space, history, target, metafeatures, n, seed, zero_shot=False)
    return [pick.hp for pick in p.picks], p.notes


def propose_zero_shot(space, history, target, metafeatures, n, seed):
    p = plan(space, history, target, metafeatures, n, seed, zero_shot=True)
    return [pick.hp for pick in p.picks], p.notes
