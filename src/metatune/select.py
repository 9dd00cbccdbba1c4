"""Pick the configurations to rerun, and summarize the reruns into the per-dataset winner."""

from __future__ import annotations

import math
import statistics

from metatune.fidelity import full_budget
from metatune.space import canonical_hp


def select_top(metrics: list[dict], top_k: int) -> dict:
    """The `top_k` best distinct configurations among ok trials (lowest val_loss), with the full ranking.
    Trials stopped at a rung before the full budget do not compete."""
    metrics = full_budget(metrics)
    ok = sorted((m for m in metrics if m["status"] == "ok"), key=lambda m: (m["val_loss"], m["run_id"]))
    seen, configs = set(), []
    for m in ok:
        key = canonical_hp(m["hp"])
        if key in seen:
            continue
        seen.add(key)
        if len(configs) < top_k:
            configs.append({"rank": len(configs) + 1, "hp": m["hp"], "source_run_id": m["run_id"],
                            "source_stage": m["stage"], "val_loss": m["val_loss"]})
    if len(configs) < top_k:
        raise ValueError(f"only {len(configs)} distinct ok configurations to rerun, rerun.top_k asks for {top_k}")
    excluded: dict[str, int] = {}
    for m in metrics:
        if m["status"] != "ok":
            excluded[m["status"]] = excluded.get(m["status"], 0) + 1
    return {
        "criterion": "lowest final val_loss among ok trials of stage 1 and stage 2; one entry per distinct configuration",
        "configs": configs,
        "ranking": [{"run_id": m["run_id"], "stage": m["stage"], "val_loss": m["val_loss"]} for m in ok],
        "excluded": excluded,
        "n_trials": len(metrics),
    }


def t_quantile_975(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def summarize_reruns(metrics: list[dict], selection: dict) -> list[dict]:
    """One row per rerun configuration: mean, standard deviation and 95% t-interval of val_loss over seeds.
    Diverged or failed seeds count against a configuration: its mean is over ok seeds, and `n_failed` says how
    many were not. The winner is the lowest mean among configurations whose every seed was ok."""
    rows = []
    for cfg in selection["configs"]:
        runs = [m for m in metrics if m["run_id"].startswith(f"top{cfg['rank']}-")]
        losses = [m["val_loss"] for m in runs if m["status"] == "ok"]
        n = len(losses)
        mean = statistics.fmean(losses) if losses else math.nan
        std = statistics.stdev(losses) if n > 1 else math.nan
        half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
        rows.append({"rank": cfg["rank"], "source_run_id": cfg["source_run_id"], "hp": canonical_hp(cfg["hp"]),
                     "n_seeds": len(runs), "n_failed": len(runs) - n, "mean_val_loss": mean, "std_val_loss": std,
                     "ci95_low": mean - half, "ci95_high": mean + half, "winner": False})
    complete = [r for r in rows if r["n_failed"] == 0 and r["n_seeds"] > 0]
    if complete:
        min(complete, key=lambda r: (r["mean_val_loss"], r["rank"]))["winner"] = True
    return rows
