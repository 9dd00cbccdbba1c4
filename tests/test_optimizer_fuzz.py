"""The optimizer never raises on valid input: property-based tests over spaces the config schema admits, histories
of every shape, metafeatures present, absent or broken, and batch sizes from 1 to 64, for every method; the two
crashes reported in issue 13 as regression tests; invalid input as a ValueError naming the culprit.

The CI profile runs 300 cases per method, most of them small (a few parameters, a few trials): what breaks
usually breaks there, and big cases cost seconds each. METATUNE_FUZZ=full runs 5,000 per method, unseeded.
"""

from __future__ import annotations

import json
import math
import os
import random
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metatune import optimizer
from metatune.contract import STATUSES
from metatune.optimizer.common import NEAR_DUPLICATE
from metatune.space import Space, choice_key

settings.register_profile("fuzz-ci", max_examples=300, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("fuzz-full", max_examples=5000, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
FUZZ = settings.get_profile("fuzz-full" if os.environ.get("METATUNE_FUZZ") == "full" else "fuzz-ci")
DATASETS = ["a", "b", "c", "d", "e", "f"]
TARGET = "t"


def small_or(large: int, small: int = 3):
    """Sizes: small most of the time (cheap cases), up to `large` sometimes."""
    return st.one_of(st.integers(1, small), st.integers(1, small), st.integers(1, small), st.integers(1, large))


choice_values = st.one_of(
    st.text("abcxyz_", min_size=0, max_size=4), st.integers(-5, 5), st.booleans(), st.none(),
    st.floats(-10, 10, allow_nan=False, width=32), st.lists(st.integers(0, 3), max_size=2))


@st.composite
def params(draw):
    kind = draw(st.sampled_from(["float", "log_float", "int", "int_log", "categorical"]))
    if kind == "categorical":
        choices = draw(st.lists(choice_values, min_size=1, max_size=4, unique_by=choice_key))
        return {"type": "categorical", "choices": choices, "grid": [draw(st.sampled_from(choices))]}
    zero_width = draw(st.booleans()) and draw(st.booleans())
    if kind == "float":
        low = draw(st.floats(-1e3, 1e3, allow_nan=False))
        high = low if zero_width else low + draw(st.floats(1e-6, 1e4, allow_nan=False))
        param = {"type": "float", "low": low, "high": high}
    elif kind == "log_float":
        low = draw(st.floats(1e-8, 1e3, allow_nan=False))
        high = low if zero_width else low * draw(st.floats(1.0001, 1e6, allow_nan=False))
        param = {"type": "log_float", "low": low, "high": high}
    else:
        low = draw(st.integers(1, 100) if kind == "int_log" else st.integers(-100, 100))
        high = low if zero_width else low + draw(st.integers(1, 1000))
        param = {"type": "int", "low": low, "high": high, **({"log": True} if kind == "int_log" else {})}
    return {**param, "grid": [param["low"]] if zero_width else [param["low"], param["high"]]}


@st.composite
def spaces(draw) -> dict:
    n = draw(small_or(20))
    return {f"p{i}": draw(params()) for i in range(n)}


def value_draws(space: Space, rng: random.Random, grid_bias: bool) -> dict:
    """A configuration of the space: uniform, or on grid values and bounds (ties and duplicates)."""
    if not grid_bias:
        return space.sample(rng)
    return space.coerce({p.name: rng.choice(p.grid if p.kind == "categorical" else (*p.grid, p.low, p.high))
                         for p in space})


@st.composite
def histories(draw, space: Space) -> pd.DataFrame:
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    datasets = draw(st.lists(st.sampled_from(DATASETS), max_size=5, unique=True))
    if draw(st.booleans()):
        datasets.append(TARGET)
    shape = draw(st.sampled_from(["varied", "constant", "all_failed", "duplicates", "ties"]))
    rows = []
    for name in datasets:
        for _ in range(draw(st.one_of(st.integers(0, 4), st.integers(0, 4), st.integers(0, 40)))):
            status = "ok" if shape != "all_failed" and rng.random() < 0.75 else rng.choice(STATUSES[1:])
            if status == "ok":
                objective = {"constant": 1.5, "ties": float(rng.choice([1, 2]))}.get(
                    shape, rng.choice([rng.uniform(-5, 5), rng.lognormvariate(0, 3), 1e300 * rng.random()]))
            else:  # what a failed trial may carry: nothing, NaN, or a number it reported before failing
                objective = rng.choice([None, math.nan, math.inf, rng.uniform(0, 5)])
            hp = value_draws(space, rng, grid_bias=shape in ("ties", "duplicates"))
            copies = rng.choice([1, 1, 3]) if shape == "duplicates" else 1
            rows += [{"dataset": name, **hp, "objective": objective, "status": status}] * copies
    return pd.DataFrame(rows, columns=["dataset", *space.names, "objective", "status"])


@st.composite
def metafeature_sets(draw, names: list[str]):
    kind = draw(st.sampled_from(["none", "empty", "empty_dicts", "constant", "random", "partial", "broken"]))
    if kind == "none":
        return None
    if kind == "empty":
        return {}
    if kind == "empty_dicts":
        return {n: {} for n in names}
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    keys = [f"m{i}" for i in range(draw(st.integers(1, 5)))]
    if kind == "constant":
        return {n: {k: 3.0 for k in keys} for n in names}
    out = {n: {k: rng.lognormvariate(0, 4) for k in keys} for n in names}
    if kind in ("partial", "broken"):
        for n in names:
            if rng.random() < 0.3:
                out.pop(n)
            elif rng.random() < 0.5:
                out[n].pop(rng.choice(keys))
    if kind == "broken":
        for row in out.values():
            for k in row:
                row[k] = rng.choice([row[k], math.nan, math.inf, -math.inf, "n/a", True, None, 1e308])
    return out


@st.composite
def cases(draw):
    raw = draw(spaces())
    space = Space.parse(raw)
    history = draw(histories(space))
    mf = draw(metafeature_sets([*DATASETS, TARGET]))
    n = draw(st.one_of(st.integers(1, 3), st.integers(1, 3), st.integers(1, 64)))
    return raw, history, mf, n, draw(st.integers(0, 10**6))


def check_proposal(raw: dict, history: pd.DataFrame, n: int, result: optimizer.Proposal) -> None:
    space = Space.parse(raw)
    assert len(result.configs) == n
    assert isinstance(result.fallback, list) and all(isinstance(r, str) and r for r in result.fallback)
    for hp in result.configs:
        assert list(hp) == space.names
        space.check(hp)
    if not any("repeat earlier" in r for r in result.fallback):
        x = space.unit_matrix({k: [hp[k] for hp in result.configs] for k in space.names})
        tried = space.unit_matrix(history[history["dataset"] == TARGET]) if len(history) else np.zeros((0, space.dim))
        for i in range(len(x)):
            assert all(np.linalg.norm(x[i] - x[j]) >= NEAR_DUPLICATE for j in range(i)), result.configs
            assert all(np.linalg.norm(x[i] - t) >= NEAR_DUPLICATE * (1 - 1e-9) for t in tried)


@pytest.mark.parametrize("method", sorted(optimizer.METHODS))
@FUZZ
@given(case=cases())
def test_valid_input_never_raises(method, case):
    raw, history, mf, n, seed = case
    if method == "gp":  # Optuna's GP sampler costs a second an ask past 5 trials: its cases stay small
        n = 1
        history = history[history["dataset"] != TARGET].head(40).pipe(
            lambda others: pd.concat([others, history[history["dataset"] == TARGET].head(8)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a 0/0 on the way is a bug even if it does not raise
        result = optimizer.proposal(raw, history, TARGET, mf, n, method=method, seed=seed)
    check_proposal(raw, history, n, result)


# --- regressions from issue 13 -------------------------------------------------------------------------------

SPACE_2D = {"lr": {"type": "log_float", "low": 1e-5, "high": 1e-1, "grid": [1e-4]},
            "drop": {"type": "float", "low": 0.0, "high": 0.3, "grid": [0.0]}}


@pytest.mark.parametrize("method", ["zero_shot", "transfer"])
def test_empty_metafeature_dicts_fall_back_to_equal_weights(method):
    """{dataset: {}} for 20 source datasets raised "cannot reshape array of size 0 into shape (0,newaxis)": with
    equal weights no source's share of the 8 warm starts rounded to one."""
    rng = random.Random(0)
    space = Space.parse(SPACE_2D)
    rows = [{"dataset": f"s{k}", **(hp := space.sample(rng)), "objective": (hp["drop"] - 0.1) ** 2 + i / 100,
             "status": "ok"} for k in range(20) for i in range(6)]
    history = pd.DataFrame(rows)
    mf = {d: {} for d in [*history["dataset"].unique(), "t"]}
    result = optimizer.proposal(SPACE_2D, history, "t", mf, 2, method=method)
    assert len(result.configs) == 2
    assert any("weighed equally" in r for r in result.fallback), result.fallback


def test_transfer_survives_sources_without_prior_credit():
    """Real metafeatures, and the only source that ranks the target's trials right is so far from the target
    that its prior weight underflows to 0: every bootstrap sample's credit was 0, rgpe_weights divided 0 by 0,
    and transfer.centres rounded NaN ("cannot convert float NaN to integer")."""
    rows = [{"dataset": d, "lr": float(lr), "drop": 0.0, "objective": sign * math.log10(lr), "status": "ok"}
            for d, sign in [("near1", -1), ("near2", -1), ("near3", -1), ("far", 1)]
            for lr in np.geomspace(1e-5, 1e-1, 8)]
    rows += [{"dataset": "t", "lr": 1e-4, "drop": 0.0, "objective": 1.0, "status": "ok"},
             {"dataset": "t", "lr": 1e-2, "drop": 0.0, "objective": 2.0, "status": "ok"}]
    mf = {"t": {"size": 0.0}, "near1": {"size": 0.001}, "near2": {"size": 0.002}, "near3": {"size": 0.003},
          "far": {"size": 1.0}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        configs = optimizer.propose(SPACE_2D, pd.DataFrame(rows), "t", mf, 2, method="transfer")
    # The target's own two trials say: lower is better. The far source agrees and gets the credit.
    assert len(configs) == 2 and all(hp["lr"] < 1e-3 for hp in configs), configs


@pytest.mark.parametrize("method", sorted(optimizer.METHODS))
def test_ten_thousand_trials(method):
    """A long sweep's history: 10,000 rows, half of them the target's, proposals in seconds."""
    import time

    space = Space.parse(SPACE_2D)
    rng = random.Random(1)
    rows = [{"dataset": rng.choice(["a", "b", "t", "t"]), **(hp := space.sample(rng)), "status": "ok",
             "objective": math.log10(hp["lr"]) ** 2 + hp["drop"]} for _ in range(10_000)]
    start = time.monotonic()
    result = optimizer.proposal(SPACE_2D, pd.DataFrame(rows), "t", {"a": {"m": 1}, "b": {"m": 2}, "t": {"m": 1.5}},
                                4, method=method)
    assert len(result.configs) == 4 and time.monotonic() - start < 60


def test_an_exhausted_space_repeats_and_says_so():
    raw = {"only": {"type": "categorical", "choices": ["x"], "grid": ["x"]},
           "fixed": {"type": "float", "low": 0.5, "high": 0.5, "grid": [0.5]}}
    history = pd.DataFrame([{"dataset": "t", "only": "x", "fixed": 0.5, "objective": 1.0, "status": "ok"}])
    for method in optimizer.METHODS:
        result = optimizer.proposal(raw, history, "t", {}, 3, method=method)
        assert result.configs == [{"only": "x", "fixed": 0.5}] * 3
        assert any("repeat earlier ones" in r for r in result.fallback), (method, result.fallback)


# --- invalid input ----------------------------------------------------------------------------------------------

def history_row(**changes) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": "a", "lr": 1e-3, "drop": 0.1, "objective": 1.0, "status": "ok", **changes}])


@pytest.mark.parametrize("history,words", [
    (history_row(lora_droput=0.1), r"\['lora_droput'\] are not parameters of the space"),
    (history_row(lr=0.5), r"space\.lr: 0\.5 lies outside \[1e-05, 0\.1\]"),
    (history_row(drop="high"), r"space\.drop: 'high' is not a finite number"),
    (history_row(drop=math.nan), r"row 0 \(dataset 'a'\): space\.drop: nan is not a finite number"),
    (history_row(status="crashed"), r"unknown status values \['crashed'\]"),
    (history_row().drop(columns="drop"), r"missing columns \['drop'\]"),
])
def test_invalid_history_is_an_error_naming_it(history, words):
    with pytest.raises(ValueError, match=words):
        optimizer.propose(SPACE_2D, history, "t", {}, 1, method="random")


def test_a_categorical_value_outside_the_choices_is_named():
    raw = {"mod": {"type": "categorical", "choices": ["attn", "attn_mlp"], "grid": ["attn"]}}
    history = pd.DataFrame([{"dataset": "a", "mod": "mlp", "objective": 1.0, "status": "ok"}])
    with pytest.raises(ValueError, match=r"space\.mod: 'mlp' is not among the choices \['attn', 'attn_mlp'\]"):
        optimizer.propose(raw, history, "t", {}, 1, method="transfer")


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_n_must_be_a_positive_integer(n):
    with pytest.raises(ValueError, match="n: expected a positive integer"):
        optimizer.propose(SPACE_2D, None, "t", {}, n, method="random")


def test_proposals_json_records_the_fallback(tiny_sweep):
    """The tiny sweep's TPE has 4 target trials in round 1, fewer than its 5 startup trials: no fallback of
    ours (Optuna samples at random by design), and the record says so with an empty list."""
    doc = json.loads((tiny_sweep / "results" / "stage2" / "arith" / "round1" / "proposals.json").read_text())
    assert doc["fallback"] == [] and len(doc["configs"]) == 2
