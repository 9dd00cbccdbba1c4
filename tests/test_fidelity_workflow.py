"""Successive-halving rungs in the workflow: every job in the dry run, promotion files, the tables and the journal,
checkpoints removed or kept, and the learned promotion from an earlier sweep's curves."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import ROOT, job_counts, run_snakemake

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
GRID_LRS = [1.0e-4, 1.0e-3, 3.0e-3]
N_CONFIGS = len(GRID_LRS) * 2  # x target_modules: rungs of 6, 2 and 1 trials
DATASETS = ("arith", "markov")


def rung_config(tmp_path: Path, **fidelity) -> Path:
    cfg = yaml.safe_load(TINY.read_text())
    cfg["space"]["learning_rate"]["grid"] = GRID_LRS
    cfg["fidelity"] = {"eta": 3, "min_fraction": 0.111, **fidelity}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_dry_run_shows_every_rung_job(tmp_path):
    out = run_snakemake(tmp_path, "-n", "--configfile", str(rung_config(tmp_path))).stdout
    counts = job_counts(out)
    assert counts["trial_stage1"] == N_CONFIGS * len(DATASETS)  # rung 0: every configuration
    assert counts["trial_rung"] == (2 + 1) * len(DATASETS)  # ceil(6/3) then ceil(2/3) slots
    assert counts["promote"] == 2 * len(DATASETS) and counts["collect_rung"] == 3 * len(DATASETS)
    assert "results/trials/stage1/arith/rung2-0/metrics.json" in out


@pytest.fixture(scope="module")
def rung_sweep(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("rungs")
    run_snakemake(workdir, "--cores", "2", "--configfile", str(rung_config(workdir)))
    return workdir


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_promotion_files_record_the_ranking_and_why(rung_sweep):
    for dataset in DATASETS:
        for rung, n_from, n_to in ((1, 6, 2), (2, 2, 1)):
            record = json.loads((rung_sweep / f"results/fidelity/stage1/{dataset}/rung{rung}.json").read_text())
            assert record["dataset"] == dataset and record["rung"] == rung and record["from_rung"] == rung - 1
            assert record["method"] == "loss" and record["n_trials"] == n_from and len(record["configs"]) == n_to
            assert [r["rank"] for r in record["ranking"]] == list(range(1, n_from + 1))
            assert sum(r["promoted"] for r in record["ranking"]) == record["n_promoted"] == n_to
            assert all(r["reason"].startswith("promoted" if r["promoted"] else "not promoted")
                       for r in record["ranking"])
            losses = [r["loss_at_rung"] for r in record["ranking"]]
            assert losses == sorted(losses)


def test_runs_csv_accounts_rungs_and_tokens(rung_sweep):
    rows = [r for r in read_csv(rung_sweep / "results/tables/runs.csv") if r["stage"] == "stage1"]
    assert len(rows) == (N_CONFIGS + 2 + 1) * len(DATASETS)
    budget = int(rows[0]["token_budget"])
    for r in rows:
        assert r["rung"] in ("0", "1", "2") and int(r["tokens_trained"]) == int(r["tokens_seen"])
    by_rung = {k: [int(r["tokens_trained"]) for r in rows if r["rung"] == k] for k in ("0", "1", "2")}
    assert max(by_rung["0"]) <= math.ceil(budget / 9) < min(by_rung["1"]) <= max(by_rung["1"]) < min(by_rung["2"])
    assert min(by_rung["2"]) >= budget * 0.9
    # the promoted configuration at rung 2 is one of rung 1's, with the same hyperparameters
    for dataset in DATASETS:
        promoted = json.loads((rung_sweep / f"results/fidelity/stage1/{dataset}/rung2.json").read_text())
        final = next(r for r in rows if r["dataset"] == dataset and r["run_id"] == "rung2-0")
        assert float(final["hp_learning_rate"]) == promoted["configs"][0]["hp"]["learning_rate"]
    other = [r for r in read_csv(rung_sweep / "results/tables/runs.csv") if r["stage"] != "stage1"]
    assert all(r["rung"] == "" and r["tokens_trained"] == r["tokens_seen"] for r in other)


def test_checkpoints_are_gone_once_nothing_needs_them(rung_sweep):
    assert not list((rung_sweep / "results").rglob("*.ckpt"))
    assert not list((rung_sweep / "results/fidelity").rglob("resume"))


def test_journal_shows_pruned_trials_with_their_curves(rung_sweep):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(rung_sweep / "results/optuna/journal.log")))
    study = optuna.load_study(study_name="arith/stage1", storage=storage)
    states = [t.state for t in study.trials]
    assert len(study.trials) == N_CONFIGS  # a configuration is one trial, at its furthest rung
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1
    assert states.count(optuna.trial.TrialState.PRUNED) == N_CONFIGS - 1
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(t.intermediate_values and t.value == t.intermediate_values[max(t.intermediate_values)]
               for t in pruned)
    assert max(len(t.intermediate_values) for t in pruned) >= 3  # pruned at rung 1: its rung-0 points too


def test_history_has_each_configuration_once(rung_sweep):
    rows = read_csv(rung_sweep / "results/stage1/history.csv")
    assert len(rows) == N_CONFIGS * len(DATASETS)


def test_kept_checkpoints_and_learned_promotion_from_an_earlier_sweep(rung_sweep, tmp_path):
    """A second sweep learns its promotions from the first one's curves, and keeps its checkpoints."""
    prior = tmp_path / "prior_curves.jsonl"
    shutil.copy(rung_sweep / "results/fidelity/curves.jsonl", prior)
    lines = [json.loads(line) for line in prior.read_text().splitlines()]
    assert lines and all(len(r["curve"]) >= 2 for r in lines)
    config = rung_config(tmp_path, keep_checkpoints=True, prior_curves=[str(prior)])
    run_snakemake(tmp_path, "stage1", "--cores", "2", "--configfile", str(config))
    record = json.loads((tmp_path / "results/fidelity/stage1/arith/rung1.json").read_text())
    assert record["method"] == "learned" and record["n_references"] == len(lines)
    assert any(r["predicted_final"] is not None for r in record["ranking"])
    assert len(list((tmp_path / "results/trials/stage1").rglob("checkpoint.ckpt"))) == (N_CONFIGS + 3) * 2
    assert len(list((tmp_path / "results/fidelity").rglob("slot*.ckpt"))) == (2 + 1) * 2
