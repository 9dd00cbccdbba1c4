"""runs.csv and best.csv: tidy tables, one row per trial (or per rerun configuration), byte-stable.

Rows come in a fixed order (stage, dataset in config order, run id), floats are written as Python's shortest
round-trip repr, and the export adds nothing time- or machine-dependent (a trial's times are its own, from its
metrics.json), so running the export again with nothing changed gives the same bytes."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

from metatune.contract import METRIC_FIELDS, trial_id
from metatune.io import atomic_write_text

STAGE_ORDER = {"stage1": 0, "stage2": 1, "rerun": 2}


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    # The csv module leaves a lone carriage return (a progress bar's, in an error message) unquoted, and readers
    # take it for the end of the row: line breaks become newlines, which it quotes.
    return str(v).replace("\r\n", "\n").replace("\r", "\n")


def natural_key(run_id: str) -> list:
    """r2-10 after r2-9; top1-seed10 after top1-seed9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", run_id)]


def write_csv(path: str | Path, columns: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    atomic_write_text(path, buf.getvalue())


# runs.csv's columns (docs/tables.md documents each; a test holds the two together) and their pandas dtypes, so
# every sweep reads back alike whatever its statuses: an all-empty `error` column is text, an all-empty `round`
# is a nullable integer. hp_<name> (the space's order) and mf_<name> (name order) are added per sweep.
RUNS_LEADING = {"trial_id": "str", "run_id": "str", "stage": "str", "dataset": "str", "round": "Int64",
                "rank": "Int64", "seed_index": "Int64", "seed": "Int64", "source_trial_id": "str", "status": "str"}
RUNS_TRAILING = {"val_loss": "float64", "best_val_loss": "float64", "train_loss": "float64", "tokens_seen": "Int64",
                 "wall_s": "float64", "gpu_hours": "float64", "peak_mem_mb": "float64", "token_budget": "Int64",
                 "seq_len": "Int64", "rung": "Int64", "tokens_trained": "Int64", "device": "str", "trainer": "str",
                 "started_at": "str", "finished_at": "str", "error": "str"}
assert tuple(k for k in RUNS_TRAILING if k in METRIC_FIELDS) == METRIC_FIELDS


def runs_columns(space: dict, metafeature_names: list[str]) -> list[str]:
    return [*RUNS_LEADING, *(f"hp_{k}" for k in space), *RUNS_TRAILING, *(f"mf_{k}" for k in sorted(metafeature_names))]


def runs_table(metrics: list[dict], space: dict, metafeatures: dict[str, dict],
               dataset_order: list[str]) -> tuple[list[str], list[dict]]:
    columns = runs_columns(space, sorted({k for mf in metafeatures.values() for k in mf}))
    position = {name: i for i, name in enumerate(dataset_order)}
    ordered = sorted(metrics, key=lambda m: (STAGE_ORDER[m["stage"]], position[m["dataset"]], natural_key(m["run_id"])))
    rows = []
    for m in ordered:
        # .get: metrics.json files older than the placement and time keys leave those cells empty
        row = {k: m.get(k) for k in (*RUNS_LEADING, *RUNS_TRAILING)}
        row["trial_id"] = trial_id(m["dataset"], m["stage"], m["run_id"])
        row["tokens_trained"] = m.get("tokens_trained", m["tokens_seen"])  # older metrics.json: no rungs
        row.update({f"hp_{k}": m["hp"].get(k) for k in space})
        row.update({f"mf_{k}": v for k, v in metafeatures[m["dataset"]].items()})
        rows.append(row)
    return columns, rows


def read_runs(path: str | Path):
    """runs.csv as a DataFrame with the documented dtypes (ids and names stay text even where one looks like a
    number; empty cells are NaN or <NA>, never a change of type)."""
    import pandas as pd

    header = pd.read_csv(path, nrows=0).columns
    dtypes = {**RUNS_LEADING, **RUNS_TRAILING, **{c: "float64" for c in header if c.startswith("mf_")}}
    dtypes = {c: t for c, t in dtypes.items() if c in header}
    # Only an empty cell is missing: an error message or a choice that reads "None" or "NA" is text.
    missing = {c: [""] if dtypes.get(c, "str") == "str" else ["", "nan"] for c in header}
    return pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=missing)


# best.csv: one row per rerun configuration (docs/tables.md, "best.csv"); then one hp_<name> column per
# hyperparameter of the space, as in runs.csv.
BEST_COLUMNS = ["dataset", "rank", "winner", "verdict", "tied_with", "verdict_reason", "comparison", "n_seeds",
                "n_failed", "mean_val_loss", "std_val_loss", "ci95_low", "ci95_high", "n_paired", "diff_vs_winner",
                "diff_ci95_low", "diff_ci95_high", "p_better_than_winner", "search_stage", "search_val_loss",
                "optimism", "source_run_id"]


def best_table(rows: list[dict], space: dict) -> tuple[list[str], list[dict]]:
    """best.csv's columns and rows from select.summarize_reruns' rows (each with its dataset): the configuration
    as hp_* columns, and a number that is not there (NaN) as an empty cell, like any missing value."""
    columns = [*BEST_COLUMNS, *(f"hp_{k}" for k in space)]

    def cell(v):
        return None if isinstance(v, float) and math.isnan(v) else v

    return columns, [{**{k: cell(v) for k, v in r.items() if k != "hp"}, **{f"hp_{k}": r["hp"].get(k) for k in space}}
                     for r in rows]


def datasets_table(datasets: list[str], meta_paths: list[str],
                   metafeature_paths: list[str]) -> tuple[list[str], list[dict]]:
    """nanogpt_datasets.csv: one row per dataset with its token counts, paths and metafeatures."""
    from metatune.io import read_json

    rows = []
    for name, meta_path, mf_path in zip(datasets, meta_paths, metafeature_paths):
        meta, mf = read_json(meta_path), read_json(mf_path)
        folder = str(Path(meta_path).parent)
        row = {"dataset": name, "tokenizer": meta["tokenizer"], "vocab_size": meta["vocab_size"],
               "dtype": meta["dtype"], "train_tokens": meta["splits"]["train"]["n_tokens"],
               "val_tokens": meta["splits"]["val"]["n_tokens"],
               "train_bin": f"{folder}/train.bin", "val_bin": f"{folder}/val.bin"}
        row.update({f"mf_{k}": v for k, v in mf.items()})
        rows.append(row)
    columns = list(rows[0]) if rows else ["dataset"]
    return columns, rows
