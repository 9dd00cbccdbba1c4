"""Zero-shot recommendations: configurations for a dataset that has no trials yet, from the trials of other
datasets and the metafeatures of all (the `zero_shot` method of metatune.optimizer, with its reasons).

`metatune recommend --metafeatures M.json --history runs.csv [--space config.yaml] [--n 5]` prints them; the
workflow's `recommendations` target writes results/recommend/{dataset}.json for each dataset, leaving that
dataset's own trials out.
"""

from __future__ import annotations

import argparse
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

NEW = "new_dataset"  # the target's name when it has none


def recommend(space: dict, table: pd.DataFrame, metafeatures: dict, target: str, n: int, seed: int = 0) -> dict:
    """`n` ranked configurations for `target` from the other datasets' trials (its own are left out), with the
    nearest datasets and what each configuration is predicted to reach."""
    space = Space.parse(space)
    others = check_history(space, table[table["dataset"] != target])
    if others.empty:
        raise ValueError(f"history: no trials of datasets other than {target!r} to recommend from")
    result = plan(space, others, target, metafeatures, n, seed, zero_shot=True)
    model, picks = result.model, result.picks
    weights = model.weights[: len(model.sources)]
    nearest = [{"dataset": s.name, "distance": round(float(d), 4), "weight": round(float(w), 4)}
               for s, d, w in sorted(zip(model.sources, model.distances, weights), key=lambda t: -t[2])]
    recs = []
    for rank, pick in enumerate(picks, 1):
        quantile = float(norm.cdf(pick.mean))  # the predicted rank among a dataset's configurations
        # The same rank on the weighted datasets' own loss scales: a loss to expect, roughly.
        objective = sum(w * float(np.quantile(s.objective, quantile))
                        for s, w in zip(model.sources, weights) if len(s.objective)) / max(weights.sum(), 1e-12)
        recs.append({"rank": rank, "hp": pick.hp, "predicted_quantile": round(quantile, 4),
                     "predicted_objective": round(objective, 6), "fail_probability": round(pick.fail, 4)})
    return {"dataset": target, "method": "zero_shot", "n_history": len(others),
            "nearest_datasets": nearest, "recommendations": recs}


def write_recommendations(out: str | Path, space: dict, history_csv: str | Path, metafeature_paths: dict[str, str],
                          target: str, n: int, seed: int) -> dict:
    """The workflow's leave-one-out recommendation for `target`, as JSON."""
    table = history.read_history_csv(history_csv, space)
    metafeatures = {d: read_json(p) for d, p in metafeature_paths.items()}
    doc = recommend(space, table, metafeatures, target, n, seed)
    atomic_write_json(out, doc)
    return doc


def read_runs(path: str | Path, space: dict) -> tuple[pd.DataFrame, dict]:
    """The optimizer's history and every dataset's metafeatures from a runs.csv (hp_*, mf_* columns)."""
    runs = pd.read_csv(path, dtype={"dataset": str, "status": str})
    missing = [c for c in ("dataset", "status", "val_loss", *(f"hp_{k}" for k in space)) if c not in runs.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    runs = history.restore_choices(runs, space, prefix="hp_")
    table = pd.DataFrame({"dataset": runs["dataset"], "status": runs["status"],
                          "objective": runs["val_loss"].where(runs["status"].eq("ok")),
                          **{k: runs[f"hp_{k}"] for k in space}})
    mf_cols = [c for c in runs.columns if c.startswith("mf_")]
    first = runs.groupby("dataset", sort=False).first()
    metafeatures = {d: {c[3:]: row[c] for c in mf_cols} for d, row in first.iterrows()}
    return table, metafeatures


def format_text(doc: dict) -> str:
    lines = [f"Zero-shot recommendations for {doc['dataset']} from {doc['n_history']} trials of other datasets.",
             "Nearest datasets (metafeature distance, weight):"]
    lines += [f"  {d['dataset']}: {d['distance']:.3f}, {d['weight']:.3f}" for d in doc["nearest_datasets"][:5]]
    for r in doc["recommendations"]:
        hp = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["hp"].items())
        lines.append(f"{r['rank']}. {hp}")
        lines.append(f"   predicted: top {r['predicted_quantile']:.1%} of configurations, objective ~"
                     f"{r['predicted_objective']:.4g}, failure risk {r['fail_probability']:.0%}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        space = config.load(args.space)["space"]
        target_mf = read_json(args.metafeatures)
        columns = pd.read_csv(args.history, nrows=0).columns
        if "val_loss" in columns or any(c.startswith("hp_") for c in columns):  # a runs.csv
            table, metafeatures = read_runs(args.history, space)
        else:
            table = history.read_history_csv(args.history, space)
            metafeatures = {}
        # metafeatures.json files of the history's datasets, named by their folder (results/data/{dataset}/).
        metafeatures.update({Path(p).parent.name: read_json(p) for p in args.source_metafeatures})
        doc = recommend(space, table, {**metafeatures, args.dataset: target_mf}, args.dataset, args.n, args.seed)
    except KeyError as e:  # a history.csv without one of the space's columns
        print(f"metatune recommend: {args.history}: missing column {e}", file=sys.stderr)
        return 2
    except (config.ConfigError, DataError, ValueError, OSError) as e:
        print(f"metatune recommend: {e}", file=sys.stderr)
        return 2
    print(format_text(doc))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("recommend", help="zero-shot configurations for a new dataset from other datasets' trials")
    p.add_argument("--metafeatures", required=True, help="the new dataset's metafeatures.json")
    p.add_argument("--history", required=True, help="runs.csv, or a stage-1 history.csv (with --source-metafeatures)")
    p.add_argument("--space", default="config/config.yaml", help="the config whose space to search")
    p.add_argument("--n", type=int, default=5, help="how many configurations")
    p.add_argument("--dataset", default=NEW, help="the new dataset's name (its rows in the history are left out)")
    p.add_argument("--source-metafeatures", nargs="*", default=[], metavar="JSON",
                   help="results/data/{dataset}/metafeatures.json of the history's datasets (a history.csv has none)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
