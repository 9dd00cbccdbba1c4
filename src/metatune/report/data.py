"""The numbers behind the report: pure functions from runs.csv, best.csv, the rerun curves and the optional
MBPP table to tidy pandas frames. No plotting here."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from metatune.history import read_collections
from metatune.io import DataError

# The stages that explore the space; reruns only repeat their best configurations with new seeds.
SEARCH_STAGES = ("stage1", "stage2")
# What the transfer plot explains with metafeatures, where the space has them.
TRANSFER_TARGETS = ("learning_rate", "lora_r")
MBPP_COLUMNS = ("dataset", "adapter_pass@1", "baseline_pass@1", "diff", "ci95_low", "ci95_high", "verdict")


BEST_TEXT = ("dataset", "source_run_id", "winner", "verdict", "tied_with", "verdict_reason", "comparison",
             "search_stage")


def read_best(path: str | Path) -> pd.DataFrame:
    """best.csv (docs/tables.md) with `winner` as a bool, empty text as "", and `hp`: each row's configuration as
    a dict of Python values, rebuilt from its hp_* columns (a parameter the configuration lacks is empty there)."""
    best = pd.read_csv(path, dtype=dict.fromkeys(BEST_TEXT, str))
    best[list(BEST_TEXT)] = best[list(BEST_TEXT)].fillna("")
    best["winner"] = best["winner"].eq("True")
    hp_columns = [c for c in best.columns if c.startswith("hp_")]
    best["hp"] = [{c.removeprefix("hp_"): _python(v) for c, v in zip(hp_columns, row) if not pd.isna(v)}
                  for row in best[hp_columns].itertuples(index=False)]
    return best


def _python(value):
    """numpy's scalars as the Python int, float or str they hold (JSON and the optimizer expect those)."""
    return value.item() if hasattr(value, "item") else value


def datasets(runs: pd.DataFrame) -> list[str]:
    """Datasets in config order (runs.csv keeps it within each stage)."""
    return list(dict.fromkeys(runs["dataset"]))


def ok_loss(frame: pd.DataFrame) -> pd.Series:
    """val_loss of ok trials, NaN for the rest: a diverged trial's last loss is no result to rank."""
    return frame["val_loss"].where(frame["status"].eq("ok"))


def best_so_far(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, its search trials in sweep order (stage 1, then stage 2 round by round) with the best ok loss
    so far. A failed trial still counts as a trial spent."""
    frames = []
    for dataset, g in runs[runs["stage"].isin(SEARCH_STAGES)].groupby("dataset", sort=False):
        loss = ok_loss(g)
        frames.append(pd.DataFrame({"dataset": dataset, "stage": g["stage"].to_numpy(), "trial": range(1, len(g) + 1),
                                    "val_loss": loss.to_numpy(), "best": loss.cummin().ffill().to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def stage_gain(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, the best ok loss of stage 1 (the grid) and of stage 2 (the optimizer's proposals)."""
    ok = runs[runs["status"].eq("ok") & runs["stage"].isin(SEARCH_STAGES)]
    table = (ok.groupby(["dataset", "stage"], sort=False)["val_loss"].min().unstack()
             .reindex(columns=list(SEARCH_STAGES)))
    table = table.reindex(datasets(runs)).dropna()
    return pd.DataFrame({"dataset": table.index, "stage1_best": table["stage1"].to_numpy(),
                         "stage2_best": table["stage2"].to_numpy()})


def pareto_front(points: pd.DataFrame, cost: str, loss: str = "val_loss") -> pd.DataFrame:
    """The rows no other row beats on both `cost` and `loss` (lower is better for both), by increasing cost."""
    ordered = points.dropna(subset=[cost, loss]).sort_values([cost, loss], kind="stable")
    return ordered[ordered[loss] < ordered[loss].cummin().shift(fill_value=math.inf)]


def sweep_spend(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, its search trials in sweep order with the tokens trained so far and the best full-budget ok
    loss so far. A trial resumed at a rung adds only what it trained beyond its checkpoint (tokens_trained
    counts the configuration's earlier rungs too); a trial stopped at a rung adds its tokens but no loss."""
    frames = []
    search = runs[runs["stage"].isin(SEARCH_STAGES)]
    last_rung = search["rung"].max() if "rung" in search and search["rung"].notna().any() else None
    for dataset, g in search.groupby("dataset", sort=False):
        hp_columns = [c for c in g.columns if c.startswith("hp_")]
        config = g[["stage", *hp_columns]].astype(str).agg("|".join, axis=1)
        trained = g["tokens_trained"].fillna(g["tokens_seen"])
        before = trained.groupby(config).cummax().groupby(config).shift(fill_value=0)
        full = g["rung"].isna() | g["rung"].eq(last_rung) if "rung" in g else pd.Series(True, index=g.index)
        loss = ok_loss(g).where(full)
        frames.append(pd.DataFrame({"dataset": dataset, "tokens": (trained - before).clip(lower=0).cumsum().to_numpy(),
                                    "best": loss.cummin().to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def rerun_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Rerun trials (their `rank` column names the configuration they repeat)."""
    return runs[runs["stage"].eq("rerun")].copy()


def rerun_curves(collections: Iterable[str | Path], best: pd.DataFrame) -> pd.DataFrame:
    """The learning curve of every rerun trial of the collections, read from the curve.csv its trial wrote
    beside metrics.json (not a declared output: each declared file costs a sweep's DAG time), marked with
    whether its configuration won its dataset."""
    winners = {(row.dataset, row.rank) for row in best.itertuples() if row.winner}
    frames = []
    for path, m in read_collections(collections):
        curve_path = Path(path).with_name("curve.csv")
        if not curve_path.is_file():
            raise DataError(f"{curve_path}: missing (every trial writes it before its metrics.json)")
        curve = pd.read_csv(curve_path)
        if m.get("rank") is None or m.get("seed_index") is None:
            raise DataError(f"{path}: rerun trial {m['run_id']!r} records no rank and seed_index (rerun it)")
        rank = m["rank"]
        frames.append(curve.assign(dataset=m["dataset"], rank=rank, seed=m["seed_index"], status=m["status"],
                                   winner=(m["dataset"], rank) in winners))
    return pd.concat(frames, ignore_index=True)


def transfer_table(runs: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: its metafeatures (mf_*) and its winner's hyperparameters (hp_*)."""
    mf_columns = [c for c in runs.columns if c.startswith("mf_")]
    metafeatures = runs.groupby("dataset", sort=False)[mf_columns].first()
    rows = [{"dataset": w.dataset, **{f"hp_{k}": v for k, v in w.hp.items()}, **metafeatures.loc[w.dataset].to_dict()}
            for w in best[best["winner"]].itertuples()]
    return pd.DataFrame(rows)


def informative_metafeatures(table: pd.DataFrame, targets: list[str], top: int) -> list[str]:
    """The `top` metafeature columns that vary across datasets, the most rank-correlated with any target first
    (ties, and targets every winner shares, fall back to name order)."""
    varying = [c for c in table.columns if c.startswith("mf_") and table[c].nunique() > 1]

    def strength(column: str) -> float:
        cors = [table[column].corr(table[t], method="spearman") for t in targets if table[t].nunique() > 1]
        return max((abs(c) for c in cors if not math.isnan(c)), default=0.0)

    return sorted(varying, key=lambda c: (-strength(c), c))[:top]


def read_mbpp_comparison(path: str | Path) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={"dataset": str})
    missing = [c for c in MBPP_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (expected {list(MBPP_COLUMNS)})")
    return table
