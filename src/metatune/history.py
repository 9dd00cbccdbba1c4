"""Trial history from metrics.json files: the table the optimizer, the selection and the export read."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from metatune.contract import MetricsError, validate_metrics
from metatune.io import DataError, atomic_write_text, read_json


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


def history_rows(metrics: list[dict], space: dict) -> list[dict]:
    """Optimizer rows: dataset, one column per hyperparameter, objective (val_loss, None unless ok), status."""
    rows = []
    for m in metrics:
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
        writer.writerow({k: ("" if row[k] is None else repr(row[k]) if isinstance(row[k], float) else row[k]) for k in columns})
    atomic_write_text(path, buf.getvalue())


def read_history_csv(path: str | Path, space: dict):
    import pandas as pd

    df = pd.read_csv(path, dtype={"dataset": str, "run_id": str, "stage": str, "status": str}, keep_default_na=False,
                     na_values={"objective": [""]})
    for name, p in space.items():
        if p["type"] == "categorical":
            # Categorical choices come back from CSV as text; map them to the choice objects they name.
            by_text = {str(c): c for c in p["choices"]}
            df[name] = df[name].map(lambda v: by_text.get(str(v), v))
    return df
