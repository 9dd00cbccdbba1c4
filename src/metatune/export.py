"""runs.csv and best.csv: tidy tables, one row per trial (or per rerun configuration), byte-stable.

Rows come in a fixed order (stage, dataset in config order, run id), floats are written as Python's shortest
round-trip repr, and nothing time- or machine-dependent is added, so running the export again with nothing
changed gives the same bytes."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

from metatune.contract import METRIC_FIELDS
from metatune.io import atomic_write_text

STAGE_ORDER = {"stage1": 0, "stage2": 1, "rerun": 2}


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


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


def runs_table(metrics: list[dict], space: dict, metafeatures: dict[str, dict], dataset_order: list[str]) -> tuple[list[str], list[dict]]:
    mf_names = sorted({k for mf in metafeatures.values() for k in mf})
    columns = ["run_id", "stage", "dataset", "seed", "status", *(f"hp_{k}" for k in space), *METRIC_FIELDS,
               "token_budget", "seq_len", "device", "trainer", "error", *(f"mf_{k}" for k in mf_names)]
    position = {name: i for i, name in enumerate(dataset_order)}
    ordered = sorted(metrics, key=lambda m: (STAGE_ORDER[m["stage"]], position[m["dataset"]], natural_key(m["run_id"])))
    rows = []
    for m in ordered:
        row = {k: m.get(k) for k in ("run_id", "stage", "dataset", "seed", "status", *METRIC_FIELDS,
                                     "token_budget", "seq_len", "device", "trainer", "error")}
        row.update({f"hp_{k}": m["hp"].get(k) for k in space})
        row.update({f"mf_{k}": v for k, v in metafeatures[m["dataset"]].items()})
        rows.append(row)
    return columns, rows


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


def datasets_table(datasets: list[str], meta_paths: list[str], metafeature_paths: list[str]) -> tuple[list[str], list[dict]]:
    """nanogpt_datasets.csv: one row per dataset with its token counts, paths and metafeatures."""
    from metatune.io import read_json

    rows = []
    for name, meta_path, mf_path in zip(datasets, meta_paths, metafeature_paths):
        meta, mf = read_json(meta_path), read_json(mf_path)
        folder = str(Path(meta_path).parent)
        row = {"dataset": name, "tokenizer": meta["tokenizer"], "vocab_size": meta["vocab_size"], "dtype": meta["dtype"],
               "train_tokens": meta["splits"]["train"]["n_tokens"], "val_tokens": meta["splits"]["val"]["n_tokens"],
               "train_bin": f"{folder}/train.bin", "val_bin": f"{folder}/val.bin"}
        row.update({f"mf_{k}": v for k, v in mf.items()})
        rows.append(row)
    columns = list(rows[0]) if rows else ["dataset"]
    return columns, rows
