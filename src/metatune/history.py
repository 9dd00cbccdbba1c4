"""Trial history from metrics.json files: the table the optimizer, the selection and the export read.

The rules downstream of the trials read collections, not the metrics files: one JSONL per dataset and stage (per
round in stage 2) with a line per trial. Each metrics.json is then the input of exactly one job, which matters
because every input edge costs Snakemake's DAG about a millisecond, and a sweep has tens of thousands of trials.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from metatune.contract import MetricsError, validate_metrics
from metatune.fidelity import furthest_rungs
from metatune.io import (
    DataError,
    atomic_write_jsonl,
    atomic_write_text,
    iter_jsonl,
    read_json,
)


def read_metrics(paths: Iterable[str | Path]) -> list[dict]:
    """Every metrics.json, validated; a file that breaks the contract is an error naming it."""
    out = []
    for p in paths:
        m = read_json(p)
        try:
            out.append(validate_metrics(m))
        except MetricsError as e:
            raise DataError(f"{p}: not a valid metrics.json: {e}") from None
    return out


class CollectedTrial(NamedTuple):
    path: str  # the trial's metrics.json; its curve.csv and adapter/ lie beside it
    metrics: dict


def write_collection(out: str | Path, metrics_paths: Iterable[str | Path]) -> int:
    """The trials' metrics, validated, as one JSONL line each; returns the number of trials."""
    paths = [str(p) for p in metrics_paths]
    return atomic_write_jsonl(out, ({"path": p, "metrics": m} for p, m in zip(paths, read_metrics(paths))))


def read_collections(paths: Iterable[str | Path]) -> list[CollectedTrial]:
    """Every trial of the collections, in order; a line that is not a collected trial is an error naming it."""
    out = []
    for path in paths:
        for number, record in enumerate(iter_jsonl(path), start=1):
            try:
                out.append(CollectedTrial(str(record["path"]), validate_metrics(record["metrics"])))
            except (KeyError, TypeError, MetricsError) as e:
                raise DataError(f"{path}: record {number}: not a collected trial ({type(e).__name__}: {e})") from None
    return out


def collected_metrics(paths: Iterable[str | Path]) -> list[dict]:
    return [trial.metrics for trial in read_collections(paths)]


def history_rows(metrics: list[dict], space: dict) -> list[dict]:
    """Optimizer rows: dataset, one column per hyperparameter, objective (val_loss, None unless ok), status.
    With rungs, one row per configuration: its furthest rung (fidelity.furthest_rungs)."""
    rows = []
    for m in furthest_rungs(metrics):
        row = {"dataset": m["dataset"], "run_id": m["run_id"], "stage": m["stage"], "status": m["status"],
               "objective": m["val_loss"] if m["status"] == "ok" else None}
        row.update({k: m["hp"].get(k) for k in space})
        rows.append(row)
    return rows


def write_history_csv(path: str | Path, rows: list[dict], space: dict) -> None:
    columns = ["dataset", "run_id", "stage", "status", "objective", *space]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else repr(row[k]) if isinstance(row[k], float) else row[k])
                         for k in columns})
    atomic_write_text(path, buf.getvalue())


def read_history_csv(path: str | Path, space: dict):
    import pandas as pd

    df = pd.read_csv(path, dtype={"dataset": str, "run_id": str, "stage": str, "status": str}, keep_default_na=False,
                     na_values={"objective": [""]})
    return restore_choices(df, space)


def restore_choices(df, space: dict, prefix: str = ""):
    """Categorical choices come back from CSV as text; map them to the choice objects they name (columns
    `prefix + name`: runs.csv calls them hp_<name>)."""
    from metatune.space import Space

    for p in Space.parse(space):
        if p.kind == "categorical":
            by_text = {str(c): c for c in p.choices}
            df[prefix + p.name] = df[prefix + p.name].map(lambda v, by_text=by_text: by_text.get(str(v), v))
    return df
