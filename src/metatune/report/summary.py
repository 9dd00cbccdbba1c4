"""results/report/summary.md: the sweep's outcome in plain Markdown, readable without Snakemake or a browser.
Each dataset's winner with its 95% interval, and, where the `recommendations` target has run, the zero-shot
configuration the other datasets' trials recommend for it."""

from __future__ import annotations

import math

import pandas as pd

from metatune.report.data import datasets


def format_hp(hp: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hp.items()))


def status_counts(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def winner_rows(best: pd.DataFrame, names: list[str]) -> list[str]:
    rows = ["| dataset | mean val_loss | 95% interval | seeds | configuration | found by |", "|---|---|---|---|---|---|"]
    for name in names:
        winner = best[best["dataset"].eq(name) & best["winner"]]
        if winner.empty:
            rows.append(f"| {name} | no winner: every rerun configuration had a failed seed | | | | |")
            continue
        w = winner.iloc[0]
        interval = "n/a (one seed)" if math.isnan(w["ci95_low"]) else f"[{w['ci95_low']:.4f}, {w['ci95_high']:.4f}]"
        rows.append(f"| {name} | {w['mean_val_loss']:.4f} | {interval} | {w['n_seeds']} | {format_hp(w['hp'])} "
                    f"| {w['source_run_id']} (top{w['rank']}) |")
    return rows


def recommendation_rows(recommendations: dict[str, dict], names: list[str]) -> list[str]:
    """The zero-shot method's first choice per dataset (the leave-one-out file of the `recommendations` target)."""
    rows = ["| dataset | recommended configuration | expected rank (quantile) | failure risk | nearest dataset |",
            "|---|---|---|---|---|"]
    for name in names:
        doc = recommendations.get(name)
        if doc is None:
            rows.append(f"| {name} | not computed | | | |")
            continue
        first = doc["recommendations"][0]
        nearest = doc["nearest_datasets"][0]["dataset"] if doc["nearest_datasets"] else "none"
        rows.append(f"| {name} | {format_hp(first['hp'])} | {first['expected_quantile']:.2f} "
                    f"| {first['fail_probability']:.0%} | {nearest} |")
    return rows


def summary_markdown(runs: pd.DataFrame, best: pd.DataFrame, recommendations: dict[str, dict]) -> str:
    names = datasets(runs)
    lines = [
        "# metatune sweep summary", "",
        f"{len(runs)} trials over {len(names)} datasets ({status_counts(runs)}).", "",
        "## Winner per dataset", "",
        "The lowest mean validation loss over the rerun seeds among configurations whose every seed succeeded, "
        "with its 95% t-interval (`results/tables/best.csv`).", "",
        *winner_rows(best, names), "",
        "## Zero-shot recommendation per dataset", "",
    ]
    if recommendations:
        lines += ["What the zero-shot method recommends for each dataset from the other datasets' trials alone "
                  "(`results/recommend/{dataset}.json`), to hold against the winner above.", "",
                  *recommendation_rows(recommendations, names)]
    else:
        lines.append("Not computed: no `results/recommend/{dataset}.json` yet (the `recommendations` target writes them).")
    return "\n".join(lines) + "\n"
