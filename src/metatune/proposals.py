"""Stage-2 proposals: rebuild the history from the files, ask the optimizer, write proposals.json."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from metatune import history, optimizer
from metatune.io import atomic_write_json


def write_proposals(out: str | Path, space: dict, history_csv: str | Path, earlier_collections: list[str],
                    metafeatures: dict[str, dict], target: str, round_: int, n: int, method: str, seed: int) -> dict:
    stage1 = history.read_history_csv(history_csv, space)
    earlier = pd.DataFrame(history.history_rows(history.collected_metrics(earlier_collections), space),
                           columns=stage1.columns)
    table = pd.concat([stage1, earlier], ignore_index=True) if len(earlier) else stage1
    # A different seed per round and dataset, so rounds do not repeat each other's random draws.
    result = optimizer.proposal(space, table, target, metafeatures, n, method=method, seed=seed * 1000 + round_)
    doc = {
        "dataset": target,
        "round": round_,
        "method": method,
        "n_history": len(table),
        "n_target_history": int((table["dataset"] == target).sum()),
        "fallback": result.fallback,  # why the method fell back on something simpler (empty: it did not)
        "configs": [{"id": f"r{round_}-{k}", "hp": hp} for k, hp in enumerate(result.configs)],
    }
    atomic_write_json(out, doc)
    return doc
