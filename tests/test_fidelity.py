"""Successive-halving rungs: the schedule, the simulated trainer's curves and continuation, the promotion rules and
their records, the history the optimizer sees, and the config section."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metatune import config, fidelity, history, trial
from metatune.contract import TrialSpec
from metatune.io import DataError
from metatune.trainers import simulated

MF = {"log10_tokens": 6.5, "token_entropy": 7.0, "compression_ratio": 0.3}
HP = {"learning_rate": 5e-4, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "batch_size": 16,
      "warmup_ratio": 0.05, "weight_decay": 0.0, "target_modules": "attn_mlp"}
BUDGET = 1_000_000
SETTINGS = fidelity.FidelitySettings(eta=3, min_fraction=1 / 9)
RUNG_TOKENS = tuple(r.tokens for r in fidelity.rung_schedule(27, BUDGET, SETTINGS))


def sim_spec(tmp_path: Path, hp=HP, seed=0, dataset="d", **kw) -> TrialSpec:
    mf = tmp_path / "mf.json"
    mf.write_text(json.dumps(MF))
    return TrialSpec(run_id="g0", stage="stage1", dataset=dataset, seed=seed, hp=hp, token_budget=BUDGET, seq_len=128,
                     train_path="", val_path="", metafeatures_path=str(mf), out_dir=str(tmp_path / "out"),
                     trainer="simulated", settings={"simulated": {"noise": 0.01}}, **kw)


# --- the schedule -------------------------------------------------------------------------------------------

@settings(deadline=None)
@given(n=st.integers(1, 5000), budget=st.integers(1, 10**9), eta=st.integers(2, 6),
       min_fraction=st.floats(1e-4, 1.0))
def test_schedule_keeps_ceil_n_over_eta_and_ends_at_the_budget(n, budget, eta, min_fraction):
    rungs = fidelity.rung_schedule(n, budget, fidelity.FidelitySettings(eta=eta, min_fraction=min_fraction))
    assert rungs[0].n_trials == n and rungs[-1].tokens == budget and rungs[-1].fraction == 1.0
    for a, b in zip(rungs, rungs[1:]):
        assert b.n_trials == math.ceil(a.n_trials / eta)
        assert a.tokens <= b.tokens and b.fraction == pytest.approx(a.fraction * eta)
    # the first rung is the power of 1/eta nearest min_fraction on a log scale
    assert abs(math.log(rungs[0].fraction) - math.log(min_fraction)) <= math.log(eta) / 2 + 1e-9


def test_the_issues_example_schedule():
    rungs = fidelity.rung_schedule(27, 900, fidelity.FidelitySettings(eta=3, min_fraction=0.111))
    assert [(r.tokens, r.n_trials) for r in rungs] == [(100, 27), (300, 9), (900, 3)]


@pytest.mark.parametrize("section, message", [
    ({"eta": 1}, "eta"), ({"min_fraction": 0.0}, "min_fraction"), ({"min_fraction": 1.5}, "min_fraction"),
    ({"promotion": "magic"}, "promotion"),
])
def test_bad_settings_name_the_key(section, message):
    with pytest.raises(ValueError, match=message):
        fidelity.FidelitySettings.from_config(section)


def test_auto_promotion_learns_once_there_are_curves():
    assert fidelity.FidelitySettings().method() == "loss"
    assert fidelity.FidelitySettings(prior_curves=("c.jsonl",)).method() == "learned"
    assert fidelity.FidelitySettings(promotion="loss", prior_curves=("c.jsonl",)).method() == "loss"
    assert fidelity.FidelitySettings.from_config(None) is None


# --- the simulated trainer's curves -------------------------------------------------------------------------

def curve_of(tmp_path, lr, **kw):
    spec = replace(sim_spec(tmp_path, {**HP, "learning_rate": lr}, rung_tokens=RUNG_TOKENS, **kw),
                   settings={"simulated": {"noise": 0.0}})
    o = simulated.simulate(spec, MF)
    return {r["tokens"]: r["val_loss"] for r in o.curve}


def test_high_learning_rates_start_fast_and_end_worse_so_curves_cross(tmp_path):
    best = simulated.optimal_lr(MF)
    fast, good = curve_of(tmp_path, 3 * best), curve_of(tmp_path, best)
    early, final = min(fast), max(fast)
    assert fast[early] < good[early]  # fast-then-flat ahead at the first evaluation...
    assert fast[final] > good[final]  # ...behind at the end
    slow = curve_of(tmp_path, best / 3)
    assert slow[early] > good[early] and slow[final] - good[final] < slow[early] - good[early]


@settings(max_examples=25, deadline=None)
@given(lr_scale=st.floats(0.05, 40.0), seed=st.integers(0, 50), batch=st.sampled_from([8, 16, 64]))
def test_simulated_continuation_equals_uninterrupted(tmp_path_factory, lr_scale, seed, batch):
    """Stopping at each rung and resuming from the checkpoint file gives the uninterrupted curve and metrics."""
    tmp = tmp_path_factory.mktemp("sim")
    hp = {**HP, "learning_rate": simulated.optimal_lr(MF) * lr_scale, "batch_size": batch}
    whole = trial.run(replace(sim_spec(tmp, hp, seed), out_dir=str(tmp / "whole"), rung=2, rung_tokens=RUNG_TOKENS,
                              stop_at_tokens=BUDGET))
    checkpoint = None
    for k, stop in enumerate(RUNG_TOKENS):
        out = tmp / f"rung{k}"
        m = trial.run(replace(sim_spec(tmp, hp, seed), out_dir=str(out), rung=k, rung_tokens=RUNG_TOKENS,
                              stop_at_tokens=stop, resume_from=checkpoint, checkpoint_path=str(out / "ckpt")))
        if m["status"] != "ok":
            assert whole["status"] == m["status"] == "diverged"
            return
        checkpoint = str(out / "ckpt")
    assert {k: m[k] for k in ("val_loss", "best_val_loss", "tokens_trained")} == \
           {k: whole[k] for k in ("val_loss", "best_val_loss", "tokens_trained")}
    assert (tmp / "rung2" / "curve.csv").read_text() == (tmp / "whole" / "curve.csv").read_text()


def test_a_trial_that_does_not_end_ok_still_leaves_its_declared_checkpoint(tmp_path):
    spec = sim_spec(tmp_path, {**HP, "learning_rate": 1.0}, rung=2, rung_tokens=RUNG_TOKENS, stop_at_tokens=BUDGET,
                    checkpoint_path=str(tmp_path / "ckpt"))
    m = trial.run(spec)
    assert m["status"] == "diverged" and (tmp_path / "ckpt").read_bytes() == b""


def test_rung_records_say_what_was_trained(tmp_path):
    ckpt = tmp_path / "c0"
    m0 = trial.run(sim_spec(tmp_path, rung=0, rung_tokens=RUNG_TOKENS, stop_at_tokens=RUNG_TOKENS[0],
                            checkpoint_path=str(ckpt)))
    assert m0["rung"] == 0 and m0["partial"] and m0["tokens_resumed"] == 0
    assert 0 < m0["tokens_trained"] <= RUNG_TOKENS[0] and m0["config_id"].startswith("g")
    m1 = trial.run(replace(sim_spec(tmp_path, rung=1, rung_tokens=RUNG_TOKENS, stop_at_tokens=RUNG_TOKENS[1],
                                    resume_from=str(ckpt)), out_dir=str(tmp_path / "o1")))
    assert m1["tokens_resumed"] == m0["tokens_trained"] and m1["config_id"] == m0["config_id"]
    plain = trial.run(replace(sim_spec(tmp_path), out_dir=str(tmp_path / "plain")))
    assert plain["rung"] is None and not plain["partial"] and plain["tokens_trained"] == plain["tokens_seen"]


def test_cli_rejects_a_rung_outside_the_schedule(tmp_path):
    settings_json = json.dumps({"stage": "stage1", "base_seed": 0, "token_budget": BUDGET, "seq_len": 128,
                                "trainer": "simulated", "training": {}, "save_adapter": False,
                                "train_path": "t", "val_path": "v", "rung_tokens": list(RUNG_TOKENS)})
    with pytest.raises(ValueError, match="--rung 3"):
        trial.main(["--stage-settings", settings_json, "--dataset", "d", "--run-id", "g0", "--metafeatures", "m",
                    "--metrics", str(tmp_path / "m.json"), "--hp", json.dumps(HP), "--rung", "3"])


def test_a_vacant_slot_is_a_failed_trial_with_its_reason(tmp_path):
    promotions = tmp_path / "rung1.json"
    promotions.write_text(json.dumps({"configs": [{"slot": 0, "hp": None, "vacant": "only 0 ok trials"}]}))
    settings_json = json.dumps({"stage": "stage1", "base_seed": 0, "token_budget": BUDGET, "seq_len": 128,
                                "trainer": "simulated", "training": {}, "save_adapter": False,
                                "train_path": "t", "val_path": "v", "rung_tokens": list(RUNG_TOKENS)})
    trial.main(["--stage-settings", settings_json, "--dataset", "d", "--run-id", "rung1-0", "--metafeatures", "m",
                "--metrics", str(tmp_path / "t" / "metrics.json"), "--hp-file", str(promotions), "--hp-index", "0",
                "--rung", "1", "--checkpoint-out", str(tmp_path / "t" / "ckpt"), "--resume-dir", str(tmp_path)])
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert m["status"] == "failed" and "vacant" in m["error"] and m["hp"] == {}
    assert fidelity.full_budget([m]) == [] and fidelity.furthest_rungs([m]) == []


# --- the learned prediction ---------------------------------------------------------------------------------

def curve(dataset, hp, points) -> fidelity.Curve:
    return fidelity.Curve.from_rows(dataset, hp, [{"tokens": t, "val_loss": y} for t, y in points], 100)


@settings(deadline=None)
@given(scale=st.floats(0.3, 3.0), stop=st.integers(1, 9))
def test_a_reference_of_the_same_shape_predicts_exactly(scale, stop):
    """A partial curve that is a reference times a constant is predicted as the reference's end times it."""
    ref_points = [(t, 2.0 + 3.0 / (1 + t / 10)) for t in range(10, 101, 10)]
    ref = curve("other", HP, ref_points)
    partial = curve("d", HP, [(t, y * scale) for t, y in ref_points[:stop]])
    pred = fidelity.predict_final(partial, [ref])
    assert pred.value == pytest.approx(ref_points[-1][1] * scale, rel=1e-9) and pred.p_diverge == 0.0


@settings(deadline=None)
@given(share=st.floats(0.1, 1.2), start=st.floats(4.0, 8.0), stop=st.integers(1, 9))  # losses stay positive
def test_with_start_losses_a_run_makes_the_same_share_of_the_references_improvement(share, start, stop):
    """Curves with their step-0 loss: a run whose drop so far is `share` times the reference's ends `share` times
    the reference's whole drop below its own start, whatever its loss level."""
    ref_rows = [{"tokens": 0, "val_loss": 5.0}] + [{"tokens": t, "val_loss": 2.0 + 3.0 / (1 + t / 10)}
                                                   for t in range(10, 101, 10)]
    ref = fidelity.Curve.from_rows("other", HP, ref_rows, 100)
    rows = [{"tokens": r["tokens"], "val_loss": start - share * (5.0 - r["val_loss"])} for r in ref_rows[:stop + 1]]
    pred = fidelity.predict_final(fidelity.Curve.from_rows("d", HP, rows, 100), [ref])
    assert ref.start == 5.0 and pred.value == pytest.approx(start - share * (5.0 - ref_rows[-1]["val_loss"]), rel=1e-9)


def test_prediction_leans_on_the_references_of_the_same_learning_rate():
    low, high = {**HP, "learning_rate": 1e-4}, {**HP, "learning_rate": 1e-2}
    slow = [(t, 1.5 + 3.0 / (1 + t / 30)) for t in range(10, 101, 10)]  # slow, still falling at the end
    fast = [(t, 2.5 + 3.0 / (1 + t / 5)) for t in range(10, 101, 10)]  # fast, then flat
    refs = [curve("a", low, slow), curve("a", high, fast)]
    p_low = fidelity.predict_final(curve("d", low, slow[:2]), refs)
    p_high = fidelity.predict_final(curve("d", high, fast[:2]), refs)
    assert p_low.value == pytest.approx(slow[-1][1], rel=0.01) and p_high.value == pytest.approx(fast[-1][1], rel=0.01)
    assert p_low.value < p_high.value  # though the slow one is behind at the rung
    assert slow[1][1] > fast[1][1]


def test_references_that_diverged_make_a_divergence_likely():
    hot = {**HP, "learning_rate": 3e-2}
    diverged = curve("a", hot, [(10, 2.0), (20, 1.9)])  # stops short of the budget
    pred = fidelity.predict_final(curve("d", hot, [(10, 2.1)]), [diverged, curve("a", HP, [(10, 3), (100, 2)])])
    assert pred.p_diverge > 0.9


def test_no_usable_reference_gives_no_prediction():
    assert fidelity.predict_final(curve("d", HP, [(10, 2.0)]), []) is None
    assert fidelity.predict_final(curve("d", HP, []), [curve("a", HP, [(10, 3), (100, 2)])]) is None


def test_hp_distance_is_a_metric_on_shared_keys():
    a, b = HP, {**HP, "learning_rate": HP["learning_rate"] * 10, "target_modules": "attn"}
    assert fidelity.hp_distance(a, a) == 0 and fidelity.hp_distance(a, b) == fidelity.hp_distance(b, a)
    assert fidelity.hp_distance(a, b) == pytest.approx(math.sqrt(2))
    assert fidelity.hp_distance({"x": 1}, {"y": 1}) == math.inf


# --- promotion ----------------------------------------------------------------------------------------------

def rung_trial(i, loss, status="ok", hp=None, points=None):
    hp = hp or {**HP, "learning_rate": 1e-4 * (i + 1)}
    return fidelity.RungTrial(f"g{i}", f"g{i}", status, hp, loss if status == "ok" else None,
                              curve("d", hp, points or [(10, loss or 9.0)]), f"ckpt{i}")


def test_loss_promotion_keeps_the_lowest_and_records_why():
    trials = [rung_trial(0, 3.0), rung_trial(1, 2.0), rung_trial(2, 2.5), rung_trial(3, None, "diverged")]
    record = fidelity.promote(trials, 2, "loss", [])
    assert [s["from_run_id"] for s in record["configs"]] == ["g1", "g2"]
    assert [s["checkpoint"] for s in record["configs"]] == ["ckpt1", "ckpt2"]
    by_id = {r["run_id"]: r for r in record["ranking"]}
    assert by_id["g1"]["promoted"] and "ranks 1 of 4" in by_id["g1"]["reason"]
    assert not by_id["g0"]["promoted"] and "worse than the last promoted" in by_id["g0"]["reason"]
    assert not by_id["g3"]["promoted"] and "diverged" in by_id["g3"]["reason"]
    assert [r["rank"] for r in record["ranking"]] == [1, 2, 3, 4]


def test_slots_without_an_ok_trial_stay_vacant():
    record = fidelity.promote([rung_trial(0, 2.0), rung_trial(1, None, "failed")], 2, "loss", [])
    assert record["configs"][0]["hp"] is not None and record["configs"][1]["hp"] is None
    assert "only 1 ok" in record["configs"][1]["vacant"] and record["n_promoted"] == 1


@settings(deadline=None)
@given(losses=st.lists(st.one_of(st.none(), st.floats(0.1, 10.0)), min_size=1, max_size=30),
       n_promote=st.integers(1, 12))
def test_promotion_fills_a_fixed_count_of_slots_with_the_best_ok(losses, n_promote):
    trials = [rung_trial(i, x, "ok" if x is not None else "diverged") for i, x in enumerate(losses)]
    record = fidelity.promote(trials, n_promote, "loss", [])
    assert len(record["configs"]) == n_promote
    promoted = [s["from_run_id"] for s in record["configs"] if s["hp"] is not None]
    ok = sorted((x, f"g{i}") for i, x in enumerate(losses) if x is not None)
    assert promoted == [run_id for _, run_id in ok[:n_promote]]
    assert sum(r["promoted"] for r in record["ranking"]) == len(promoted)


def test_learned_promotion_keeps_the_slow_starter_that_loss_promotion_drops():
    low, high = {**HP, "learning_rate": 1e-4}, {**HP, "learning_rate": 1e-2}
    slow = [(t, 1.5 + 3.0 / (1 + t / 30)) for t in range(10, 101, 10)]
    fast = [(t, 2.5 + 3.0 / (1 + t / 5)) for t in range(10, 101, 10)]
    refs = [curve("a", low, slow), curve("a", high, fast)]
    trials = [rung_trial(0, slow[1][1], hp=low, points=slow[:2]), rung_trial(1, fast[1][1], hp=high, points=fast[:2])]
    assert fidelity.promote(trials, 1, "loss", refs)["configs"][0]["from_run_id"] == "g1"
    learned = fidelity.promote(trials, 1, "learned", refs)
    assert learned["configs"][0]["from_run_id"] == "g0"
    assert "predicted full-budget loss" in learned["ranking"][0]["reason"]


def test_a_trials_own_curve_is_no_reference_for_it():
    hp = {**HP, "learning_rate": 1e-4}
    own = curve("d", hp, [(10, 5.0), (100, 0.1)])
    record = fidelity.promote([rung_trial(0, 5.0, hp=hp, points=[(10, 5.0)])], 1, "learned", [own])
    assert record["ranking"][0]["predicted_final"] is None


# --- curves files, checkpoints, history ---------------------------------------------------------------------

def test_read_curves_names_a_broken_line(tmp_path):
    path = tmp_path / "curves.jsonl"
    good = {"dataset": "a", "hp": HP, "token_budget": 100, "curve": [{"tokens": 100, "val_loss": 2.0}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"dataset": "b"}) + "\n")
    with pytest.raises(DataError, match="line 2"):
        fidelity.read_curves([path])


def test_link_checkpoint_is_a_link_and_replaces(tmp_path):
    src = tmp_path / "a.ckpt"
    src.write_bytes(b"state")
    target = tmp_path / "resume" / "slot0.ckpt"
    fidelity.link_checkpoint(src, target)
    fidelity.link_checkpoint(src, target)  # a rerun of the promote job
    assert target.read_bytes() == b"state" and target.stat().st_ino == src.stat().st_ino
    src.unlink()  # the rung's checkpoint is a temp file: the slot keeps the data
    assert target.read_bytes() == b"state"


def test_the_optimizer_sees_each_configuration_once_at_its_furthest_rung():
    base = {"stage": "stage1", "dataset": "d", "status": "ok", "hp": HP, "config_id": "gA"}
    records = [{**base, "run_id": "gA", "rung": 0, "val_loss": 3.0, "partial": True},
               {**base, "run_id": "rung1-0", "rung": 1, "val_loss": 2.5, "partial": True},
               {**base, "run_id": "gB", "rung": 0, "val_loss": 4.0, "partial": True, "config_id": "gB"},
               {**base, "run_id": "r1-0", "stage": "stage2", "rung": None, "val_loss": 2.0, "partial": False}]
    assert sorted(m["run_id"] for m in fidelity.furthest_rungs(records)) == ["gB", "r1-0", "rung1-0"]
    assert [m["run_id"] for m in fidelity.full_budget(records)] == ["r1-0"]
    rows = history.history_rows(records, {"learning_rate": {}})
    assert len(rows) == 3


# --- the config section -------------------------------------------------------------------------------------

def base_config(**overrides):
    cfg = {"datasets": [{"name": "a", "source": {"kind": "builtin", "generator": "arithmetic"}}],
           "training": {"mode": "simulated"}}
    return {**cfg, **overrides}


def test_config_without_fidelity_has_no_rungs():
    assert config.validate(base_config())["fidelity"] is None


def test_config_fidelity_defaults_are_filled():
    assert config.validate(base_config(fidelity={}))["fidelity"] == {
        "eta": 3, "min_fraction": 0.111, "promotion": "auto", "keep_checkpoints": False, "prior_curves": []}


@pytest.mark.parametrize("overrides, key", [
    ({"fidelity": {"eta": 1}}, "fidelity.eta"),
    ({"fidelity": {"speed": 2}}, "fidelity"),
    ({"fidelity": {}, "training": {"mode": "external", "external_command": "x {metrics_path}"}}, "fidelity"),
    ({"fidelity": {}, "stage1": {"design": "factorial", "token_budget": 1000}, "stage2": {"rounds": 0},
      "rerun": {"top_k": 7}}, "rerun.top_k"),  # 48 grid points: 48, 16, 6 at the full budget
])
def test_bad_fidelity_config_names_the_key(overrides, key):
    with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
        config.validate(base_config(**overrides))
