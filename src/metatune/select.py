"""Pick the configurations to rerun, and summarize the reruns into the per-dataset winner and its verdict."""

from __future__ import annotations

import math

from metatune import verdict
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
                            "source_stage": m["stage"], "val_loss": m["val_loss"],
                            "token_budget": m.get("token_budget")})
    if len(configs) < top_k:
        raise ValueError(f"only {len(configs)} distinct ok configurations to rerun, rerun.top_k asks for {top_k}")
    excluded: dict[str, int] = {}
    for m in metrics:
        if m["status"] != "ok":
            excluded[m["status"]] = excluded.get(m["status"], 0) + 1
    return {
        "criterion": "lowest final val_loss among ok trials of stage 1 and stage 2; "
                     "one entry per distinct configuration",
        "configs": configs,
        "ranking": [{"run_id": m["run_id"], "stage": m["stage"], "val_loss": m["val_loss"]} for m in ok],
        "excluded": excluded,
        "n_trials": len(metrics),
    }


def candidates(metrics: list[dict], selection: dict) -> list[verdict.Candidate]:
    """Each selected configuration with its rerun seeds, matched by hyperparameters (a rerun trains exactly its
    configuration's hp) and keyed by the seed it trained with, the key that pairs configurations."""
    by_hp: dict[str, list[dict]] = {}
    for m in metrics:
        by_hp.setdefault(canonical_hp(m["hp"]), []).append(m)
    out = []
    for cfg in selection["configs"]:
        runs = by_hp.get(canonical_hp(cfg["hp"]), [])
        seeds = [m["seed"] for m in runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"top{cfg['rank']}: two reruns trained with the same seed ({sorted(seeds)})")
        out.append(verdict.Candidate(cfg["rank"], {m["seed"]: m["val_loss"] for m in runs if m["status"] == "ok"},
                                     len(runs)))
    return out


def summarize_reruns(metrics: list[dict], selection: dict) -> list[dict]:
    """One row per rerun configuration of a dataset (best.csv, docs/tables.md): its mean and 95% interval over
    seeds, the paired difference to the winner with its interval and the probability it is truly better, the
    dataset's verdict, and the winner's curse (its search score against its rerun mean)."""
    cands = candidates(metrics, selection)
    judged = verdict.judge(cands)
    rerun_budgets = {m.get("token_budget") for m in metrics}
    rows = []
    for cfg, cand in zip(selection["configs"], cands):
        own = verdict.t_interval(list(cand.losses.values()))
        comparison = judged.comparisons[cand.rank]
        diff = comparison.paired.interval if comparison.paired else None
        # Only at the search trial's budget is the rerun mean an unbiased re-measurement of its search score.
        same_budget = rerun_budgets == {cfg.get("token_budget")} and cfg.get("token_budget") is not None
        rows.append({
            "rank": cand.rank, "winner": cand.rank == judged.winner, "verdict": judged.verdict,
            "tied_with": " ".join(f"top{r}" for r in judged.tied_with), "verdict_reason": judged.reason,
            "comparison": comparison.outcome, "n_seeds": cand.n_seeds, "n_failed": cand.n_failed,
            "mean_val_loss": own.mean, "std_val_loss": own.std, "ci95_low": own.low, "ci95_high": own.high,
            "n_paired": diff.n if diff else None, "diff_vs_winner": diff.mean if diff else math.nan,
            "diff_ci95_low": diff.low if diff else math.nan, "diff_ci95_high": diff.high if diff else math.nan,
            "p_better_than_winner": comparison.paired.p_better if comparison.paired else math.nan,
            "search_stage": cfg["source_stage"], "search_val_loss": cfg["val_loss"],
            "optimism": own.mean - cfg["val_loss"] if same_budget and cand.losses else math.nan,
            "source_run_id": cfg["source_run_id"], "hp": cfg["hp"],
        })
    return rows
