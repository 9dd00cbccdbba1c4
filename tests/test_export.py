"""runs.csv: the columns docs/tables.md documents, typed the same whatever the statuses, and the placement and
time fields every trial records at the source (its spec and metrics.json), never parsed out of run ids."""

import dataclasses
import json
import re
from datetime import UTC, datetime

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from metatune import export, trial
from metatune.contract import MetricsError, TrialSpec, validate_metrics

SPACE = {"learning_rate": {"type": "log_float", "low": 1e-5, "high": 1e-2, "grid": [1e-4]},
         "lora_r": {"type": "int", "low": 1, "high": 64, "log": True, "grid": [8, 16]},
         "target_modules": {"type": "categorical", "choices": ["attn", "attn_mlp"], "grid": ["attn"]}}
METAFEATURES = {"d": {"token_entropy": 3.5, "log10_tokens": 5.0}, "e": {"token_entropy": 4.5, "log10_tokens": 6.0}}
DOC_TYPES = {"string": "str", "integer": "Int64", "float": "float64", "timestamp": "str"}


def documented_runs_columns() -> list[tuple[str, str]]:
    """(column, type) of the runs.csv table in docs/tables.md."""
    text = (ROOT / "docs" / "tables.md").read_text()
    section = text.split("## runs.csv", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \| ([^|]+?) \|", section, flags=re.MULTILINE)


def expand(documented: list[tuple[str, str]], space: dict, metafeature_names: list[str]) -> list[str]:
    out = []
    for name, _ in documented:
        if name == "hp_<name>":
            out += [f"hp_{k}" for k in space]
        elif name == "mf_<name>":
            out += [f"mf_{k}" for k in sorted(metafeature_names)]
        else:
            out.append(name)
    return out


def metrics(run_id, stage="stage1", dataset="d", status="ok", **kw) -> dict:
    ok = status == "ok"
    m = {"run_id": run_id, "stage": stage, "dataset": dataset, "status": status, "seed": 0,
         "hp": {"learning_rate": 1e-4, "lora_r": 8, "target_modules": "attn"},
         "val_loss": 2.5 if ok else None, "best_val_loss": 2.4 if ok else None, "train_loss": 2.3 if ok else None,
         "tokens_seen": 1000, "wall_s": 1.5, "gpu_hours": 0.0, "peak_mem_mb": None, "token_budget": 1000,
         "seq_len": 64, "device": "cpu", "trainer": "simulated", "error": None if ok else "diverged: nan loss",
         "versions": {}, "round": None, "rank": None, "seed_index": None, "source_trial_id": None,
         "started_at": "2026-01-01T00:00:00.000001+00:00", "finished_at": "2026-01-01T00:00:01.000001+00:00"}
    m.update(kw)
    return validate_metrics(m)


def sweep(statuses: list[str]) -> list[dict]:
    out = []
    for i, status in enumerate(statuses):
        out.append(metrics(f"g{i}", status=status))
        out.append(metrics(f"r1-{i}", stage="stage2", dataset="e", status=status, round=1))
        out.append(metrics(f"top1-seed{i + 1}", stage="rerun", status=status, rank=1, seed_index=i + 1,
                           source_trial_id="d/stage1/g0"))
    return out


def write_runs(path, ms):
    export.write_csv(path, *export.runs_table(ms, SPACE, METAFEATURES, ["d", "e"]))
    return path


def test_header_is_the_documented_table_exactly(tmp_path):
    documented = documented_runs_columns()
    assert documented, "docs/tables.md has no runs.csv table"
    path = write_runs(tmp_path / "runs.csv", sweep(["ok"]))
    header = path.read_text().splitlines()[0].split(",")
    assert header == expand(documented, SPACE, list(METAFEATURES["d"]))
    # ... and each documented type is the dtype runs.csv is read with
    fixed = {**export.RUNS_LEADING, **export.RUNS_TRAILING}
    for name, kind in documented:
        if name in fixed:
            assert DOC_TYPES[kind] == fixed[name], f"{name}: documented as {kind}, read as {fixed[name]}"


def test_sweeps_with_and_without_failures_concatenate_with_the_same_dtypes(tmp_path):
    clean = export.read_runs(write_runs(tmp_path / "clean.csv", sweep(["ok", "ok"])))
    failing = export.read_runs(write_runs(tmp_path / "failing.csv", sweep(["ok", "diverged"])))
    assert clean["error"].isna().all() and failing["error"].notna().any()
    assert dict(clean.dtypes) == dict(failing.dtypes)
    both = pd.concat([clean, failing], ignore_index=True)
    assert dict(both.dtypes) == dict(clean.dtypes)
    assert pd.api.types.is_string_dtype(both["error"]) and str(both["round"].dtype) == "Int64"
    assert both["trial_id"].map(type).eq(str).all()


def test_placement_columns_are_typed_and_the_rerun_links_its_source(tmp_path):
    runs = export.read_runs(write_runs(tmp_path / "runs.csv", sweep(["ok", "ok"])))
    rerun = runs[runs["stage"].eq("rerun")]
    assert list(rerun["rank"]) == [1, 1] and list(rerun["seed_index"]) == [1, 2]
    assert set(rerun["source_trial_id"]) == {"d/stage1/g0"} and "d/stage1/g0" in set(runs["trial_id"])
    assert runs.loc[runs["stage"].eq("stage2"), "round"].eq(1).all()
    assert runs.loc[runs["stage"].eq("stage1"), ["round", "rank", "seed_index"]].isna().all().all()
    assert runs["trial_id"].is_unique


def test_run_ids_that_repeat_across_datasets_get_distinct_trial_ids(tmp_path):
    ms = [metrics("g1", dataset="d"), metrics("g1", dataset="e"), metrics("g1", stage="stage2", round=1)]
    runs = export.read_runs(write_runs(tmp_path / "runs.csv", ms))
    assert sorted(runs["trial_id"]) == ["d/stage1/g1", "d/stage2/g1", "e/stage1/g1"]


MAYBE_FLOAT = st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ok", "diverged", "oom", "failed"]), MAYBE_FLOAT, MAYBE_FLOAT,
                          st.one_of(st.none(), st.text(min_size=1, max_size=20))), min_size=1, max_size=6))
def test_any_mix_of_statuses_reads_back_with_the_documented_dtypes(tmp_path_factory, trials):
    ms = []
    for i, (status, train_loss, peak, error) in enumerate(trials):
        ms.append(metrics(f"g{i}", status=status, train_loss=train_loss, peak_mem_mb=peak,
                          error=error if status == "ok" else error or "why"))
    path = write_runs(tmp_path_factory.mktemp("runs") / "runs.csv", ms)
    runs = export.read_runs(path)
    for column, dtype in {**export.RUNS_LEADING, **export.RUNS_TRAILING}.items():
        if dtype == "str":
            assert pd.api.types.is_string_dtype(runs[column]), column
        else:
            assert str(runs[column].dtype) == dtype, column
    written = [(m["error"] or "").replace("\r\n", "\n").replace("\r", "\n") for m in ms]
    assert list(runs["error"].fillna("")) == written  # one row per trial; text as written, line breaks as \n


def test_a_carriage_return_in_an_error_stays_inside_its_row(tmp_path):
    ms = [metrics("g1", status="failed", error="step 10/100\rstep 20/100\r\nKilled"), metrics("g2")]
    runs = export.read_runs(write_runs(tmp_path / "runs.csv", ms))
    assert list(runs["run_id"]) == ["g1", "g2"] and runs["error"].iloc[0] == "step 10/100\nstep 20/100\nKilled"


def test_a_rerun_with_nothing_changed_writes_the_same_bytes(tmp_path):
    a = write_runs(tmp_path / "a.csv", sweep(["ok", "failed"])).read_bytes()
    assert write_runs(tmp_path / "b.csv", list(reversed(sweep(["ok", "failed"])))).read_bytes() == a


# The placement and time fields, recorded where every trainer's metrics pass through.

def spec(tmp_path, **kw) -> TrialSpec:
    (tmp_path / "mf.json").write_text(json.dumps({"log10_tokens": 5.0, "token_entropy": 4.0, "compression_ratio": 0.4}))
    hp = {"learning_rate": 5e-4, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "batch_size": 16,
          "warmup_ratio": 0.05, "weight_decay": 0.0, "target_modules": "attn_mlp"}
    kw.setdefault("hp", hp)
    return TrialSpec(run_id="top2-seed3", stage="rerun", dataset="d", seed=1003, token_budget=100_000,
                     seq_len=64, train_path="", val_path="", metafeatures_path=str(tmp_path / "mf.json"),
                     out_dir=str(tmp_path / "out"), trainer="simulated", settings={"simulated": {"noise": 0.0}}, **kw)


def test_the_runner_records_when_the_trial_ran_and_where_it_sits(tmp_path):
    before = datetime.now(UTC)
    m = trial.run(spec(tmp_path, rank=2, seed_index=3, source_trial_id="d/stage2/r1-0"))
    after = datetime.now(UTC)
    started, finished = (datetime.fromisoformat(m[k]) for k in ("started_at", "finished_at"))
    assert started.utcoffset().total_seconds() == 0 and before <= started < finished <= after
    assert (m["round"], m["rank"], m["seed_index"], m["source_trial_id"]) == (None, 2, 3, "d/stage2/r1-0")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == m


def test_a_failing_trainer_still_records_its_times(tmp_path):
    broken = dataclasses.replace(spec(tmp_path), metafeatures_path=str(tmp_path / "missing.json"))
    m = trial.run(broken)
    assert m["status"] == "failed" and "missing.json" in m["error"] and m["started_at"] <= m["finished_at"]


def test_the_trial_cli_carries_the_round_and_the_reruns_source(tmp_path):
    hp = spec(tmp_path).hp
    (tmp_path / "selection.json").write_text(json.dumps(
        {"configs": [{"rank": 1, "hp": hp, "source_run_id": "r2-1", "source_stage": "stage2"}]}))
    (tmp_path / "proposals.json").write_text(json.dumps({"configs": [{"hp": hp}]}))
    settings_json = {"base_seed": 0, "token_budget": 1000, "seq_len": 8, "trainer": "simulated",
                     "training": {"simulated": {"noise": 0.0}}, "save_adapter": False,
                     "train_path": "{dataset}/train.bin", "val_path": "{dataset}/val.bin"}

    def run(stage, run_id, *args) -> dict:
        out = tmp_path / stage / run_id / "metrics.json"
        assert trial.main(["--stage-settings", json.dumps({**settings_json, "stage": stage}), "--dataset", "d",
                           "--run-id", run_id, "--metafeatures", str(tmp_path / "mf.json"), "--metrics", str(out),
                           *args]) == 0
        return json.loads(out.read_text())

    rerun = run("rerun", "top1-seed2", "--hp-file", str(tmp_path / "selection.json"), "--hp-rank", "1",
                "--seed-index", "2")
    placement = (rerun["rank"], rerun["seed_index"], rerun["round"], rerun["source_trial_id"])
    assert placement == (1, 2, None, "d/stage2/r2-1")
    proposed = run("stage2", "r4-0", "--hp-file", str(tmp_path / "proposals.json"), "--hp-index", "0", "--round", "4")
    assert (proposed["round"], proposed["rank"], proposed["source_trial_id"]) == (4, None, None)


@pytest.mark.parametrize("bad, message", [
    ({"started_at": "yesterday"}, "started_at: expected an ISO-8601 time"),
    ({"finished_at": "2026-01-01T00:00:00"}, "has no UTC offset"),
    ({"finished_at": "2025-12-31T23:59:59+00:00"}, "is before started_at"),
    ({"round": "1"}, "round: expected a non-negative integer"),
    ({"rank": True}, "rank: expected a non-negative integer"),
    ({"seed_index": -1}, "seed_index: expected a non-negative integer"),
    ({"source_trial_id": 3}, "source_trial_id: expected a string"),
])
def test_bad_placement_or_times_are_named(bad, message):
    with pytest.raises(MetricsError, match=message):
        metrics("g1", **bad)


def test_metrics_from_before_the_times_were_recorded_still_export(tmp_path):
    old = metrics("g1")
    for k in ("round", "rank", "seed_index", "source_trial_id", "started_at", "finished_at"):
        del old[k]
    runs = export.read_runs(write_runs(tmp_path / "runs.csv", [validate_metrics(old)]))
    assert runs[["round", "started_at"]].isna().all().all()
