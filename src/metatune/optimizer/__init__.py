"""Propose configurations to try next, from the history of every dataset.

`proposal(space, history, target, metafeatures, n, method, seed)` is the one entry point (`propose` returns just
its configurations); methods are registered in METHODS by name so the workflow picks one by config alone. It
knows nothing of LoRA: a space is any config `space` mapping or metatune.space.Space, and the history any table
of trials with `dataset`, one column per parameter, `objective` (lower is better) and `status`.

Valid input never raises: an empty or degenerate history, missing metafeatures or a space too small for `n`
new configurations make a method fall back on something simpler, and the Proposal says why. Invalid input (a
history column or value the space does not know, an unknown status or method) is a ValueError naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from metatune.optimizer.baselines import (
    propose_gp,
    propose_grid,
    propose_random,
    propose_tpe,
)
from metatune.optimizer.common import check_history, finalize
from metatune.optimizer.transfer import propose_transfer, propose_zero_shot
from metatune.space import Space

# name -> method(space, history, target, metafeatures, n, seed) -> (candidate configurations, fallback notes)
METHODS: dict[str, Callable] = {
    "random": propose_random,
    "grid": propose_grid,
    "tpe": propose_tpe,
    "gp": propose_gp,
    "transfer": propose_transfer,
    "zero_shot": propose_zero_shot,
}


@dataclass(frozen=True)
class Proposal:
    configs: list[dict]  # `n` of them, new to the target and distinct unless the space holds fewer
    fallback: list[str]  # why the method could not run as designed (empty when it could)


def proposal(space: Space | Mapping, history: pd.DataFrame | None, target: str, metafeatures: dict | None,
             n: int, method: str = "transfer", seed: int = 0) -> Proposal:
    """`n` configurations for `target`, none a (near-)duplicate of one it already tried where the space allows."""
    if method not in METHODS:
        raise ValueError(f"optimizer.method: unknown method {method!r} (one of {sorted(METHODS)})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    space = Space.parse(space)
    history = check_history(space, history)
    candidates, notes = METHODS[method](space, history, str(target), metafeatures or {}, n, seed)
    configs, more = finalize(space, history, str(target), candidates, n, seed)
    return Proposal(configs, notes + more)


def propose(space: Space | Mapping, history: pd.DataFrame | None, target: str, metafeatures: dict | None, n: int,
            method: str = "transfer", seed: int = 0) -> list[dict]:
    return proposal(space, history, target, metafeatures, n, method, seed).configs
