"""The search space, typed, and the stage-1 grid.

The config's `space` mapping ({name: {type, low, high, log, choices, grid}}, types float, log_float, int and
categorical) is parsed once, by `Space.parse`, into Param objects: a kind (float, int or categorical), bounds,
a log scale, choices and grid values, and the map to and from the unit cube that the optimizer and the
benchmarks measure distances in. Everything that needs to know whether a parameter is on a log scale, which
values it admits or how to sample it asks its Param.

Stage-1 trial ids are hashes of the hyperparameters, so adding a dataset or a grid value never renames an
existing trial.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

KINDS = ("float", "int", "categorical")


class SpaceError(ValueError):
    """A malformed space, or a value outside it; the message starts with the parameter at fault."""


def canonical_hp(hp: dict) -> str:
    """One string per configuration: sorted keys, shortest round-trip floats, ints kept as ints."""
    return json.dumps(hp, sort_keys=True, separators=(",", ":"))


def stage1_trial_id(hp: dict) -> str:
    return "g" + hashlib.sha1(canonical_hp(hp).encode()).hexdigest()[:10]


def _plain(v):
    """A Python scalar for a numpy or pandas one (histories come from DataFrames)."""
    return v.item() if isinstance(v, np.generic) else v


def choice_key(v) -> str:
    """What makes two categorical values the same choice: numbers by value (a CSV turns 1 into 1.0), booleans
    apart from numbers, None and NaN alike, anything else by its JSON text."""
    v = _plain(v)
    if v is None or (isinstance(v, float) and math.isnan(v)):  # pandas stores a None choice as NaN
        return "none"
    if isinstance(v, bool):
        return f"bool:{v}"
    if isinstance(v, (int, float)):
        return f"num:{float(v)!r}"
    try:
        return "json:" + json.dumps(v, sort_keys=True)
    except TypeError:
        return "repr:" + repr(v)


def _is_number(v) -> bool:
    v = _plain(v)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Param:
    """One hyperparameter of the space."""

    name: str
    kind: str  # float | int | categorical
    low: float = 0.0
    high: float = 0.0
    log: bool = False  # sampled, searched and plotted on a log scale
    choices: tuple = ()
    grid: tuple = ()

    @property
    def key(self) -> str:
        return f"space.{self.name}"

    @property
    def width(self) -> int:
        """Unit-cube coordinates: one per choice of a categorical (one-hot), else one."""
        return len(self.choices) if self.kind == "categorical" else 1

    @property
    def int_bounds(self) -> tuple[int, int]:
        return math.ceil(self.low), math.floor(self.high)

    def coerce(self, v):
        """The value as this parameter's type (YAML and JSON may turn 32 into 32.0 or the reverse); ints are
        rounded into the range, and a categorical value becomes the choice object it equals."""
        v = _plain(v)
        if self.kind == "int":
            lo, hi = self.int_bounds
            return min(hi, max(lo, round(v)))
        if self.kind == "float":
            return float(v)
        return self.choices[self.index(v)]

    @functools.cached_property
    def _choice_index(self) -> dict:
        return {choice_key(c): i for i, c in enumerate(self.choices)}

    def index(self, v) -> int:
        """The position of a categorical value among the choices; a value not among them is an error."""
        i = self._choice_index.get(choice_key(v))
        if i is None:
            raise SpaceError(f"{self.key}: {v!r} is not among the choices {list(self.choices)}")
        return i

    def indices(self, values) -> np.ndarray:
        """The positions of many categorical values among the choices (as `index`, memoized per distinct
        value: histories repeat a few choices thousands of times)."""
        if len(set(map(type, values))) == 1:  # one type: equality is identity of choice, so factorize in C
            import pandas as pd

            try:
                codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=False)
                return np.array([self.index(u) for u in uniques], dtype=int)[codes]
            except TypeError:  # unhashable choices (lists)
                pass
        seen: dict = {}
        out = np.empty(len(values), dtype=int)
        for j, v in enumerate(values):
            try:
                key = (type(v), v)  # the type too: 1, 1.0 and True are equal as dict keys
                i = seen.get(key)
                if i is None:
                    i = seen[key] = self.index(v)
            except TypeError:  # an unhashable choice (a list)
                i = self.index(v)
            out[j] = i
        return out

    def check(self, v) -> None:
        """Raise SpaceError unless `v` lies in this parameter's range or among its choices."""
        if self.kind == "categorical":
            self.index(v)
            return
        if not _is_number(v):
            raise SpaceError(f"{self.key}: {_plain(v)!r} is not a finite number")
        tol = 1e-9 * (self.high - self.low) + 1e-12 * max(abs(self.low), abs(self.high))
        if not self.low - tol <= float(v) <= self.high + tol:
            raise SpaceError(f"{self.key}: {_plain(v)!r} lies outside [{self.low}, {self.high}]")

    def _scale(self, v: np.ndarray) -> np.ndarray:
        return np.log(v) if self.log else v

    def to_unit(self, values) -> np.ndarray:
        """A column of values as unit-cube coordinates, shape (len(values), width); log scales where the
        parameter has one, one-hot choices, 0.5 for a range of zero width."""
        if self.kind == "categorical":
            idx = self.indices(list(values))
            return np.eye(len(self.choices))[idx].reshape(len(idx), len(self.choices))
        v = np.asarray(values, dtype=float)
        lo, hi = self._scale(np.array([self.low, self.high], dtype=float))
        if hi == lo:
            return np.full((len(v), 1), 0.5)
        with np.errstate(divide="ignore", invalid="ignore"):
            return ((self._scale(v) - lo) / (hi - lo)).reshape(-1, 1)

    def from_unit(self, block) -> object:
        """The value at these unit-cube coordinates: clipped to the bounds, ints rounded, and a categorical
        takes the choice with the largest coordinate."""
        if self.kind == "categorical":
            block = np.nan_to_num(np.asarray(block, dtype=float), nan=-np.inf)
            return self.choices[int(np.argmax(block))]
        x = float(block[0])
        x = 0.5 if math.isnan(x) else min(1.0, max(0.0, x))
        if self.log:
            v = math.exp(math.log(self.low) + x * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + x * (self.high - self.low)
        return self.coerce(min(self.high, max(self.low, v)))  # exp(log(high)) may round past high

    def sample(self, rng: random.Random):
        """A uniform draw (log-uniform on a log scale)."""
        if self.kind == "categorical":
            return rng.choice(self.choices)
        if self.log:
            return self.coerce(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self.coerce(rng.uniform(self.low, self.high))

    def optuna_distribution(self, choice_indices: bool = False):
        """Optuna's distribution of this parameter; `choice_indices` stands a categorical's choices by their
        positions (Optuna admits only None, bool, int, float and str choices, and mixes up 1 and True)."""
        import optuna

        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(
                list(range(len(self.choices))) if choice_indices else list(self.choices))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(*self.int_bounds, log=self.log)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    @classmethod
    def parse(cls, name: str, raw: Mapping) -> Param:
        """A Param from its config entry, checked: what the schema cannot say (grids inside their ranges,
        positive bounds on a log scale, distinct choices) is a SpaceError naming the key."""
        key = f"space.{name}"
        if not isinstance(raw, Mapping):
            raise SpaceError(f"{key}: expected a mapping, got {type(raw).__name__}")
        type_ = raw.get("type")
        grid = raw.get("grid")
        if not isinstance(grid, (list, tuple)) or not grid:
            raise SpaceError(f"{key}.grid: expected a non-empty list of values")
        if type_ == "categorical":
            choices = raw.get("choices")
            if not isinstance(choices, (list, tuple)) or not choices:
                raise SpaceError(f"{key}.choices: expected a non-empty list of values")
            if len({choice_key(c) for c in choices}) != len(choices):
                raise SpaceError(f"{key}.choices: duplicate choices")
            p = cls(name, "categorical", choices=tuple(choices), grid=tuple(grid))
            for v in grid:
                if choice_key(v) not in p._choice_index:
                    raise SpaceError(f"{key}.grid: {v!r} is not among the choices {list(choices)}")
        elif type_ in ("float", "log_float", "int"):
            low, high = raw.get("low"), raw.get("high")
            for bound, v in (("low", low), ("high", high)):
                if not _is_number(v):
                    raise SpaceError(f"{key}.{bound}: expected a finite number, got {v!r}")
            if low > high:
                raise SpaceError(f"{key}: low ({low}) must be at or below high ({high})")
            log = type_ == "log_float" or bool(raw.get("log"))
            if log and low <= 0:
                raise SpaceError(f"{key}.low: a log scale needs low > 0, got {low}")
            kind = "int" if type_ == "int" else "float"
            if kind == "int" and math.ceil(low) > math.floor(high):
                raise SpaceError(f"{key}: no integer lies in [{low}, {high}]")
            for v in grid:
                if not _is_number(v):
                    hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(v, str) else ""
                    raise SpaceError(f"{key}.grid: {v!r} is not a number{hint}")
                if kind == "int" and v != int(v):
                    raise SpaceError(f"{key}.grid: {v!r} is not an integer")
                if not low <= v <= high:
                    raise SpaceError(f"{key}.grid: {v} lies outside [{low}, {high}]")
            p = cls(name, kind, float(low), float(high), log, grid=tuple(grid))
        else:
            raise SpaceError(f"{key}.type: {type_!r} is not one of float, log_float, int, categorical")
        if len(set(map(repr, grid))) != len(grid):
            raise SpaceError(f"{key}.grid: duplicate values")
        return p


@dataclass(frozen=True)
class Space:
    """The typed search space: its parameters in config order."""

    params: tuple[Param, ...]

    @classmethod
    def parse(cls, raw: Space | Mapping) -> Space:
        """The space of a config's `space` mapping (a Space is returned as it is)."""
        if isinstance(raw, Space):
            return raw
        if not isinstance(raw, Mapping) or not raw:
            raise SpaceError("space: expected a non-empty mapping of parameters")
        return cls(tuple(Param.parse(name, p) for name, p in raw.items()))

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def dim(self) -> int:
        """Coordinates of the unit cube."""
        return sum(p.width for p in self.params)

    @property
    def grid_size(self) -> int:
        return math.prod(len(p.grid) for p in self.params)

    def coerce(self, hp: Mapping) -> dict:
        return {p.name: p.coerce(hp[p.name]) for p in self.params}

    def check(self, hp: Mapping) -> None:
        """Raise SpaceError naming the first parameter that is missing or whose value lies outside the space."""
        for p in self.params:
            if p.name not in hp:
                raise SpaceError(f"{p.key}: missing from the configuration {dict(hp)}")
            p.check(hp[p.name])

    def unit_matrix(self, columns) -> np.ndarray:
        """Configurations in [0, 1]^dim, one row each, for distances between configurations and for models of
        them. `columns` maps each parameter to its values (a DataFrame, or a dict of lists); whole columns at a
        time, so a history of thousands of trials is fast."""
        n = len(columns[self.params[0].name])
        return np.concatenate([p.to_unit(list(columns[p.name]) if p.kind == "categorical" else columns[p.name])
                               for p in self.params], axis=1).reshape(n, self.dim)

    def unit_vector(self, hp: Mapping) -> np.ndarray:
        return self.unit_matrix({k: [v] for k, v in hp.items()})[0]

    def from_unit(self, u) -> dict:
        """The configuration at point `u` of the unit cube (the inverse of `unit_vector`, up to rounding)."""
        out, i = {}, 0
        for p in self.params:
            out[p.name] = p.from_unit(u[i:i + p.width])
            i += p.width
        return out

    def sample(self, rng: random.Random) -> dict:
        return {p.name: p.sample(rng) for p in self.params}

    def factorial(self) -> list[dict]:
        return [self.coerce(dict(zip(self.names, values))) for values in itertools.product(*(p.grid for p in self))]

    def grid_point(self, index: int) -> dict:
        """Point `index` of the factorial grid, in `factorial`'s order, without listing the grid."""
        values = {}
        for p in reversed(self.params):
            index, i = divmod(index, len(p.grid))
            values[p.name] = p.grid[i]
        return self.coerce({name: values[name] for name in self.names})


def space_filling(space: Space, size: int, design: str, seed: int) -> list[dict]:
    """`size` distinct points of the factorial grid, picked by a scrambled Sobol or Latin hypercube design:
    each unit-cube coordinate selects one of that parameter's grid values."""
    from scipy.stats import qmc

    sampler = (qmc.Sobol if design == "sobol" else qmc.LatinHypercube)(d=len(space), scramble=True, seed=seed)
    chosen: dict[str, dict] = {}
    # Coarse grids make designs collide on the same grid point; draw more until `size` distinct ones exist.
    for _ in range(64):
        for u in sampler.random(1 << max(3, (size - 1).bit_length())):  # Sobol wants powers of 2
            hp = space.coerce({p.name: p.grid[min(int(x * len(p.grid)), len(p.grid) - 1)] for p, x in zip(space, u)})
            chosen.setdefault(canonical_hp(hp), hp)
            if len(chosen) == size:
                return list(chosen.values())
    # The validator guarantees size <= the grid's points, so fill the rest in grid order.
    for hp in space.factorial():
        chosen.setdefault(canonical_hp(hp), hp)
        if len(chosen) == size:
            break
    return list(chosen.values())


def stage1_configs(space: Space | Mapping, design: str, size: int | None, seed: int) -> dict[str, dict]:
    """{trial_id: hp} of the stage-1 grid, in a stable order."""
    space = Space.parse(space)
    points = space.factorial() if design == "factorial" else space_filling(space, size, design, seed)
    return {stage1_trial_id(hp): hp for hp in points}
