"""results/report/summary.md: the sweep's outcome in plain Markdown, readable without Snakemake or a browser.
Each dataset's winner with its 95% interval and its verdict, the other configurations against it, the winner's
curse, and, where the `recommendations` target has run, the zero-shot configuration the other datasets' trials
recommend for it."""

from __future__ import annotations

import math

import pandas as pd

from metatune.report.data import datasets, stage_gain
from metatune.verdict import MIN_SEEDS


def format_hp(hp: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hp.items()))


def status_counts(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def interval(low: float, high: float, n: int) -> str:
    if math.isnan(low):
        return f"n/a ({int(n)} seed{'s' if n != 1 else ''}; {MIN_SEEDS} needed)"
    return f"[{low:.4f}, {high:.4f}]"


def winner_rows(best: pd.DataFrame, names: list[str]) -> list[str]:
    rows = ["| dataset | verdict | mean val_loss | 95% interval | seeds | configuration | found by |",
            "|---|---|---|---|---|---|---|"]
    for name in names:
        winner = best[best["dataset"].eq(name) & best["winner"]]
        if winner.empty:
            rows.append(f"| {name} | unsettled | no winner: every rerun configuration failed on some seed | | | | |")
            continue
        w = winner.iloc[0]
        rows.append(f"| {name} | {w['verdict']} | {w['mean_val_loss']:.4f} | "
                    f"{interval(w['ci95_low'], w['ci95_high'], w['n_seeds'])} | {w['n_seeds']} | {format_hp(w['hp'])} "
                    f"| {w['source_run_id']} (top{w['rank']}) |")
    return rows


def verdict_lines(best: pd.DataFrame, names: list[str]) -> list[str]:
    """Each dataset's verdict in words (best.csv's verdict_reason, the same on each of its rows)."""
    return [f"- **{name}**: {best.loc[best['dataset'].eq(name), 'verdict_reason'].iloc[0]}" for name in names
            if best["dataset"].eq(name).any()]


def comparison_rows(best: pd.DataFrame) -> list[str]:
    rows = ["| dataset | configuration | paired difference | 95% interval | P(better than winner) | comparison |",
            "|---|---|---|---|---|---|"]
    for r in best[~best["winner"]].itertuples():
        if math.isnan(r.diff_vs_winner):
            rows.append(f"| {r.dataset} | top{r.rank} | | | | {r.comparison} |")
            continue
        p = "n/a" if math.isnan(r.p_better_than_winner) else f"{r.p_better_than_winner:.3f}"
        rows.append(f"| {r.dataset} | top{r.rank} | {r.diff_vs_winner:+.4f} | "
                    f"{interval(r.diff_ci95_low, r.diff_ci95_high, int(r.n_paired))} | {p} | {r.comparison} |")
    return rows


def curse_lines(best: pd.DataFrame) -> list[str]:
    """Each winner's search score against its rerun mean, and the mean gap over the sweep's winners."""
    winners = best[best["winner"]]
    if winners.empty:
        return ["No winner to measure."]
    if winners["optimism"].isna().all():
        return ["Not measured: the reruns trained a different token budget from the search trials "
                "(rerun.token_budget_factor), so their mean does not re-measure the search score."]
    rows = ["| dataset | selected on (stage) | rerun mean | optimism |", "|---|---|---|---|"]
    rows += [f"| {w.dataset} | {w.search_val_loss:.4f} ({w.search_stage}) | {w.mean_val_loss:.4f} | "
             f"{w.optimism:+.4f} |" for w in winners.itertuples()]
    gaps = winners["optimism"].dropna()
    return rows + ["", f"Across the sweep: the winners' rerun means are {gaps.mean():+.4f} from the scores they were "
                   f"selected on, on average over {len(gaps)} datasets (worse on {int((gaps > 0).sum())}): positive "
                   "is the optimism of picking the best of many noisy runs."]


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


def stage2_lines(runs: pd.DataFrame, method: str) -> list[str]:
    """What stage 2 was (its method, rounds and trials) and whether its best beat the grid's, per dataset."""
    stage2 = runs[runs["stage"].eq("stage2")]
    gain = stage_gain(runs)
    better = int((gain["stage2_best"] < gain["stage1_best"]).sum())
    rows = ["| dataset | best of stage 1 (grid) | best of stage 2 | stage 2 - stage 1 |", "|---|---|---|---|"]
    rows += [f"| {g.dataset} | {g.stage1_best:.4f} | {g.stage2_best:.4f} | {g.stage2_best - g.stage1_best:+.4f} |"
             for g in gain.itertuples()]
    rounds = stage2["round"].nunique()
    intro = (f"Stage 2 used the `{method}` method: {len(stage2)} trials in {rounds} round{'s' * (rounds != 1)}. "
             f"Its best beat the stage-1 grid's best on {better} of {len(gain)} datasets "
             "(lowest validation loss among ok trials; lower is better).")
    return [intro, "", *rows]


def mbpp_lines(mbpp: pd.DataFrame) -> list[str]:
    """Each MBPP dataset's adapter against the base model (results/tables/mbpp_comparison.csv)."""
    rows = ["| dataset | adapter pass@1 | base pass@1 | paired difference | 95% interval | verdict |",
            "|---|---|---|---|---|---|"]
    rows += [f"| {r['dataset']} | {r['adapter_pass@1']:.3f} | {r['baseline_pass@1']:.3f} | {r['diff']:+.3f} | "
             f"[{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}] | {r['verdict']} |" for _, r in mbpp.iterrows()]
    return rows


def summary_markdown(runs: pd.DataFrame, best: pd.DataFrame, recommendations: dict[str, dict],
                     mbpp: pd.DataFrame | None = None, method: str | None = None) -> str:
    """The summary; with stage 2's `method` (as the workflow passes it), a section on stage 2 against the grid."""
    names = datasets(runs)
    lines = [
        "# metatune sweep summary", "",
        f"{len(runs)} trials over {len(names)} datasets ({status_counts(runs)}).", "",
        *(["## Stage 2 against the grid", "", *stage2_lines(runs, method), ""] if method is not None else []),
        "## Winner per dataset", "",
        "The lowest mean validation loss over the rerun seeds among configurations whose every seed succeeded, "
        "with its 95% t-interval (`results/tables/best.csv`). The verdict: `settled` when the paired interval of "
        "every other rerun configuration against it, seed by seed, lies above zero (or that configuration failed "
        "on some seed); `tied` when some cannot be told apart from it; `unsettled` when there is no interval to "
        "judge by (docs/verdicts.md).", "",
        *winner_rows(best, names), "",
        *verdict_lines(best, names), "",
        "## Against the winner", "",
        "Each other rerun configuration minus the winner, seed by seed: the mean paired difference of val_loss "
        "(positive: the winner is better), its 95% interval, and the posterior probability that it is truly "
        "better than the winner.", "",
        *comparison_rows(best), "",
        "## Winner's curse", "",
        "A winner was selected on one noisy run; its rerun mean at the same budget says how optimistic that was.", "",
        *curse_lines(best), "",
    ]
    if mbpp is not None:
        lines += ["## MBPP: the winning adapter against the base model", "",
                  "pass@1 on the same tasks, their difference task by task with a bootstrap 95% interval: `better` or "
                  "`worse` when the interval excludes zero, else `not separated`.", "",
                  *mbpp_lines(mbpp), ""]
    lines += ["## Zero-shot recommendation per dataset", ""]
    if recommendations:
        lines += ["What the zero-shot method recommends for each dataset from the other datasets' trials alone "
                  "(`results/recommend/{dataset}.json`), to hold against the winner above.", "",
                  *recommendation_rows(recommendations, names)]
    else:
        lines.append("Not computed: no `results/recommend/{dataset}.json` yet"
                     " (the `recommendations` target writes them).")
    return "\n".join(lines) + "\n"
