"""Baseline methods: random search, the grid, and Optuna's TPE and GP samplers on a study rebuilt from the
target's history (the other datasets are ignored: these methods do not transfer). Each returns its candidate
configurations and the reasons it fell back on something simpler, if it did."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from metatune.optimizer.tasks import keep_indices, normal_scores
from metatune.space import Space, canonical_hp

# The grid is listed and shuffled whole up to this many points; a larger one is sampled point by point.
LISTED_GRID = 100_000
# Target trials an Optuna study is rebuilt from at most: the GP sampler's cost is cubic in them, and the
# study's construction linear (the best of them and a spread of the rest are kept).
MAX_STUDY_TRIALS = {"tpe": 1000, "gp": 200}


def propose_random(space: Space, history, target, metafeatures, n, seed):
    rng = random.Random(f"random|{seed}|{target}|{len(history)}")
    return [space.sample(rng) for _ in range(4 * n)], []


def propose_grid(space: Space, history, target, metafeatures, n, seed):
    """The grid points not tried yet, in a seeded order."""
    rows = history[history["dataset"] == target]
    tried = {canonical_hp(space.coerce({k: row[k] for k in space.names})) for _, row in rows.iterrows()}
    rng = random.Random(f"grid|{seed}|{target}")
    if space.grid_size <= LISTED_GRID:
        new = [hp for hp in space.factorial() if canonical_hp(hp) not in tried]
        rng.shuffle(new)
    else:  # too many to list: distinct random grid points, enough for the batch and the tried ones
        draws = rng.sample(range(space.grid_size), min(space.grid_size, 4 * n + len(tried)))
        new = [hp for hp in map(space.grid_point, draws) if canonical_hp(hp) not in tried]
    return new, ([] if new else ["every grid point was tried"])


def target_objectives(history: pd.DataFrame, target: str) -> pd.DataFrame:
    """The target's trials with the objective as normal scores of its ranks, failures tied worst: a model-based
    sampler learns to stay away from failures instead of never seeing them, and a loss of 1e300 cannot
    overflow its model. TPE only compares objectives, so it samples exactly as on the raw losses."""
    rows = history[history["dataset"] == target].copy()
    objective = rows["objective"].to_numpy(dtype=float)
    failed = (rows["status"].ne("ok").to_numpy() | ~np.isfinite(objective)).astype(float)
    rows["objective"] = normal_scores(objective, failed) if len(rows) else objective
    return rows


def optuna_ask(space: Space, history, target, n, sampler, cap: int) -> tuple[list[dict], list[str]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Categoricals by their choices' positions: Optuna admits only some types of choice (Space says which).
    dists = {p.name: p.optuna_distribution(choice_indices=True) for p in space}
    study = optuna.create_study(direction="minimize", sampler=sampler)
    rows = target_objectives(history, target)
    notes = []
    if len(rows) > cap:
        notes.append(f"the study is rebuilt from {cap} of the target's {len(rows)} trials")
        rows = rows.iloc[keep_indices(rows["objective"].to_numpy(dtype=float), cap, target)]
    for _, row in rows.iterrows():
        params = {p.name: p.index(row[p.name]) if p.kind == "categorical" else row[p.name] for p in space}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row["objective"])))
    out = []
    for _ in range(2 * n):  # extra asks, in case some land on configurations already tried
        trial = study.ask(dists)
        out.append({p.name: p.choices[trial.params[p.name]] if p.kind == "categorical" else trial.params[p.name]
                    for p in space})
    return out, notes


def propose_tpe(space, history, target, metafeatures, n, seed):
    import optuna

    # constant_liar: asked-but-unfinished trials count as bad, so one batch's proposals spread out.
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=5)
    return optuna_ask(space, history, target, n, sampler, MAX_STUDY_TRIALS["tpe"])


def propose_gp(space, history, target, metafeatures, n, seed):
    import optuna

    sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)
    return optuna_ask(space, history, target, n, sampler, MAX_STUDY_TRIALS["gp"])


__all__ = ["propose_gp", "propose_grid", "propose_random", "propose_tpe"]
