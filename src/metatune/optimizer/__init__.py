"""Propose configurations to try next, from the history of every dataset.

`propose(space, history, target, metafeatures, n, method, seed)` is the one entry point; methods are registered
in METHODS by name so the workflow picks one by config alone. It knows nothing of LoRA: a space is any mapping
{name: {type: float|log_float|int|categorical, low, high, log, choices, grid}}, and the history any table of
trials with `dataset`, one column per parameter, `objective` (lower is better) and `status`.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from metatune.optimizer.baselines import propose_gp, propose_grid, propose_random, propose_tpe
from metatune.optimizer.common import check_history, finalize

METHODS: dict[str, Callable] = {
    "random": propose_random,
    "grid": propose_grid,
    "tpe": propose_tpe,
    "gp": propose_gp,
}


def propose(space: dict, history: pd.DataFrame, target: str, metafeatures: dict, n: int,
            method: str = "tpe", seed: int = 0) -> list[dict]:
    """`n` distinct configurations for `target`, none a (near-)duplicate of one it already tried."""
    if method not in METHODS:
        raise ValueError(f"optimizer.method: unknown method {method!r} (one of {sorted(METHODS)})")
    history = check_history(space, history)
    candidates = METHODS[method](space, history, target, metafeatures, n, seed)
    return finalize(space, history, target, candidates, n, seed)
