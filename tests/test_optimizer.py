"""The optimizer's methods on small spaces, its treatment of failures, transfer against random search on a
family of related tasks, and the zero-shot recommendation CLI end to end."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from metatune import cli, optimizer
from metatune.optimizer.common import NEAR_DUPLICATE
from metatune.recommend import recommend
from metatune.space import Space

MIXED = {
    "lr": {"type": "log_float", "low": 1e-5, "high": 1e-1, "grid": [1e-4, 1e-2]},
    "rank": {"type": "int", "low": 1, "high": 64, "log": True, "grid": [4, 16]},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "grid": [0.0, 0.1]},
    "modules": {"type": "categorical", "choices": ["attn", "mlp", "all"], "grid": ["attn", "all"]},
}
CATEGORICAL = {
    "opt": {"type": "categorical", "choices": ["adam", "sgd", "lion"], "grid": ["adam", "sgd"]},
    "sched": {"type": "categorical", "choices": ["cos", "lin"], "grid": ["cos", "lin"]},
}
INT_LOG = {"batch": {"type": "int", "low": 2, "high": 512, "log": True, "grid": [8, 64]}}


def loss(space: dict, hp: dict, shift: float) -> float:
    """A smooth task whose optimum moves with `shift` (the task's one relevant metafeature): 0 at the optimum,
    where numeric parameters sit at 0.3 + 0.4 shift of their range and categoricals take their first choice."""
    out = 0.0
    for name, p in space.items():
        if p["type"] == "categorical":
            out += 0.0 if hp[name] == p["choices"][0] else 0.2
        else:
            out += (Space.parse({name: p}).unit_vector(hp)[0] - 0.3 - 0.4 * shift) ** 2
    return out


def history_of(space: dict, tasks: dict[str, float], n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for name, shift in tasks.items():
        for _ in range(n):
            hp = Space.parse(space).sample(rng)
            rows.append({"dataset": name, **hp, "objective": loss(space, hp, shift), "status": "ok"})
    return pd.DataFrame(rows)


def family(n_tasks: int) -> tuple[dict[str, float], dict[str, dict]]:
    shifts = {f"task{i}": i / (n_tasks - 1) for i in range(n_tasks)}
    # One relevant metafeature and one that is noise.
    mf = {name: {"shift": s, "noise": random.Random(name).random()} for name, s in shifts.items()}
    return shifts, mf


def in_space(space: dict, hp: dict) -> bool:
    return all(hp[k] in p["choices"] if p["type"] == "categorical" else p["low"] <= hp[k] <= p["high"]
               for k, p in space.items())


@pytest.mark.parametrize("method", sorted(optimizer.METHODS))
@pytest.mark.parametrize("space", [MIXED, CATEGORICAL, INT_LOG], ids=["mixed", "categorical", "int_log"])
def test_methods_propose_new_distinct_configurations(method, space):
    shifts, mf = family(4)
    history = history_of(space, shifts, 5, seed=1)
    configs = optimizer.propose(space, history, "task0", mf, 3, method=method, seed=0)
    assert len(configs) == 3 and all(in_space(space, hp) for hp in configs)
    tried = [Space.parse(space).unit_vector({k: row[k] for k in space})
             for _, row in history[history.dataset == "task0"].iterrows()]
    points = [Space.parse(space).unit_vector(hp) for hp in configs]
    for i, p in enumerate(points):
        assert all(math.dist(p, t) >= NEAR_DUPLICATE for t in tried)
        assert all(math.dist(p, q) >= NEAR_DUPLICATE for q in points[:i])


@pytest.mark.parametrize("method", ["transfer", "zero_shot"])
def test_zero_shot_needs_no_target_trials(method):
    shifts, mf = family(5)
    history = history_of(MIXED, {k: v for k, v in shifts.items() if k != "task2"}, 20, seed=2)
    configs = optimizer.propose(MIXED, history, "task2", mf, 2, method=method, seed=0)
    # The target's optimum sits at 0.5 in every coordinate, between its neighbours' optima.
    rng = random.Random(0)
    top_decile = np.quantile([loss(MIXED, Space.parse(MIXED).sample(rng), 0.5) for _ in range(200)], 0.1)
    assert all(loss(MIXED, hp, 0.5) < top_decile for hp in configs)


def diverging(space: dict, hp: dict) -> bool:
    return hp["lr"] > 3e-3


def test_transfer_avoids_a_region_that_diverged():
    """High learning rates diverged on the target (and on the sources): no proposal goes back there, although
    the losses alone point right at it (the smooth task's optimum lies inside the diverged region)."""
    shifts, mf = family(4)
    history = history_of(MIXED, shifts, 12, seed=3)
    history["objective"] = [loss(MIXED, {k: r[k] for k in MIXED}, 1.0) for _, r in history.iterrows()]
    bad = history.apply(lambda r: diverging(MIXED, r), axis=1)
    history.loc[bad, "status"], history.loc[bad, "objective"] = "diverged", None
    assert bad.sum() >= 10
    for method in ("transfer", "zero_shot"):
        configs = optimizer.propose(MIXED, history, "task1", mf, 4, method=method, seed=0)
        assert not any(diverging(MIXED, hp) for hp in configs), (method, configs)


def test_transfer_avoids_failures_without_sources():
    rng = random.Random(4)
    rows = []
    for _ in range(12):
        hp = Space.parse(MIXED).sample(rng)
        ok = not diverging(MIXED, hp)
        rows.append({"dataset": "only", **hp, "status": "ok" if ok else "diverged",
                     "objective": -math.log10(hp["lr"]) * 0.1 + hp["dropout"] if ok else None})
    history = pd.DataFrame(rows)
    assert (history.status == "diverged").sum() >= 3
    configs = optimizer.propose(MIXED, history, "only", {"only": {"size": 1.0}}, 3, method="transfer", seed=0)
    assert not any(diverging(MIXED, hp) for hp in configs)


def best_after(method: str, space: dict, sources: pd.DataFrame, target: str, shift: float, mf: dict,
               rounds: int, seed: int) -> float:
    history = sources
    for r in range(rounds):
        hp = optimizer.propose(space, history, target, mf, 1, method=method, seed=seed * 100 + r)[0]
        row = {"dataset": target, **hp, "objective": loss(space, hp, shift), "status": "ok"}
        history = pd.concat([history, pd.DataFrame([row])], ignore_index=True)
    return float(history.loc[history.dataset == target, "objective"].min())


def test_transfer_beats_random_search_on_related_tasks():
    shifts, mf = family(7)
    target = "task4"
    sources = history_of(MIXED, {k: v for k, v in shifts.items() if k != target}, 25, seed=5)
    results = {m: np.mean([best_after(m, MIXED, sources, target, shifts[target], mf, 6, seed) for seed in range(3)])
               for m in ("transfer", "random")}
    assert results["transfer"] < 0.5 * results["random"], results


def test_from_unit_inverts_unit_vector():
    hp = {"lr": 1e-3, "rank": 16, "dropout": 0.1, "modules": "mlp"}
    assert Space.parse(MIXED).from_unit(Space.parse(MIXED).unit_vector(hp)) == pytest.approx(hp)


def test_recommend_leaves_the_target_out_and_explains():
    shifts, mf = family(5)
    history = history_of(MIXED, shifts, 15, seed=6)
    doc = recommend(MIXED, history, mf, "task2", n=3)
    assert doc["n_history"] == 60 and len(doc["recommendations"]) == 3
    assert {d["dataset"] for d in doc["nearest_datasets"][:2]} == {"task1", "task3"}
    assert [r["rank"] for r in doc["recommendations"]] == [1, 2, 3]
    assert all(0 <= r["predicted_quantile"] <= 1 for r in doc["recommendations"])


def test_recommend_cli_on_a_runs_csv(tmp_path, capsys):
    import yaml

    space = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["space"]
    rng = random.Random(7)
    rows = []
    for name, size in (("small", 5.0), ("medium", 6.0), ("large", 7.0)):
        for i in range(10):
            hp = Space.parse(space).sample(rng)
            diverged = hp["learning_rate"] > 1e-2
            rows.append({"run_id": f"g{i}", "stage": "stage1", "dataset": name,
                         "status": "diverged" if diverged else "ok",
                         **{f"hp_{k}": v for k, v in hp.items()},
                         "val_loss": None if diverged else abs(math.log10(hp["learning_rate"]) + size - 9.5),
                         "mf_log10_tokens": size, "mf_token_entropy": 7.0 + size / 10})
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "mf.json").write_text('{"log10_tokens": 6.1, "token_entropy": 7.6}')
    code = cli.main(["recommend", "--metafeatures", str(tmp_path / "mf.json"), "--history", str(tmp_path / "runs.csv"),
                     "--space", str(ROOT / "config" / "config.yaml"), "--n", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Nearest datasets" in out and out.index("medium") < out.index("small")
    assert "1. learning_rate=" in out and "2. learning_rate=" in out and "3. " not in out


def test_recommend_cli_reports_bad_input(tmp_path, capsys):
    (tmp_path / "mf.json").write_text("{}")
    (tmp_path / "runs.csv").write_text("dataset,status,val_loss\n")
    code = cli.main(["recommend", "--metafeatures", str(tmp_path / "mf.json"), "--history", str(tmp_path / "runs.csv"),
                     "--space", str(ROOT / "config" / "config.yaml")])
    assert code == 2 and "missing columns" in capsys.readouterr().err
