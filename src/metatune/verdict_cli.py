"""`metatune verdicts [BEST_CSV]`: each dataset's winner and whether it is settled, in words, from best.csv.
The workflow prints the same text when a run that has best.csv ends."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

DEFAULT_BEST = "results/tables/best.csv"


def verdicts_text(best) -> str:
    """One block per dataset: its verdict in words, the winner's mean and interval, each other configuration's
    paired difference to it (`best` as metatune.report.data.read_best returns it)."""
    from metatune.report.summary import format_hp, interval

    lines = []
    for dataset, rows in best.groupby("dataset", sort=False):
        lines.append(f"{dataset}: {rows['verdict_reason'].iloc[0]}")
        for r in rows.sort_values("winner", ascending=False, kind="stable").itertuples():
            if r.winner:
                lines.append(f"  winner top{r.rank} ({r.source_run_id}): mean val_loss {r.mean_val_loss:.4f} "
                             f"{interval(r.ci95_low, r.ci95_high, r.n_seeds)}; {format_hp(r.hp)}")
            elif not math.isnan(r.diff_vs_winner):
                p = r.p_better_than_winner
                p = "" if math.isnan(p) else f", P(better than winner) {p:.3f}"
                lines.append(f"  top{r.rank}: {r.diff_vs_winner:+.4f} against the winner "
                             f"{interval(r.diff_ci95_low, r.diff_ci95_high, int(r.n_paired))}{p}: {r.comparison}")
            else:
                lines.append(f"  top{r.rank}: {r.comparison}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from metatune.report.data import read_best

    path = Path(args.best)
    if not path.is_file():
        print(f"verdicts: {path}: no such file (a sweep writes it when its reruns are done)", file=sys.stderr)
        return 2
    print(verdicts_text(read_best(path)))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("verdicts", help="say whether each dataset's winner is settled or tied, from best.csv")
    p.add_argument("best", nargs="?", default=DEFAULT_BEST, help=f"best.csv (default {DEFAULT_BEST})")
    p.set_defaults(func=run)


def print_after_run(best: str | Path = DEFAULT_BEST) -> None:
    """The workflow's onsuccess handler: the verdicts, when the run has produced best.csv."""
    from metatune.report.data import read_best

    if not Path(best).is_file():
        return
    try:
        text = verdicts_text(read_best(best))
    except (KeyError, ValueError) as e:  # a best.csv of an older metatune: the run itself went fine
        print(f"\nVerdicts: {best} has no verdicts ({type(e).__name__}: {e}); rebuild it with "
              "`snakemake --forcerun summarize_reruns`")
        return
    print(f"\nVerdicts ({best}; `metatune verdicts` prints them again):\n{text}")
