"""Zero-shot recommendations: configurations for a dataset from the trials of other datasets and the metafeatures
of all (the `zero_shot` method of metatune.optimizer, with its reasons).

One function, `recommend_from_files`, serves both `metatune recommend` and the workflow's `recommendations`
target (results/recommend/{dataset}.json): the same files give the same document. The target's own trials are
left out unless asked for (`--include-own`): those of the dataset named by `--dataset`, or by the folder of
its metafeatures file (results/data/{dataset}/metafeatures.json), and those of any dataset whose metafeatures
equal the target's (its own trials under another name).

What is predicted, and in which order: each configuration's rank among a dataset's configurations (a
quantile: 0.1 is better than 90% of them), and its failure risk; they are ranked by the expected quantile
counting a failure as the worst outcome. Losses do not transfer across datasets, so no val_loss is predicted
for the target; `nearest_datasets_val_loss` is the loss at that quantile on the nearest datasets' own scales.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from metatune import config, history
from metatune.io import DataError, atomic_write_json, read_json
from metatune.optimizer.common import check_history
from metatune.optimizer.transfer import plan
from metatune.space import Space

NEW = "new_dataset"  # the target's name when nothing names it


def own_datasets(table: pd.DataFrame, metafeatures: dict, target: str) -> list[str]:
    """The datasets of the table that are the target: its name, or metafeatures equal to the target's."""
    mine = metafeatures.get(target)
    return sorted(d for d in table["dataset"].astype(str).unique()
                  if d == target or (mine and metafeatures.get(d) == mine))


def recommend(space, table: pd.DataFrame, metafeatures: dict, target: str, n: int, seed: int = 0,
              include_own: bool = False) -> dict:
    """`n` ranked configurations for `target`, with the nearest datasets and what each configuration is
    predicted to reach; the target's own trials are left out unless `include_own`."""
    space = Space.parse(space)
    names = table["dataset"].astype(str)
    if include_own:  # the target's trials as one more source, at metafeature distance 0
        own = f"{target} (own trials)"
        table = table.assign(dataset=names.replace({target: own}))
        metafeatures = {**metafeatures, own: metafeatures.get(target)}
        left_out = []
    else:
        left_out = own_datasets(table, metafeatures, target)
        table = table[~names.isin(left_out)]
    rows = check_history(space, table)
    if rows.empty:
        raise ValueError(f"history: no trials of datasets other than {target!r} to recommend from")
    result = plan(space, rows, target, metafeatures, n, seed, zero_shot=True)
    model = result.model
    weights = model.weights[: len(model.sources)]
    nearest = [{"dataset": s.name, "distance": round(float(d), 4), "weight": round(float(w), 4)}
               for s, d, w in sorted(zip(model.sources, model.distances, weights), key=lambda t: -t[2])]
    recs = []
    for pick in result.picks:
        quantile = float(norm.cdf(pick.mean))  # the predicted rank among a dataset's configurations
        # The same rank on the weighted datasets' own loss scales: what it reached there, not here.
        there = sum(w * float(np.quantile(s.objective, quantile))
                    for s, w in zip(model.sources, weights) if len(s.objective)) / max(weights.sum(), 1e-12)
        recs.append({"hp": pick.hp, "expected_quantile": round((1 - pick.fail) * quantile + pick.fail, 4),
                     "predicted_quantile": round(quantile, 4), "fail_probability": round(pick.fail, 4),
                     "nearest_datasets_val_loss": round(there, 6)})
    recs.sort(key=lambda r: r["expected_quantile"])  # stable: the optimizer's order breaks ties
    return {"dataset": target, "method": "zero_shot", "n_history": len(rows), "left_out": left_out,
            "fallback": result.notes, "nearest_datasets": nearest,
            "recommendations": [{"rank": k, **r} for k, r in enumerate(recs, 1)]}


def read_table(path: str | Path, space) -> tuple[pd.DataFrame, dict]:
    """The optimizer's history from a runs.csv (with every dataset's metafeatures, its mf_* columns) or a
    stage-1 history.csv (no metafeatures)."""
    columns = pd.read_csv(path, nrows=0).columns
    if "val_loss" in columns or any(c.startswith("hp_") for c in columns):
        return read_runs(path, space)
    try:
        return history.read_history_csv(path, space), {}
    except (KeyError, ValueError) as e:
        raise DataError(f"{path}: not a history.csv ({e})") from None


def recommend_from_files(space, history_path: str | Path, target_metafeatures: str | Path,
                         source_metafeatures: list[str | Path], n: int, seed: int = 0, target: str | None = None,
                         include_own: bool = False) -> dict:
    """`recommend` on files: the history (runs.csv or history.csv), the target's metafeatures.json and those of
    the history's datasets (results/data/{dataset}/metafeatures.json, named by their folder). The target is
    `target`, else the folder of its metafeatures file where the history has that dataset, else NEW."""
    space = Space.parse(space)
    table, metafeatures = read_table(history_path, space)
    metafeatures.update({Path(p).parent.name: read_json(p) for p in source_metafeatures})
    if target is None:
        folder = Path(target_metafeatures).parent.name
        target = folder if folder in set(table["dataset"].astype(str)) else NEW
    metafeatures[target] = read_json(target_metafeatures)
    return recommend(space, table, metafeatures, target, n, seed, include_own)


def write_recommendations(out: str | Path, space: dict, history_csv: str | Path, metafeature_paths: list[str],
                          target: str, n: int, seed: int) -> dict:
    """The workflow's leave-one-out recommendation for `target`, as JSON (what `metatune recommend --json`
    prints for the same files)."""
    own = next(p for p in metafeature_paths if Path(p).parent.name == target)
    doc = recommend_from_files(space, history_csv, own, metafeature_paths, n, seed, target=target)
    atomic_write_json(out, doc)
    return doc


def read_runs(path: str | Path, space) -> tuple[pd.DataFrame, dict]:
    """The optimizer's history and every dataset's metafeatures from a runs.csv (hp_*, mf_* columns)."""
    runs = pd.read_csv(path, dtype={"dataset": str, "status": str})
    missing = [c for c in ("dataset", "status", "val_loss", *(f"hp_{k}" for k in space.names)) if c not in runs.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    runs = history.restore_choices(runs, space, prefix="hp_")
    table = pd.DataFrame({"dataset": runs["dataset"], "status": runs["status"],
                          "objective": runs["val_loss"].where(runs["status"].eq("ok")),
                          **{k: runs[f"hp_{k}"] for k in space.names}})
    mf_cols = [c for c in runs.columns if c.startswith("mf_")]
    first = runs.groupby("dataset", sort=False).first()
    metafeatures = {d: {c[3:]: row[c] for c in mf_cols} for d, row in first.iterrows()}
    return table, metafeatures


def format_text(doc: dict) -> str:
    own = f"; left out its own trials ({', '.join(doc['left_out'])})" if doc["left_out"] else ""
    lines = [f"Zero-shot recommendations for {doc['dataset']} from {doc['n_history']} trials of other datasets{own}.",
             "Nearest datasets (metafeature distance, weight):"]
    lines += [f"  {d['dataset']}: {d['distance']:.3f}, {d['weight']:.3f}" for d in doc["nearest_datasets"][:5]]
    lines += [f"Note: {note}" for note in doc["fallback"]]
    lines.append("Ranked by expected rank among a dataset's configurations (a failure counting as the worst). "
                 "Losses do not transfer between datasets: the val_loss shown is what that rank reached on the "
                 "nearest datasets, not a prediction for this one.")
    for r in doc["recommendations"]:
        hp = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["hp"].items())
        lines.append(f"{r['rank']}. {hp}")
        lines.append(f"   expected: better than {1 - r['expected_quantile']:.0%} of configurations "
                     f"(if it runs: {1 - r['predicted_quantile']:.0%}; failure risk {r['fail_probability']:.0%}); "
                     f"nearest datasets' val_loss at that rank ~{r['nearest_datasets_val_loss']:.4g}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        space = config.load(args.space)["space"]
        doc = recommend_from_files(space, args.history, args.metafeatures, args.source_metafeatures, args.n,
                                   args.seed, target=args.dataset, include_own=args.include_own)
    except (config.ConfigError, DataError, ValueError, OSError) as e:
        print(f"metatune recommend: {e}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=1) if args.json else format_text(doc))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("recommend", help="zero-shot configurations for a dataset from other datasets' trials")
    p.add_argument("--metafeatures", required=True, help="the dataset's metafeatures.json")
    p.add_argument("--history", required=True, help="runs.csv, or a stage-1 history.csv (with --source-metafeatures)")
    p.add_argument("--space", default="config/config.yaml", help="the config whose space to search")
    p.add_argument("--n", type=int, default=5, help="how many configurations")
    p.add_argument("--dataset", default=None,
                   help="the dataset's name (default: the folder of --metafeatures if the history has it, "
                        f"else {NEW})")
    p.add_argument("--include-own", action="store_true",
                   help="learn from the dataset's own trials too (left out by default)")
    p.add_argument("--source-metafeatures", nargs="*", default=[], metavar="JSON",
                   help="results/data/{dataset}/metafeatures.json of the history's datasets (a history.csv has none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the recommendation document as JSON")
    p.set_defaults(func=run)
