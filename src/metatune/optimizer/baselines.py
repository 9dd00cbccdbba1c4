"""Baseline methods: random search, the grid, and Optuna's TPE and GP samplers on a study rebuilt from the
target's history (the other datasets are ignored: these methods do not transfer)."""

from __future__ import annotations

import math
import random

import pandas as pd

from metatune.optimizer.common import sample_uniform, tried_configs
from metatune.space import canonical_hp, factorial


def propose_random(space, history, target, metafeatures, n, seed):
    rng = random.Random(f"random|{seed}|{target}|{len(history)}")
    return [sample_uniform(space, rng) for _ in range(4 * n)]


def propose_grid(space, history, target, metafeatures, n, seed):
    """The grid points not tried yet, in a seeded order."""
    tried = {canonical_hp(hp) for hp in tried_configs(space, history, target)}
    points = [hp for hp in factorial(space) if canonical_hp(hp) not in tried]
    random.Random(f"grid|{seed}|{target}").shuffle(points)
    return points


def distributions(space: dict) -> dict:
    import optuna

    out = {}
    for name, p in space.items():
        if p["type"] == "categorical":
            out[name] = optuna.distributions.CategoricalDistribution(p["choices"])
        elif p["type"] == "int":
            out[name] = optuna.distributions.IntDistribution(int(p["low"]), int(p["high"]), log=p.get("log", False))
        else:
            out[name] = optuna.distributions.FloatDistribution(p["low"], p["high"], log=p["type"] == "log_float" or p.get("log", False))
    return out


def target_objectives(history: pd.DataFrame, target: str) -> pd.DataFrame:
    """The target's trials with failures given a bad objective: worse than every ok trial, so a model-based
    sampler learns to stay away from them instead of never seeing them."""
    rows = history[history["dataset"] == target].copy()
    ok = rows["status"].eq("ok") & rows["objective"].map(lambda v: v is not None and math.isfinite(v))
    if ok.any():
        worst, best = rows.loc[ok, "objective"].max(), rows.loc[ok, "objective"].min()
        penalty = worst + max(worst - best, abs(worst) * 0.1, 1e-6)
    else:
        penalty = 1.0
    rows.loc[~ok, "objective"] = penalty
    return rows


def optuna_ask(space, history, target, n, sampler) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = distributions(space)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for _, row in target_objectives(history, target).iterrows():
        params = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in space}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row["objective"])))
    out = []
    for _ in range(2 * n):  # extra asks, in case some land on configurations already tried
        trial = study.ask(dists)
        out.append(dict(trial.params))
    return out


def propose_tpe(space, history, target, metafeatures, n, seed):
    import optuna

    # constant_liar: asked-but-unfinished trials count as bad, so one batch's proposals spread out.
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=5)
    return optuna_ask(space, history, target, n, sampler)


def propose_gp(space, history, target, metafeatures, n, seed):
    import optuna

    sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)
    return optuna_ask(space, history, target, n, sampler)


__all__ = ["propose_random", "propose_grid", "propose_tpe", "propose_gp"]
