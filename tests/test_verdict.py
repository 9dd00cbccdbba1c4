"""Verdicts on constructed rerun tables, with the expected numbers computed independently with scipy: settled,
tied, all failed but one, too few seeds; best.csv against docs/tables.md; the CLI, the summary, MBPP's words;
and the simulated showcase printing its verdicts."""

import argparse
import csv
import json
import math
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from conftest import ROOT, run_snakemake
from metatune import export, history, select, verdict
from metatune.mbpp.pipeline import comparison_rows
from metatune.report import data, summary
from metatune.space import canonical_hp
from metatune.trial import rerun_seed, spec_from_args
from metatune.verdict_cli import verdicts_text

SPACE = {"learning_rate": {"type": "log_float", "low": 1e-5, "high": 1e-1},
         "lora_r": {"type": "int", "low": 1, "high": 64},
         "target_modules": {"type": "categorical", "choices": ["attn", "attn_mlp"]}}
SEEDS = [1001, 1002, 1003, 1004]


def hp(rank: int) -> dict:
    return {"learning_rate": 1e-3 * rank, "lora_r": 4 * rank, "target_modules": "attn_mlp"}


def selection(k: int) -> dict:
    return {"configs": [{"rank": r, "hp": hp(r), "source_run_id": f"g{r}", "source_stage": "stage1",
                         "val_loss": 1.0 + 0.01 * r, "token_budget": 100} for r in range(1, k + 1)]}


def reruns(losses: dict[int, list[float | None]], seeds=SEEDS, token_budget=100) -> list[dict]:
    """Rerun metrics of configurations rank -> losses by seed (None: diverged)."""
    return [{"run_id": f"top{rank}-seed{i + 1}", "stage": "rerun", "dataset": "d", "seed": seed, "hp": hp(rank),
             "status": "ok" if loss is not None else "diverged", "val_loss": loss, "token_budget": token_budget}
            for rank, ls in losses.items() for i, (seed, loss) in enumerate(zip(seeds, ls))]


def summarize(losses, **kw) -> list[dict]:
    return select.summarize_reruns(reruns(losses, **kw), selection(len(losses)))


def expected_paired(config: list[float], winner: list[float]) -> tuple[float, float, float, float]:
    """mean difference, its 95% interval and P(config truly better), independently: scipy's paired t-test. The
    posterior P(mu_d < 0) under the 1/sigma prior is the one-sided p-value of the test for mu_d > 0."""
    test = stats.ttest_rel(config, winner, alternative="greater")
    ci = stats.ttest_rel(config, winner).confidence_interval(0.95)
    return float(np.mean(np.subtract(config, winner))), ci.low, ci.high, test.pvalue


def test_settled_when_every_paired_interval_excludes_zero():
    # A seed effect shared by every configuration (seed 2 is a bad seed for all): unpaired, top1 and top2 overlap.
    w, c2, c3 = [1.00, 1.10, 0.95, 1.05], [1.02, 1.13, 0.96, 1.08], [1.30, 1.38, 1.22, 1.33]
    rows = summarize({1: w, 2: c2, 3: c3})
    assert [r["winner"] for r in rows] == [True, False, False]
    assert {r["verdict"] for r in rows} == {"settled"} and rows[0]["tied_with"] == ""
    assert rows[0]["verdict_reason"] == "settled: top1 beats top2 and top3 on every paired interval over 4 seeds"
    for row, losses in zip(rows[1:], (c2, c3)):
        mean, low, high, p = expected_paired(losses, w)
        assert row["comparison"] == "worse" and row["n_paired"] == 4
        assert (row["diff_vs_winner"], row["diff_ci95_low"], row["diff_ci95_high"]) == pytest.approx((mean, low, high))
        assert row["p_better_than_winner"] == pytest.approx(p)
    # the same numbers unpaired would not have told top1 from top2: the pairing is what settles it
    assert stats.ttest_ind(c2, w, equal_var=False).pvalue > 0.05
    own = stats.t.interval(0.95, 3, loc=np.mean(w), scale=stats.sem(w))
    assert (rows[0]["ci95_low"], rows[0]["ci95_high"]) == pytest.approx(own)


def test_tied_names_what_the_winner_cannot_be_told_from():
    w, c2, c3 = [1.00, 1.10, 0.95], [1.03, 1.08, 0.97], [1.01, 1.12, 0.94]
    rows = summarize({1: w, 2: c2, 3: c3})
    assert rows[0]["winner"] and rows[0]["verdict"] == "tied" and rows[0]["tied_with"] == "top2 top3"
    assert rows[0]["verdict_reason"] == "tied with top2 and top3: more seeds or a larger budget would tell them apart"
    for row, losses in zip(rows[1:], (c2, c3)):
        mean, low, high, p = expected_paired(losses, w)
        assert low < 0 < high and row["comparison"] == "not separated"
        got = (row["diff_ci95_low"], row["diff_ci95_high"], row["p_better_than_winner"])
        assert got == pytest.approx((low, high, p))


def test_tied_with_one_while_another_is_beaten():
    w, c2, c3 = [1.00, 1.10, 0.95], [1.30, 1.41, 1.24], [1.01, 1.09, 0.97]
    rows = summarize({1: w, 2: c2, 3: c3})
    assert [r["comparison"] for r in rows] == ["winner", "worse", "not separated"]
    assert rows[1]["tied_with"] == "top3" and rows[0]["verdict_reason"].startswith("tied with top3: ")


def test_all_failed_but_one():
    # top2 diverged on every seed, top3 finished one: the only configuration that ran cleanly wins, and settles
    w = [1.2, 1.3, 1.25]
    rows = summarize({1: w, 2: [None, None, None], 3: [0.5, None, None]})
    assert [r["comparison"] for r in rows] == ["winner", "failed", "failed"]
    assert rows[0]["verdict"] == "settled"
    assert rows[0]["verdict_reason"] == ("settled: top1 is the only configuration that finished every seed "
                                         "(top2 and top3 failed on some)")
    assert rows[1]["n_failed"] == 3 and math.isnan(rows[1]["mean_val_loss"]) and rows[1]["n_paired"] == 0
    assert rows[2]["n_paired"] == 1 and rows[2]["diff_vs_winner"] == pytest.approx(0.5 - 1.2)
    assert math.isnan(rows[2]["diff_ci95_low"]) and math.isnan(rows[2]["p_better_than_winner"])  # no 0-dof interval
    assert math.isnan(rows[2]["std_val_loss"]) and math.isnan(rows[2]["ci95_low"])


def test_a_winner_that_lost_a_seed_cannot_win():
    rows = summarize({1: [0.5, 0.6, None], 2: [1.0, 1.1, 1.05]})
    assert [r["winner"] for r in rows] == [False, True] and rows[0]["comparison"] == "failed"


def test_no_winner_when_every_configuration_failed_a_seed():
    rows = summarize({1: [0.5, None, 0.6], 2: [None, 1.0, 1.1]})
    assert not any(r["winner"] for r in rows) and {r["comparison"] for r in rows} == {"no winner"}
    assert rows[0]["verdict"] == "unsettled" and rows[0]["verdict_reason"].startswith("no winner")


@pytest.mark.parametrize("n", [1, 2])
def test_too_few_seeds_cannot_be_settled_and_print_no_interval(n):
    rows = summarize({1: [1.0, 1.4][:n], 2: [2.0, 2.1][:n]}, seeds=SEEDS[:n])
    assert rows[0]["winner"] and {r["verdict"] for r in rows} == {"unsettled"}
    seeds = "1 seed" if n == 1 else "2 seeds"
    assert rows[0]["verdict_reason"] == (f"cannot be settled with {seeds} per configuration: a paired interval "
                                         "needs rerun.seeds >= 3")
    assert rows[1]["comparison"] == "too few seeds"
    for r in rows:  # neither a 1-dof interval nor a probability from it
        assert all(math.isnan(r[k]) for k in ("ci95_low", "ci95_high", "diff_ci95_low", "diff_ci95_high",
                                               "p_better_than_winner"))
    assert rows[1]["diff_vs_winner"] == pytest.approx(1.0 if n == 1 else (2.0 + 2.1 - 1.0 - 1.4) / 2)


def test_a_configuration_without_enough_seeds_to_pair_leaves_it_unsettled():
    rows = summarize({1: [1.0, 1.1, 1.2], 2: [2.0, 2.1]})  # top2 ran two seeds only (no failure among them)
    assert rows[1]["comparison"] == "too few seeds" and rows[0]["verdict"] == "unsettled"
    assert rows[0]["verdict_reason"] == "cannot be settled: top2 ran fewer than 3 seeds to pair with top1's"


def test_one_configuration_rerun_is_unsettled():
    rows = summarize({1: [1.0, 1.1, 1.2]})
    assert rows[0]["winner"] and rows[0]["verdict"] == "unsettled" and "rerun.top_k >= 2" in rows[0]["verdict_reason"]


def test_pairs_by_the_seed_each_trial_trained_with():
    # the same losses, top2's trials listed in another order: pairing follows the recorded seed, not the list
    w, c2 = [1.00, 1.10, 0.95], [1.02, 1.13, 0.96]
    ms = reruns({1: w, 2: c2})
    rows = select.summarize_reruns(ms[:3] + ms[3:][::-1], selection(2))
    assert rows[1]["diff_vs_winner"] == pytest.approx(expected_paired(c2, w)[0])
    assert rows[1]["diff_ci95_low"] == pytest.approx(expected_paired(c2, w)[1])
    with pytest.raises(ValueError, match="top2: two reruns trained with the same seed"):
        select.summarize_reruns(ms[:3] + [ms[3], ms[3]], selection(2))


def test_rerun_seed_s_is_the_same_seed_for_every_configuration():
    def spec(rank, seed_index):
        settings = {"stage": "rerun", "base_seed": 7, "token_budget": 10, "seq_len": 8, "trainer": "simulated",
                    "training": {}, "save_adapter": False, "train_path": "t", "val_path": "v"}
        args = argparse.Namespace(stage_settings=json.dumps(settings), dataset="d", seed_index=seed_index,
                                  run_id=f"top{rank}-seed{seed_index}", hp='{"lr": 1}', hp_file=None, hp_index=None,
                                  hp_rank=None, metafeatures="m", metrics="out/metrics.json", round=None,
                                  rung=None, checkpoint_out=None, resume_dir=None)
        return spec_from_args(args)

    assert spec(1, 2).seed == spec(3, 2).seed == rerun_seed(7, 2) != spec(1, 3).seed
    assert spec(1, 1).seed != 7  # never the seed the search trained with


def test_winners_curse_only_at_the_search_budget():
    rows = summarize({1: [1.05, 1.07, 1.06], 2: [1.20, 1.22, 1.21]})
    assert rows[0]["optimism"] == pytest.approx(1.06 - 1.01) and rows[0]["search_val_loss"] == 1.01
    rows = summarize({1: [1.05, 1.07, 1.06], 2: [1.20, 1.22, 1.21]}, token_budget=200)
    assert math.isnan(rows[0]["optimism"])


losses_strategy = st.lists(st.one_of(st.none(), st.floats(0.1, 10.0)), min_size=3, max_size=3)


@settings(max_examples=200, deadline=None)
@given(st.lists(losses_strategy, min_size=1, max_size=4))
def test_verdict_properties(tables):
    rows = summarize(dict(enumerate(tables, start=1)), seeds=SEEDS[:3])
    winners = [r for r in rows if r["winner"]]
    complete = [r for r in rows if r["n_failed"] == 0]
    assert len(winners) == (1 if complete else 0)
    if winners:
        assert winners[0]["mean_val_loss"] == min(r["mean_val_loss"] for r in complete)
    others = [r for r in rows if not r["winner"]]
    v = rows[0]["verdict"]
    assert {r["verdict"] for r in rows} == {v} and v in verdict.VERDICTS
    if v == "settled":
        assert others and all(r["comparison"] in ("worse", "failed") for r in others)
    if v == "tied":
        assert rows[0]["tied_with"].split() == [f"top{r['rank']}" for r in others if r["comparison"] == "not separated"]
    for r in others:
        p = r["p_better_than_winner"]
        if r["comparison"] in ("worse", "not separated"):
            assert 0 <= p <= 1 and r["diff_ci95_low"] <= r["diff_vs_winner"] <= r["diff_ci95_high"]
            # the interval and the probability are one posterior: they never disagree
            if r["diff_ci95_high"] > r["diff_ci95_low"]:
                assert (r["diff_ci95_low"] > 0) == (p < 0.025) or math.isclose(p, 0.025, abs_tol=1e-9)


# --- best.csv, its documentation and its readers ---------------------------------------------------------------

def documented_columns(section: str) -> list[str]:
    text = (ROOT / "docs" / "tables.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", body, flags=re.M)


def best_csv(tmp_path, tables: dict[str, dict]) -> str:
    rows = [{"dataset": name, **r} for name, losses in tables.items() for r in summarize(losses)]
    path = tmp_path / "best.csv"
    export.write_csv(path, *export.best_table(rows, SPACE))
    return path


def test_best_csv_header_is_the_documented_table(tmp_path):
    with open(best_csv(tmp_path, {"d": {1: [1.0, 1.1, 1.2], 2: [1.5, 1.6, 1.7]}}), newline="") as f:
        header = next(csv.reader(f))
    documented = documented_columns("best.csv")
    assert documented[-1] == "hp_<name>"
    assert header == documented[:-1] + [f"hp_{k}" for k in SPACE]


def test_best_csv_reads_back_with_typed_configurations(tmp_path):
    best = data.read_best(best_csv(tmp_path, {"a": {1: [1.0, 1.1, 1.2], 2: [1.5, 1.6, 1.7]},
                                              "b": {1: [1.0, 1.1], 2: [1.0, None]}}))
    assert best["hp"].iloc[1] == hp(2) and isinstance(best["hp"].iloc[1]["lora_r"], int)
    assert list(best["winner"]) == [True, False, True, False] and best["tied_with"].iloc[0] == ""
    text = verdicts_text(best)
    assert "a: settled: top1 beats top2 on every paired interval over 3 seeds" in text
    assert "b: cannot be settled with 2 seeds per configuration" in text
    assert "winner top1 (g1): mean val_loss 1.1000 [0.8516, 1.3484]" in text  # t(0.975, 2) = 4.303
    md = summary.summary_markdown(
        pd.DataFrame({"dataset": ["a", "b"], "status": ["ok", "ok"]}), best, {})
    assert "| a | settled | 1.1000 | [0.8516, 1.3484] | 3 |" in md
    assert "| b | unsettled | 1.0500 | n/a (2 seeds; 3 needed) | 2 |" in md
    assert "- **a**: settled: top1 beats top2" in md and "| a | top2 | +0.5000 |" in md
    assert "Across the sweep: the winners' rerun means are" in md


def test_cli_prints_the_verdicts(tmp_path):
    path = best_csv(tmp_path, {"d": {1: [1.00, 1.10, 0.95], 2: [1.03, 1.08, 0.97], 3: [1.01, 1.12, 0.94]}})
    out = subprocess.run([sys.executable, "-m", "metatune.cli", "verdicts", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("d: tied with top2 and top3: more seeds or a larger budget would tell them apart\n")
    assert "top2: +0.0100 against the winner [" in out.stdout and ": not separated" in out.stdout
    missing = subprocess.run([sys.executable, "-m", "metatune.cli", "verdicts", str(tmp_path / "none.csv")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "none.csv: no such file" in missing.stderr


# --- MBPP: adapter against the base model, in the same words ------------------------------------------------------

@pytest.mark.parametrize("low,high,word", [(0.01, 0.2, "better"), (-0.3, -0.02, "worse"), (-0.1, 0.1, "not separated"),
                                           (0.0, 0.1, "not separated")])
def test_separation_words(low, high, word):
    assert verdict.separation(low, high) == word


def results_json(path, passed: list[int]) -> str:
    path.write_text(json.dumps({"per_task": [{"task_id": i, "n": 1, "n_passed": p}
                                                           for i, p in enumerate(passed)]}))
    (path.parent / "adapter.json").write_text('{"adapter": "x"}')
    return str(path)


@pytest.mark.parametrize("adapter,word", [([1] * 40, "better"), ([0] * 40, "worse"), ([1, 0] * 20, "not separated")])
def test_mbpp_comparison_says_better_worse_or_not_separated(tmp_path, adapter, word):
    base = results_json(tmp_path / "base.json", [1, 0] * 20)
    (tmp_path / "a").mkdir()
    row = comparison_rows(base, {"ds": results_json(tmp_path / "a" / "results.json", adapter)})[0]
    assert row["verdict"] == word and row["ci95_low"] <= row["diff"] <= row["ci95_high"]


# --- the simulated showcase ---------------------------------------------------------------------------------------

def test_simulated_showcase_prints_its_verdicts(tmp_path):
    config = ROOT / "config" / "simulated.yaml"
    proc = run_snakemake(tmp_path, "results/tables/best.csv", "--cores", "2", "--configfile", str(config))
    names = [d["name"] for d in yaml.safe_load(config.read_text())["datasets"]]
    best = data.read_best(tmp_path / "results" / "tables" / "best.csv")
    assert list(dict.fromkeys(best["dataset"])) == names
    with open(tmp_path / "results" / "tables" / "best.csv", newline="") as f:
        header = next(csv.reader(f))
    space = yaml.safe_load(config.read_text())["space"]
    assert header == documented_columns("best.csv")[:-1] + [f"hp_{k}" for k in space]
    assert "Verdicts (results/tables/best.csv" in proc.stdout
    for name in names:
        reason = best.loc[best["dataset"].eq(name), "verdict_reason"].iloc[0]
        assert f"{name}: {reason}" in proc.stdout
        assert re.match(r"(settled|tied with|cannot be settled)", reason)
    # rerun seed s of every configuration trained with one seed
    seeds: dict[str, list[int]] = {}
    for m in history.collected_metrics([tmp_path / "results" / "collected" / "rerun" / f"{names[0]}.jsonl"]):
        seeds.setdefault(canonical_hp(m["hp"]), []).append(m["seed"])
    assert len(seeds) == 3 and len({tuple(sorted(s)) for s in seeds.values()}) == 1


def test_summary_gives_the_mbpp_verdict():
    mbpp = pd.DataFrame({"dataset": ["code"], "adapter_pass@1": [0.4], "baseline_pass@1": [0.3], "diff": [0.1],
                         "ci95_low": [0.02], "ci95_high": [0.18], "verdict": ["better"]})
    runs = pd.DataFrame({"dataset": ["code"], "status": ["ok"]})
    empty = pd.DataFrame(columns=[*export.BEST_COLUMNS, "hp"]).astype({"winner": bool})
    md = summary.summary_markdown(runs, empty, {}, mbpp)
    assert "| code | 0.400 | 0.300 | +0.100 | [+0.020, +0.180] | better |" in md


def test_simulated_seed_noise_is_shared_by_configurations_trained_with_the_seed():
    """Half the noise variance comes with the seed, so pairing by seed removes it: the correlation of two
    configurations' noise over seeds is about 0.5, and none between seeds of different numbers."""
    from metatune.contract import TrialSpec
    from metatune.trainers import registry
    from metatune.trainers.simulated import SHARED_SEED_VARIANCE, simulate

    mf = {"log10_tokens": 6.0, "token_entropy": 6.0, "compression_ratio": 0.3}

    def loss(hp, seed, noise):
        spec = TrialSpec(run_id="x", stage="rerun", dataset="d", seed=seed, hp=hp, token_budget=200_000, seq_len=128,
                         train_path="", val_path="", metafeatures_path="", out_dir="", trainer="simulated",
                         settings={"simulated": {"noise": noise}})
        return simulate(replace(spec, hp=registry.complete_hp("simulated", hp)), mf).val_loss

    a = {"learning_rate": 1e-3, "lora_r": 8, "batch_size": 16}
    b = {"learning_rate": 2e-3, "lora_r": 16, "batch_size": 32}
    seeds = range(400)
    za = [loss(a, s, 0.01) / loss(a, s, 0.0) - 1 for s in seeds]
    zb = [loss(b, s, 0.01) / loss(b, s, 0.0) - 1 for s in seeds]
    assert stats.pearsonr(za, zb).statistic == pytest.approx(SHARED_SEED_VARIANCE, abs=0.12)
    assert np.std(za) == pytest.approx(0.01, rel=0.15)  # the noise level is unchanged
    assert abs(stats.pearsonr(za, zb[1:] + zb[:1]).statistic) < 0.15


def test_a_run_ends_with_the_verdicts_or_a_note_never_a_crash(tmp_path, capsys):
    from metatune.verdict_cli import print_after_run

    print_after_run(tmp_path / "absent.csv")
    assert capsys.readouterr().out == ""
    old = tmp_path / "old.csv"  # best.csv as metatune wrote it before verdicts: the configuration as JSON
    old.write_text('dataset,rank,winner,mean_val_loss,hp\nd,1,True,1.0,"{""lr"": 1}"\n')
    print_after_run(old)
    assert "has no verdicts (KeyError" in capsys.readouterr().out
    print_after_run(best_csv(tmp_path, {"d": {1: [1.0, 1.1, 1.2], 2: [1.5, 1.6, 1.7]}}))
    assert "d: settled: top1 beats top2" in capsys.readouterr().out
