"""Are the verdicts right? The simulated showcase (config/simulated.yaml) swept with several seeds, each verdict
checked against the simulated trainer's noise-free loss, in one run.

For every sweep seed the showcase runs to best.csv (`snakemake results/tables/best.csv --config seed=S`); then,
per dataset, every rerun configuration is evaluated without noise at the rerun budget (the simulated trainer's
`noise: 0`), which gives the true best of the configurations the verdict compares. A verdict is right when:
- settled: the winner is the true best;
- tied: the true best is the winner or one of those it is tied with.
Beside the paired verdict (best.csv), the unpaired alternative on the same reruns: the winner settled when a
Welch 95% interval of the difference of means excludes zero for every other configuration. It also prints how
often the winner is the true best whatever the verdict (what printing the winner alone would claim), and the
winner's noise-free regret against the best configuration any search trial of its dataset tried.

Usage (from the repository root): PYTHONPATH=src python benchmarks/bench_verdicts.py [--seeds 5] [--first-seed 0]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from scipy import stats

from metatune import history
from metatune.contract import TrialSpec
from metatune.io import read_json
from metatune.report.data import read_best
from metatune.space import canonical_hp
from metatune.trainers.simulated import simulate

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "simulated.yaml"


def sweep(workdir: Path, seed: int) -> float:
    start = time.monotonic()
    cmd = ["snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "results/tables/best.csv",
           "--cores", "2", "--configfile", str(CONFIG), "--config", f"seed={seed}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.monotonic() - start


def true_loss(m: dict, mf: dict, simulated: dict, token_budget: int) -> float:
    """The trial's configuration without seed noise at `token_budget` (inf if it diverges)."""
    spec = TrialSpec(run_id="truth", stage="rerun", dataset=m["dataset"], seed=0, hp=m["hp"],
                     token_budget=token_budget, seq_len=m["seq_len"], train_path="", val_path="",
                     metafeatures_path="", out_dir="", trainer="simulated",
                     settings={"simulated": {**simulated, "noise": 0.0}})
    outcome = simulate(spec, mf)
    return outcome.val_loss if outcome.status == "ok" else math.inf


def welch_settled(best_rows, losses: dict[int, list[float]]) -> bool | None:
    """The unpaired verdict: None when it cannot be judged (no winner, one configuration, under 3 seeds)."""
    winner = best_rows[best_rows["winner"]]
    if winner.empty or len(best_rows) < 2:
        return None
    w = int(winner["rank"].iloc[0])
    if len(losses[w]) < 3:
        return None
    for r in best_rows["rank"]:
        if r == w or best_rows.loc[best_rows["rank"].eq(r), "n_failed"].iloc[0] > 0:
            continue
        if len(losses[r]) < 3:
            return None
        ci = stats.ttest_ind(losses[r], losses[w], equal_var=False).confidence_interval(0.95)
        if ci.low <= 0:
            return False
    return True


def judge_sweep(workdir: Path, cfg: dict) -> list[dict]:
    simulated = cfg.get("training", {}).get("simulated", {})
    best = read_best(workdir / "results/tables/best.csv")
    out = []
    for dataset, rows in best.groupby("dataset", sort=False):
        mf = read_json(workdir / f"results/data/{dataset}/metafeatures.json")
        selection = read_json(workdir / f"results/rerun/{dataset}/selection.json")
        reruns = history.collected_metrics([workdir / f"results/collected/rerun/{dataset}.jsonl"])
        budget = reruns[0]["token_budget"]
        rank_of = {canonical_hp(c["hp"]): c["rank"] for c in selection["configs"]}
        losses: dict[int, list[float]] = {r: [] for r in rank_of.values()}
        truth: dict[int, float] = {}
        for m in reruns:
            rank = rank_of[canonical_hp(m["hp"])]
            truth[rank] = true_loss(m, mf, simulated, budget)
            if m["status"] == "ok":
                losses[rank].append(m["val_loss"])
        search = history.collected_metrics(sorted((workdir / "results/collected").glob(f"stage1/{dataset}.jsonl"))
                                           + sorted((workdir / "results/collected").glob(f"stage2/{dataset}/*.jsonl")))
        search_best = min(true_loss(m, mf, simulated, budget) for m in search)
        true_best = min(truth, key=truth.get)
        winner = rows[rows["winner"]]
        w = int(winner["rank"].iloc[0]) if not winner.empty else None
        tied = [int(t.removeprefix("top")) for t in rows["tied_with"].iloc[0].split()]
        out.append({"dataset": dataset, "verdict": rows["verdict"].iloc[0], "winner": w, "true_best": true_best,
                    "right": w == true_best or (rows["verdict"].iloc[0] == "tied" and true_best in tied),
                    "welch_settled": welch_settled(rows, losses),
                    "regret": (truth[w] - search_best) if w is not None else math.nan})
    return out


def share(hits: int, n: int) -> str:
    return f"{hits}/{n} ({hits / n:.0%})" if n else "0/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="how many sweep seeds (config `seed`)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first of them")
    args = parser.parse_args()
    cfg = yaml.safe_load(CONFIG.read_text())
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_verdicts_") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            workdir = Path(tmp) / f"seed{seed}"
            wall = sweep(workdir, seed)
            judged = judge_sweep(workdir, cfg)
            results += [{"seed": seed, **j} for j in judged]
            print(f"seed {seed}: {wall:.0f} s; " + "; ".join(
                f"{j['dataset']} {j['verdict']}{'' if j['right'] else ' (WRONG)'}" for j in judged), flush=True)
    n = len(results)
    settled = [r for r in results if r["verdict"] == "settled"]
    tied = [r for r in results if r["verdict"] == "tied"]
    welch = [r for r in results if r["welch_settled"]]
    print(f"\n{args.seeds} sweeps of {CONFIG.name} ({cfg['rerun']}), {n} dataset verdicts:")
    settled_right = share(sum(r["right"] for r in settled), len(settled))
    print(f"  paired (best.csv): settled {share(len(settled), n)}, right {settled_right}; "
          f"tied {share(len(tied), n)}, true best among the tied {share(sum(r['right'] for r in tied), len(tied))}; "
          f"unsettled {n - len(settled) - len(tied)}")
    welch_right = sum(r["winner"] == r["true_best"] for r in welch)
    print(f"  unpaired (Welch):  settled {share(len(welch), n)}, right {share(welch_right, len(welch))}")
    if welch:
        print(f"  settled, paired / unpaired: {len(settled) / len(welch):.2f}x")
    winners = [r for r in results if r["winner"] is not None]
    print(f"  winner is the true best of the rerun configurations, whatever the verdict: "
          f"{share(sum(r['winner'] == r['true_best'] for r in winners), len(winners))}")
    regrets = [r["regret"] for r in winners]
    print(f"  winner's noise-free regret against the best configuration its search tried: "
          f"mean {sum(regrets) / len(regrets):.4f}, max {max(regrets):.4f}, "
          f"zero on {sum(r <= 1e-12 for r in regrets)} of {len(regrets)}")


if __name__ == "__main__":
    main()
