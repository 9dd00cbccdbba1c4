"""Early stopping on recorded learning curves: full-budget grid, successive halving by the loss at the rung, the
learned promotion of metatune.fidelity, and Optuna's SuccessiveHalvingPruner and HyperbandPruner, side by side.

Every configuration of a table is trained once to the full budget with its curve recorded (evaluated at the
rungs too); each method then replays those curves, so all methods see exactly the same numbers:
(a) grid: every configuration to the full budget; the winner is the lowest final loss.
(b) sh: rungs at 1/9, 1/3, 1 of the budget (eta 3); the best third of each rung by its loss there continues.
(c) learned: the same rungs; the best third by metatune.fidelity's predicted full-budget loss, learned from the
    full curves of the other datasets of the table (leave-one-dataset-out), with the workflow's own function.
(d) optuna_sha / optuna_hyperband: Optuna's pruners through ask/tell, one trial at a time in a seeded random
    order, reporting the curve point by point; a pruned trial stops there.
A method's winner is the lowest final loss among the configurations it trained to the full budget (for Optuna's
pruners, which may stop every trial when early leaders diverge later: else the best of those that got
furthest). Its tokens
are what it trained in all (a continued trial pays only for the tokens beyond its checkpoint).

Normalized regret of a winner: (its final loss - (a)'s winner's) / (median final loss - (a)'s winner's) of that
dataset and seed. (a)'s own noise: the same normalization of how much the final loss of (a)'s winning
configuration moves between seeds (standard deviation over the seeds), i.e. how far apart two equally good
answers of the full grid are. Tables:
- simulated: 12 datasets (metafeatures as bench_optimizer's), 27 configurations (9 learning rates x 3 ranks),
  5 seeds, the simulated trainer (metatune.trainers.simulated);
- nanogpt: benchmarks/data/nanogpt_curves.jsonl, real nanogpt_lora curves on CPU (`--record-nanogpt` writes
  it; see `record_nanogpt`), one seed.

Usage (from the repository root):
    PYTHONPATH=src python benchmarks/bench_fidelity.py [--seeds 5] [--datasets 12] [--record-nanogpt]
Prints a table per benchmark and writes benchmarks/out/fidelity.png.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metatune import fidelity
from metatune.contract import TrialSpec
from metatune.trainers.simulated import simulate

sys.path.insert(0, str(Path(__file__).parent))
from bench_optimizer import simulated_metafeatures  # noqa: E402 - the same simulated datasets

OUT = Path(__file__).parent / "out"
NANOGPT_CURVES = Path(__file__).parent / "data" / "nanogpt_curves.jsonl"
SETTINGS = fidelity.FidelitySettings(eta=3, min_fraction=1 / 9)
METHODS = ("grid", "sh", "learned", "optuna_sha", "optuna_hyperband")
SIM_BUDGET, SIM_SEQ = 2_000_000, 256
SIM_LRS = [float(x) for x in np.geomspace(3e-5, 3e-2, 9)]
SIM_RANKS = [4, 16, 64]
BASE_HP = {"lora_alpha": 32, "lora_dropout": 0.0, "batch_size": 16, "warmup_ratio": 0.05, "weight_decay": 0.0,
           "target_modules": "attn_mlp"}


@dataclass(frozen=True)
class Trial:
    """One configuration's recorded run: its whole curve as (tokens, val_loss) rows; failed runs end early."""
    dataset: str
    hp: dict
    rows: list[dict]
    token_budget: int

    def final(self) -> float:
        last = self.rows[-1]
        ok = last["tokens"] >= self.token_budget * 0.98 and math.isfinite(last["val_loss"])
        return last["val_loss"] if ok else math.inf

    def until(self, tokens: int) -> list[dict]:
        return [r for r in self.rows if r["tokens"] <= tokens]

    def curve(self) -> fidelity.Curve:
        return fidelity.Curve.from_rows(self.dataset, self.hp, self.rows, self.token_budget)


# ---------------------------------------------------------------------------------------------------------------
# Tables


def simulated_table(n_datasets: int, seed: int) -> dict[str, list[Trial]]:
    rungs = fidelity.rung_schedule(27, SIM_BUDGET, SETTINGS)
    table = {}
    for name, mf in simulated_metafeatures(n_datasets).items():
        trials = []
        for lr in SIM_LRS:
            for r in SIM_RANKS:
                hp = {**BASE_HP, "learning_rate": lr, "lora_r": r}
                spec = TrialSpec(run_id="x", stage="stage1", dataset=name, seed=seed, hp=hp, token_budget=SIM_BUDGET,
                                 seq_len=SIM_SEQ, train_path="", val_path="", metafeatures_path="", out_dir="",
                                 trainer="simulated", settings={"simulated": {"noise": 0.01}},
                                 rung_tokens=tuple(g.tokens for g in rungs))
                rows = [{"tokens": row["tokens"], "val_loss": row["val_loss"]} for row in simulate(spec, mf).curve]
                trials.append(Trial(name, hp, rows, SIM_BUDGET))
        table[name] = trials
    return table


def nanogpt_table(path: Path) -> dict[str, list[Trial]]:
    table: dict[str, list[Trial]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows = [{"tokens": p["tokens"], "val_loss": math.nan if p["val_loss"] is None else p["val_loss"]}
                    for p in r["curve"]]
            table.setdefault(r["dataset"], []).append(Trial(r["dataset"], r["hp"], rows, r["token_budget"]))
    return table


# ---------------------------------------------------------------------------------------------------------------
# Methods: each returns (winner's index, tokens trained).


def grid(trials: list[Trial], references: list[fidelity.Curve], order_seed: int) -> tuple[int, int]:
    return min(range(len(trials)), key=lambda i: trials[i].final()), sum(t.token_budget for t in trials)


def halving(method: str):
    def run(trials: list[Trial], references: list[fidelity.Curve], order_seed: int) -> tuple[int, int]:
        rungs = fidelity.rung_schedule(len(trials), trials[0].token_budget, SETTINGS)
        alive, tokens = list(range(len(trials))), 0
        for k, rung in enumerate(rungs):
            tokens += len(alive) * (rung.tokens - (rungs[k - 1].tokens if k else 0))
            if k == len(rungs) - 1:
                break
            rung_trials = []
            for i in alive:
                # A trainer stops at the last whole step within the rung's tokens: "reached" allows for that.
                rows = trials[i].until(rung.tokens)
                reached = trials[i].rows[-1]["tokens"] >= 0.9 * rung.tokens
                ok = bool(rows) and reached and all(math.isfinite(r["val_loss"]) for r in rows)
                rung_trials.append(fidelity.RungTrial(
                    str(i), str(i), "ok" if ok else "diverged", trials[i].hp, rows[-1]["val_loss"] if ok else None,
                    fidelity.Curve.from_rows(trials[i].dataset, trials[i].hp, rows, trials[i].token_budget), ""))
            record = fidelity.promote(rung_trials, rungs[k + 1].n_trials, method, references)
            alive = [int(slot["from_run_id"]) for slot in record["configs"] if slot["hp"] is not None]
        return min(alive, key=lambda i: trials[i].final()), tokens
    return run


def optuna_pruner(kind: str):
    def run(trials: list[Trial], references: list[fidelity.Curve], order_seed: int) -> tuple[int, int]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        budget = trials[0].token_budget
        first = fidelity.rung_schedule(len(trials), budget, SETTINGS)[0].tokens
        pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=SETTINGS.eta)
                  if kind == "sha" else
                  optuna.pruners.HyperbandPruner(min_resource=first, max_resource=budget,
                                                 reduction_factor=SETTINGS.eta))
        study = optuna.create_study(direction="minimize", pruner=pruner,
                                    sampler=optuna.samplers.RandomSampler(seed=order_seed))
        order = list(range(len(trials)))
        random.Random(order_seed).shuffle(order)
        tokens, finished, reached = 0, [], {}
        for i in order:
            trial = study.ask()
            trained = 0
            for row in trials[i].rows:
                trained = row["tokens"]
                if not math.isfinite(row["val_loss"]):
                    break
                trial.report(row["val_loss"], step=row["tokens"])
                reached[i] = (-row["tokens"], row["val_loss"])
                if trial.should_prune():
                    break
            tokens += trained
            if trained >= budget * 0.98 and math.isfinite(trials[i].final()):
                study.tell(trial, trials[i].final())
                finished.append(i)
            else:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        if not finished:  # every trial pruned or diverged: the best of those that got furthest
            return min(reached, key=reached.get), tokens
        return min(finished, key=lambda i: trials[i].final()), tokens
    return run


RUNNERS = {"grid": grid, "sh": halving("loss"), "learned": halving("learned"),
           "optuna_sha": optuna_pruner("sha"), "optuna_hyperband": optuna_pruner("hyperband")}


# ---------------------------------------------------------------------------------------------------------------


def evaluate(name: str, tables: list[dict[str, list[Trial]]]) -> dict:
    """tables: one per seed. Returns per method the mean normalized regret, its spread, and total tokens."""
    regrets = {m: [] for m in METHODS}
    tokens = {m: 0 for m in METHODS}
    noise = []
    for s, table in enumerate(tables):
        for dataset, trials in table.items():
            references = [t.curve() for other, ts in table.items() if other != dataset for t in ts]
            finals = [t.final() for t in trials]
            finite = [x for x in finals if math.isfinite(x)]
            winners = {}
            for m in METHODS:
                winners[m], used = RUNNERS[m](trials, references, order_seed=1000 * s + len(dataset))
                tokens[m] += used
            best, scale = finals[winners["grid"]], statistics.median(finite) - finals[winners["grid"]]
            for m in METHODS:  # a winner that diverges at the full budget counts as the worst ok configuration
                regrets[m].append((min(finals[winners[m]], max(finite)) - best) / scale)
            if len(tables) > 1:  # (a)'s winner's final loss across the seeds: the grid's own noise
                across = [tb[dataset][winners["grid"]].final() for tb in tables]
                noise.append(statistics.stdev(across) / scale)
    n = len(regrets["grid"])
    result = {"name": name, "n": n, "noise": statistics.fmean(noise) if noise else math.nan, "methods": {}}
    print(f"\n{name}: {len(tables[0])} datasets x {len(tables)} seeds, {len(next(iter(tables[0].values())))} "
          f"configurations each; rungs eta {SETTINGS.eta}, first at {SETTINGS.min_fraction:.3f} of the budget")
    print(f"{'method':<18}{'tokens':>14}{'vs grid':>9}{'mean regret':>13}{'median':>9}{'P(regret=0)':>13}")
    for m in METHODS:
        r = regrets[m]
        result["methods"][m] = {"tokens": tokens[m], "ratio": tokens[m] / tokens["grid"],
                                "regret": statistics.fmean(r), "regret_se": statistics.stdev(r) / math.sqrt(n),
                                "zero": sum(x == 0 for x in r) / n}
        q = result["methods"][m]
        print(f"{m:<18}{tokens[m]:>14,}{q['ratio']:>9.1%}{q['regret']:>9.3f}±{q['regret_se']:.3f}"
              f"{statistics.median(r):>9.3f}{q['zero']:>13.0%}")
    if noise:
        print(f"grid's seed-to-seed noise (normalized std of its winner's final loss over seeds): "
              f"{result['noise']:.3f}")
    c = result["methods"]["learned"]
    verdicts = [("learned within the grid's noise", c["regret"] <= result["noise"] if noise else None),
                ("learned at <= 40% of the grid's tokens", c["ratio"] <= 0.4)]
    for m in ("sh", "optuna_sha", "optuna_hyperband"):
        o = result["methods"][m]
        verdicts.append((f"learned better than {m} at <= its tokens",
                         c["regret"] < o["regret"] and c["tokens"] <= o["tokens"]))
    for what, ok in verdicts:
        print(f"  target {what}: {'n/a (one seed)' if ok is None else 'met' if ok else 'MISSED'}")
    return result


def plot(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.8), layout="constrained", squeeze=False)
    for ax, res in zip(axes[0], results):
        for m, q in res["methods"].items():
            ax.errorbar(q["ratio"], q["regret"], yerr=q["regret_se"], fmt="o", capsize=3, label=m)
            ax.annotate(m, (q["ratio"], q["regret"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if math.isfinite(res["noise"]):
            ax.axhspan(0, res["noise"], color="grey", alpha=0.15, label="grid's seed-to-seed noise")
        ax.axvline(0.4, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("tokens trained, share of the full grid's")
        ax.set_ylabel("normalized regret of the winner (mean ± s.e.)")
        ax.set_title(f"{res['name']} ({res['n']} dataset-seed pairs)")
        ax.legend(fontsize=7)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"\nwrote {out}")


# ---------------------------------------------------------------------------------------------------------------
# The real table: nanogpt_lora on CPU.


def record_nanogpt(out: Path) -> None:
    """Train 27 configurations (9 learning rates x 3 ranks) on each of 4 built-in datasets with nanogpt_lora on
    CPU, to the full budget, evaluated every 2 steps and at the rungs, and write their curves as JSONL."""
    import tempfile

    from metatune import bins, sources
    from metatune.tokenizers import ByteTokenizer
    from metatune.trainers import nanogpt_lora
    from metatune.trainers.pretrain import PretrainSettings, pretrain

    datasets = {"stdlib_code": ("stdlib_code", {}), "pydoc_prose": ("pydoc_topics", {}),
                "arithmetic": ("arithmetic", {"n_docs": 400}), "markov": ("markov", {"n_docs": 300})}
    budget, seq_len, batch = 48 * 8 * 64, 64, 8
    rungs = fidelity.rung_schedule(27, budget, SETTINGS)
    lrs, ranks = [float(x) for x in np.geomspace(3e-4, 1e-1, 9)], [1, 4, 16]
    work = Path(tempfile.mkdtemp(prefix="bench_fidelity_"))
    folders = {}
    for name, (generator, options) in datasets.items():
        docs = []
        for record in sources.BUILTIN_GENERATORS[generator](options):
            docs.append(record["text"])
            if sum(map(len, docs)) > 400_000:
                break
        d = work / name
        d.mkdir()
        cut = int(len(docs) * 0.9)
        for split, part in (("train", docs[:cut]), ("val", docs[cut:])):
            (d / f"{split}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
        bins.build_bins({s: d / f"{s}.jsonl" for s in ("train", "val")}, d / "bins", ByteTokenizer(),
                        bins.BinSettings())
        folders[name] = d / "bins"
    base = work / "base"
    pretrain([str(folders["pydoc_prose"] / "train.bin")], base,
             PretrainSettings(n_layer=2, n_head=2, n_embd=64, block_size=64, steps=150, batch_size=16, seq_len=64))
    lines, start = [], time.monotonic()
    for name, folder in folders.items():
        for lr in lrs:
            for r in ranks:
                hp = {"learning_rate": lr, "lora_r": r, "lora_alpha": 16, "lora_dropout": 0.0, "batch_size": batch,
                      "warmup_ratio": 0.1, "weight_decay": 0.0, "target_modules": "attn_mlp"}
                spec = TrialSpec(run_id="x", stage="stage1", dataset=name, seed=0, hp=hp, token_budget=budget,
                                 seq_len=seq_len, train_path=str(folder / "train.bin"),
                                 val_path=str(folder / "val.bin"), metafeatures_path="", out_dir=str(work / "o"),
                                 trainer="nanogpt_lora", rung_tokens=tuple(g.tokens for g in rungs),
                                 settings={"nanogpt": {"base_model": str(base), "micro_batch_size": 8,
                                                       "eval_interval": 4, "eval_batches": 2}})
                o = nanogpt_lora.train(spec)
                rows = [{"tokens": row["tokens"],
                         "val_loss": row["val_loss"] if math.isfinite(row["val_loss"]) else None} for row in o.curve]
                lines.append(json.dumps({"dataset": name, "hp": hp, "token_budget": budget, "status": o.status,
                                         "curve": rows}, sort_keys=True))
        print(f"{name}: 27 trials, {time.monotonic() - start:.0f} s so far", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(line + "\n" for line in lines))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--datasets", type=int, default=12)
    parser.add_argument("--record-nanogpt", action="store_true", help=f"train the real table into {NANOGPT_CURVES}")
    args = parser.parse_args()
    if args.record_nanogpt:
        record_nanogpt(NANOGPT_CURVES)
    start = time.monotonic()
    results = [evaluate("simulated", [simulated_table(args.datasets, s) for s in range(args.seeds)])]
    if NANOGPT_CURVES.is_file():
        results.append(evaluate("nanogpt_lora (CPU, recorded)", [nanogpt_table(NANOGPT_CURVES)]))
    else:
        print(f"\n{NANOGPT_CURVES} not found: run with --record-nanogpt for the real table")
    plot(results, OUT / "fidelity.png")
    print(f"{time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
