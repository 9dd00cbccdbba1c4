"""The search space and the stage-1 grid.

A space is the config's `space` mapping: {name: {type, low, high, log, choices, grid}} with types float,
log_float, int and categorical. Stage-1 trial ids are hashes of the hyperparameters, so adding a dataset or a grid
value never renames an existing trial.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math


def canonical_hp(hp: dict) -> str:
    """One string per configuration: sorted keys, shortest round-trip floats, ints kept as ints."""
    return json.dumps(hp, sort_keys=True, separators=(",", ":"))


def stage1_trial_id(hp: dict) -> str:
    return "g" + hashlib.sha1(canonical_hp(hp).encode()).hexdigest()[:10]


def coerce(space: dict, hp: dict) -> dict:
    """Values as their parameter's type (YAML and JSON may turn 32 into 32.0 or the reverse)."""
    out = {}
    for name, p in space.items():
        v = hp[name]
        out[name] = int(round(v)) if p["type"] == "int" else (float(v) if p["type"] in ("float", "log_float") else v)
    return out


def factorial(space: dict) -> list[dict]:
    names = list(space)
    return [coerce(space, dict(zip(names, values))) for values in itertools.product(*(space[n]["grid"] for n in names))]


def space_filling(space: dict, size: int, design: str, seed: int) -> list[dict]:
    """`size` distinct points of the factorial grid, picked by a scrambled Sobol or Latin hypercube design:
    each unit-cube coordinate selects one of that parameter's grid values."""
    from scipy.stats import qmc

    names = list(space)
    sampler = (qmc.Sobol if design == "sobol" else qmc.LatinHypercube)(d=len(names), scramble=True, seed=seed)
    chosen: dict[str, dict] = {}
    # Coarse grids make designs collide on the same grid point; draw more until `size` distinct ones exist.
    for _ in range(64):
        for u in sampler.random(1 << max(3, (size - 1).bit_length())):  # Sobol wants powers of 2
            hp = coerce(space, {n: space[n]["grid"][min(int(x * len(space[n]["grid"])), len(space[n]["grid"]) - 1)]
                                for n, x in zip(names, u)})
            chosen.setdefault(canonical_hp(hp), hp)
            if len(chosen) == size:
                return list(chosen.values())
    # The validator guarantees size <= the grid's points, so fill the rest in grid order.
    for hp in factorial(space):
        chosen.setdefault(canonical_hp(hp), hp)
        if len(chosen) == size:
            break
    return list(chosen.values())


def stage1_configs(space: dict, design: str, size: int | None, seed: int) -> dict[str, dict]:
    """{trial_id: hp} of the stage-1 grid, in a stable order."""
    points = factorial(space) if design == "factorial" else space_filling(space, size, design, seed)
    return {stage1_trial_id(hp): hp for hp in points}


def unit_vector(space: dict, hp: dict) -> list[float]:
    """The configuration in [0, 1]^d (log scales where the parameter has one; categoricals one-hot), for
    distances between configurations."""
    out: list[float] = []
    for name, p in space.items():
        v = hp[name]
        if p["type"] == "categorical":
            out.extend(1.0 if v == c else 0.0 for c in p["choices"])
        elif p["type"] == "log_float" or p.get("log"):
            out.append((math.log(v) - math.log(p["low"])) / (math.log(p["high"]) - math.log(p["low"])))
        else:
            out.append((v - p["low"]) / (p["high"] - p["low"]))
    return out
