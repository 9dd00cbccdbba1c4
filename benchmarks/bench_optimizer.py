"""Leave-one-dataset-out benchmark of the optimizer's methods on tabular benchmarks.

A tabular benchmark is a finite set of configurations per dataset with their outcomes. For each held-out
dataset and seed, every method gets the other datasets' full tables as history and proposes target trials one
at a time; a proposal is snapped to the nearest configuration of the target's table not evaluated yet (unit-cube
distance, as the optimizer measures it), and that configuration's outcome becomes the trial. Normalized regret
after k trials: (best found - best in the table) / (worst ok in the table - best in the table); 1 until a trial
finishes ok. Tables:

- simulated (always): 12 datasets with varied metafeatures, the simulated trainer (metatune.trainers.simulated)
  evaluated on a dense grid of the demo config's space;
- real (`--runs-csv runs.csv`): the trials of a runs.csv, one table per dataset (its distinct configurations,
  val_loss averaged over seeds), for real trainers' results.

Usage (from the repository root):
    PYTHONPATH=src python benchmarks/bench_optimizer.py [--runs-csv results/tables/runs.csv] [--seeds 5]
Prints the tables and writes benchmarks/out/regret_<table>.png.
"""

from __future__ import annotations

import os

# One thread per numerical library: the machines this runs on are shared, and threads fighting over two
# cores make small matrix operations many times slower.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from metatune import optimizer
from metatune.contract import TrialSpec
from metatune.space import Param, Space
from metatune.trainers.simulated import simulate

# Optuna's GP sampler is left out by default: about 3 s a proposal here, an hour for the whole protocol.
METHODS = ("random", "grid", "tpe", "transfer", "zero_shot")
BUDGETS = (1, 5, 10, 20)
N_TRIALS = max(BUDGETS)
# Levels of the dense grid, evenly spaced in each parameter's unit interval (log scale where it has one).
DENSE_LEVELS = {"learning_rate": 12, "lora_r": 3, "lora_alpha": 3, "lora_dropout": 2, "batch_size": 3,
                "warmup_ratio": 2, "weight_decay": 1}
OUT = Path(__file__).parent / "out"


@dataclass(frozen=True)
class Table:
    """One dataset of a tabular benchmark."""
    configs: pd.DataFrame  # one column per hyperparameter
    x: np.ndarray  # the configurations in the unit cube
    objective: np.ndarray  # NaN unless ok
    status: np.ndarray

    def history(self, name: str, rows: list[int] | None = None) -> pd.DataFrame:
        idx = range(len(self.status)) if rows is None else rows
        out = self.configs.iloc[list(idx)].copy()
        out.insert(0, "dataset", name)
        out["objective"] = self.objective[list(idx)]
        out["status"] = self.status[list(idx)]
        return out.reset_index(drop=True)


def make_table(space: dict, configs: list[dict], objective, status) -> Table:
    frame = pd.DataFrame(configs, columns=list(space))
    return Table(frame, Space.parse(space).unit_matrix(frame), np.asarray(objective, dtype=float), np.asarray(status))


# --- the simulated benchmark -------------------------------------------------------------------------------

def simulated_metafeatures(n: int, seed: int = 7) -> dict[str, dict]:
    """Datasets spread over realistic ranges: from 30k to 100M tokens, byte-like to word-like entropies,
    code and prose; some features drive the simulator, others are noise to the optimizer."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        log10_tokens = rng.uniform(4.5, 8.0)
        entropy = rng.uniform(3.0, 10.5)
        code = rng.uniform(0.0, 0.9)
        out[f"sim{i:02d}"] = {
            "log10_tokens": log10_tokens,
            "n_tokens": round(10 ** log10_tokens),
            "token_entropy": entropy,
            "compression_ratio": float(np.clip(0.05 + 0.04 * entropy - 0.1 * code + rng.normal(0, 0.03), 0.1, 0.7)),
            "code_line_share": code,
            "non_ascii_share": rng.uniform(0.0, 0.2),
            "doc_len_mean": float(np.exp(rng.uniform(4, 8))),
            "duplicate_rate": rng.uniform(0.0, 0.1),
            "is_instruction": float(rng.random() < 0.3),
        }
    return out


def dense_grid(space: dict) -> list[dict]:
    axes = []
    for name, p in space.items():
        if p["type"] == "categorical":
            axes.append(list(p["choices"]))
        else:
            k = DENSE_LEVELS.get(name, 3)
            axes.append([Param.parse(name, p).from_unit([u]) for u in (np.linspace(0, 1, k) if k > 1 else [0.0])])
    configs = [Space.parse(space).coerce(dict(zip(space, values))) for values in itertools.product(*axes)]
    return list({json_key(c): c for c in configs}.values())


def json_key(hp: dict) -> str:
    return repr(sorted(hp.items()))


def simulated_tables(space: dict, metafeatures: dict[str, dict]) -> dict[str, Table]:
    configs = dense_grid(space)
    tables = {}
    for name, mf in metafeatures.items():
        objective, status = [], []
        for hp in configs:
            spec = TrialSpec(run_id="bench", stage="stage1", dataset=name, seed=0, hp=hp, token_budget=200_000,
                             seq_len=128, train_path="", val_path="", metafeatures_path="", out_dir="",
                             trainer="simulated")
            outcome = simulate(spec, mf)
            objective.append(outcome.val_loss if outcome.status == "ok" else math.nan)
            status.append(outcome.status)
        tables[name] = make_table(space, configs, objective, status)
    return tables


# --- the real benchmark: a runs.csv ------------------------------------------------------------------------

def runs_csv_tables(path: str, space: dict) -> tuple[dict[str, Table], dict[str, dict]]:
    """One table per dataset: its distinct configurations, val_loss averaged over the ok runs of each."""
    runs = pd.read_csv(path)
    hp_cols = [f"hp_{k}" for k in space]
    mf_cols = [c for c in runs.columns if c.startswith("mf_")]
    tables, metafeatures = {}, {}
    for name, rows in runs.groupby("dataset", sort=True):
        rows = rows.assign(ok_loss=rows["val_loss"].where(rows["status"].eq("ok")))
        grouped = rows.groupby(hp_cols, sort=True, dropna=False)
        configs = [Space.parse(space).coerce(dict(zip(space, key))) for key in grouped.groups]
        objective = grouped["ok_loss"].mean().to_numpy()
        status = np.where(np.isfinite(objective), "ok", "failed")
        tables[name] = make_table(space, configs, objective, status)
        metafeatures[name] = {c[3:]: float(rows[c].iloc[0]) for c in mf_cols}
    return tables, metafeatures


# --- the protocol ------------------------------------------------------------------------------------------

def run_one(space: dict, tables: dict[str, Table], metafeatures: dict, target: str, method: str, seed: int,
            n_trials: int) -> list[int]:
    """The rows of the target's table a method evaluates, in order."""
    table = tables[target]
    sources = pd.concat([t.history(n) for n, t in tables.items() if n != target], ignore_index=True)
    done: list[int] = []
    for step in range(min(n_trials, len(table.status))):
        history = pd.concat([sources, table.history(target, done)], ignore_index=True)
        hp = optimizer.propose(space, history, target, metafeatures, 1, method=method, seed=seed * 1000 + step)[0]
        dist = ((table.x - Space.parse(space).unit_vector(hp)) ** 2).sum(1)
        dist[done] = np.inf
        done.append(int(np.argmin(dist)))
    return done


def regret_curve(table: Table, rows: list[int], n_trials: int) -> np.ndarray:
    ok = table.objective[np.isfinite(table.objective)]
    best, worst = ok.min(), ok.max()
    found = np.minimum.accumulate(np.where(np.isfinite(table.objective[rows]), table.objective[rows], np.inf))
    regret = np.where(np.isfinite(found), (found - best) / (worst - best), 1.0)
    return np.pad(regret, (0, n_trials - len(regret)), mode="edge")  # a table smaller than the budget


def evaluate(name: str, space: dict, tables: dict[str, Table], metafeatures: dict, seeds: list[int],
             methods: tuple[str, ...]) -> None:
    curves: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    zero_shot_wins = []
    timings = {}
    for method in methods:
        t0 = time.perf_counter()
        for target, seed in itertools.product(tables, seeds):
            rows = run_one(space, tables, metafeatures, target, method, seed, N_TRIALS)
            curves[method].append(regret_curve(tables[target], rows, N_TRIALS))
            if method == "zero_shot":
                table = tables[target]
                first = table.objective[rows[0]]
                median = np.median(np.where(np.isfinite(table.objective), table.objective, np.inf))
                zero_shot_wins.append(bool(np.isfinite(first) and first < median))
        timings[method] = time.perf_counter() - t0
        print(f"{name}: {method} done in {timings[method]:.0f} s", flush=True)
    report(name, curves, timings, zero_shot_wins, len(tables), len(seeds))
    plot(name, curves)


def report(name: str, curves: dict, timings: dict, wins: list[bool], n_datasets: int, n_seeds: int) -> None:
    methods = list(curves)
    stack = np.stack([np.stack(curves[m]) for m in methods])  # (methods, tasks, trials)
    at = [b - 1 for b in BUDGETS]
    ranks = pd.DataFrame(stack[:, :, at].reshape(len(methods), -1)).rank(axis=0).to_numpy()
    ranks = ranks.reshape(len(methods), -1, len(BUDGETS)).mean(1)
    table = pd.DataFrame(
        {**{f"regret@{b}": stack[:, :, b - 1].mean(1) for b in BUDGETS},
         **{f"rank@{b}": ranks[:, i] for i, b in enumerate(BUDGETS)},
         "mean rank": ranks.mean(1), "seconds": [timings[m] for m in methods]},
        index=methods)
    print(f"\n== {name}: {n_datasets} held-out datasets x {n_seeds} seeds, normalized regret (lower is better) ==")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    if wins:
        print(f"zero_shot's first proposal beats the target's median grid configuration: "
              f"{np.mean(wins):.0%} of {len(wins)} (dataset, seed) pairs")
    if {"transfer", "tpe", "random"} <= set(methods):
        r10 = table["regret@10"]
        print(f"transfer@10 / tpe@10 = {r10['transfer'] / r10['tpe']:.3f}, "
              f"transfer@10 / random@10 = {r10['transfer'] / r10['random']:.3f} (target: <= 0.5)")


def plot(name: str, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    trials = np.arange(1, N_TRIALS + 1)
    for method, c in curves.items():
        ax.plot(trials, np.maximum(np.mean(c, 0), 1e-4), label=method)
    ax.set(yscale="log", xlabel="target trials", ylabel="mean normalized regret", title=f"{name} benchmark")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / f"regret_{name}.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml", help="the config whose space is searched")
    parser.add_argument("--runs-csv", help="also benchmark on the trials of this runs.csv")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--datasets", type=int, default=12, help="simulated datasets")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (gp is slow)")
    args = parser.parse_args()
    with open(args.config, encoding="utf-8") as f:
        space = yaml.safe_load(f)["space"]
    methods = tuple(args.methods.split(","))
    seeds = list(range(args.seeds))
    metafeatures = simulated_metafeatures(args.datasets)
    evaluate("simulated", space, simulated_tables(space, metafeatures), metafeatures, seeds, methods)
    if args.runs_csv:
        tables, mf = runs_csv_tables(args.runs_csv, space)
        evaluate("real", space, tables, mf, seeds, methods)


if __name__ == "__main__":
    main()
