"""The sweep's library parts: grid and trial ids, the simulated and external trainers, selection, export."""

import json
import math
import stat
import sys
import time
from pathlib import Path

import pytest

from metatune import config, export, history, select, space, trial
from metatune.contract import MetricsError, TrialSpec, validate_metrics
from metatune.io import DataError
from metatune.trainers import simulated

SPACE = config.validate({"datasets": [{"name": "m", "source": {"kind": "builtin", "generator": "markov"}}]})["space"]
MF = {"log10_tokens": 6.0, "token_entropy": 7.0, "compression_ratio": 0.3}
BASE_HP = {"learning_rate": 5e-4, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "batch_size": 16,
           "warmup_ratio": 0.05, "weight_decay": 0.0, "target_modules": "attn_mlp"}


def spec(tmp_path, hp=None, trainer="simulated", settings=None, seed=0, run_id="g0", dataset="d", **kw):
    mf_path = tmp_path / "mf.json"
    mf_path.write_text(json.dumps(MF))
    return TrialSpec(run_id=run_id, stage="stage1", dataset=dataset, seed=seed, hp=hp or BASE_HP, token_budget=400_000,
                     seq_len=256, train_path=str(tmp_path / "train.bin"), val_path=str(tmp_path / "val.bin"),
                     metafeatures_path=str(mf_path), out_dir=str(tmp_path / "out" / run_id), trainer=trainer,
                     settings={"timeout_s": 10, "simulated": {"noise": 0.01}, **(settings or {})}, **kw)


# --- grid ---------------------------------------------------------------------------------------------------

def test_factorial_ids_are_stable_when_the_grid_grows():
    before = space.stage1_configs(SPACE, "factorial", None, 0)
    assert len(before) == math.prod(len(p["grid"]) for p in SPACE.values())
    bigger = {**SPACE, "lora_r": {**SPACE["lora_r"], "grid": [*SPACE["lora_r"]["grid"], 64]}}
    after = space.stage1_configs(bigger, "factorial", None, 0)
    assert set(before) < set(after)
    assert all(after[k] == v for k, v in before.items())


@pytest.mark.parametrize("design", ["sobol", "lhs"])
def test_space_filling_subset(design):
    a = space.stage1_configs(SPACE, design, 10, seed=3)
    assert len(a) == 10 and a == space.stage1_configs(SPACE, design, 10, seed=3)
    grid = {space.canonical_hp(hp) for hp in space.Space.parse(SPACE).factorial()}
    assert all(space.canonical_hp(hp) in grid for hp in a.values())
    # space-filling: every learning-rate grid value is used
    assert {hp["learning_rate"] for hp in a.values()} == set(SPACE["learning_rate"]["grid"])


def test_types_are_coerced():
    hp = space.Space.parse(SPACE).coerce({**BASE_HP, "lora_r": 16.0, "learning_rate": 1})
    assert type(hp["lora_r"]) is int and type(hp["learning_rate"]) is float


# --- simulated trainer ---------------------------------------------------------------------------------------

def sim_loss(tmp_path, mf=MF, seed=0, noise=0.0, **hp):
    s = spec(tmp_path, hp={**BASE_HP, **hp}, seed=seed, settings={"simulated": {"noise": noise}})
    return simulated.simulate(s, mf)


def best_lr(tmp_path, mf=MF, rslora=False, **hp):
    lrs = [10 ** (x / 10) for x in range(-50, -15)]
    settings = {"simulated": {"noise": 0.0, "rslora": rslora}}
    losses = {}
    for lr in lrs:
        o = simulated.simulate(spec(tmp_path, hp={**BASE_HP, **hp, "learning_rate": lr}, settings=settings), mf)
        losses[lr] = o.val_loss if o.status == "ok" else math.inf
    return min(losses, key=losses.get)


def test_simulated_optimum_is_about_ten_times_full_fine_tuning(tmp_path):
    lr = best_lr(tmp_path)
    assert 3 * simulated.FULL_FT_LR <= lr <= 30 * simulated.FULL_FT_LR


def test_simulated_optimum_moves_with_dataset_size_and_entropy(tmp_path):
    small = best_lr(tmp_path, mf={**MF, "log10_tokens": 5.0})
    large = best_lr(tmp_path, mf={**MF, "log10_tokens": 8.0})
    assert large < small
    assert best_lr(tmp_path, mf={**MF, "token_entropy": 10.0}) < best_lr(tmp_path, mf={**MF, "token_entropy": 4.0})


def test_simulated_optimum_is_rank_independent_with_fixed_alpha_but_not_with_rslora(tmp_path):
    assert best_lr(tmp_path, lora_r=4) == best_lr(tmp_path, lora_r=64)
    assert best_lr(tmp_path, rslora=True, lora_r=64) < best_lr(tmp_path, rslora=True, lora_r=4)


def test_simulated_rank_matters_only_for_large_datasets(tmp_path):
    small, large = {**MF, "log10_tokens": 5.0}, {**MF, "log10_tokens": 8.5}
    gap_small = sim_loss(tmp_path, small, lora_r=4).val_loss - sim_loss(tmp_path, small, lora_r=64).val_loss
    gap_large = sim_loss(tmp_path, large, lora_r=4).val_loss - sim_loss(tmp_path, large, lora_r=64).val_loss
    assert abs(gap_small) < 0.03 < gap_large


def test_simulated_large_batches_hurt_and_dropout_helps_small_data(tmp_path):
    assert sim_loss(tmp_path, batch_size=256).val_loss > sim_loss(tmp_path, batch_size=16).val_loss
    small = {**MF, "log10_tokens": 5.0}
    assert sim_loss(tmp_path, small, lora_dropout=0.1).val_loss < sim_loss(tmp_path, small, lora_dropout=0.0).val_loss


def test_simulated_divergence_and_noise(tmp_path):
    out = sim_loss(tmp_path, learning_rate=0.5)
    assert out.status == "diverged" and out.val_loss is None and "NaN" in out.error
    losses = [sim_loss(tmp_path, seed=s, noise=0.01).val_loss for s in range(40)]
    rel = (max(losses) - min(losses)) / (sum(losses) / len(losses))
    assert 0.01 < rel < 0.1  # about 1% standard deviation
    assert sim_loss(tmp_path, seed=3, noise=0.01).val_loss == sim_loss(tmp_path, seed=3, noise=0.01).val_loss


def test_simulated_learning_curve_falls(tmp_path):
    curve = sim_loss(tmp_path).curve
    assert len(curve) == simulated.N_CURVE_POINTS
    assert curve[0]["val_loss"] > curve[-1]["val_loss"]
    assert curve[-1]["tokens"] <= 400_000


def test_simulated_trial_imports_no_torch(tmp_path):
    import subprocess

    s = spec(tmp_path)
    code = ("import sys, json; from metatune import trial; from metatune.contract import TrialSpec; "
            f"trial.run(TrialSpec(**json.loads({json.dumps(json.dumps(s.__dict__))}))); "
            "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- trial runner and contract -------------------------------------------------------------------------------

def test_runner_writes_valid_metrics_and_curve(tmp_path):
    m = trial.run(spec(tmp_path))
    out = tmp_path / "out" / "g0"
    assert validate_metrics(json.loads((out / "metrics.json").read_text())) == m
    assert (out / "curve.csv").read_text().startswith("step,tokens,train_loss,val_loss\n")
    assert m["versions"]["metatune"] and m["status"] == "ok" and m["device"] == "simulated"


def test_contract_rejects_bad_metrics():
    good = trial.metrics_record(TrialSpec("r", "stage1", "d", 0, {}, 1, 8, "", "", "", "", "simulated"),
                                simulated.TrialOutcome(status="ok", val_loss=1.0))
    validate_metrics(good)
    for broken, msg in [({**good, "status": "weird"}, "status"), ({**good, "val_loss": None}, "val_loss"),
                        ({**good, "val_loss": math.nan}, "val_loss"), ({**good, "status": "failed"}, "error"),
                        ({k: v for k, v in good.items() if k != "seed"}, "missing")]:
        with pytest.raises(MetricsError, match=msg):
            validate_metrics(broken)


# --- external trainer ----------------------------------------------------------------------------------------

def script(tmp_path, body: str) -> str:
    p = tmp_path / "trainer.py"
    p.write_text(body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return (f"{sys.executable} {p} --run {{run_id}} --hp {{hp_json}} --metrics {{metrics_path}}"
            " --budget {token_budget}")


PARSE = "import argparse, json, sys, time\np = argparse.ArgumentParser()\n" + "".join(
    f"p.add_argument('--{a}')\n" for a in ("run", "hp", "metrics", "budget")) + "a = p.parse_args()\n"


@pytest.mark.parametrize("body,status,reason", [
    (PARSE + "hp = json.loads(a.hp)\n"
             "json.dump({'val_loss': 2.5 - hp['learning_rate'], 'gpu_hours': 0.1, 'peak_mem_mb': 900},"
             " open(a.metrics, 'w'))\n", "ok", None),
    (PARSE + "print('CUDA error: device-side assert', file=sys.stderr); sys.exit(3)\n", "failed",
     "exit code 3: CUDA error"),
    (PARSE + "time.sleep(60)\n", "failed", "timeout after 2 s"),
    (PARSE + "open(a.metrics, 'w').write('{\"val_loss\": 1.2')\n", "failed", "not valid JSON"),
    (PARSE + "open(a.metrics, 'w').write('[1, 2]')\n", "failed", "not a JSON object"),
    (PARSE + "json.dump({'loss': 1.0}, open(a.metrics, 'w'))\n", "failed", "no val_loss"),
    (PARSE + "json.dump({'val_loss': 'low'}, open(a.metrics, 'w'))\n", "failed", "val_loss must be a number"),
    (PARSE + "pass\n", "failed", "wrote no metrics file"),
    (PARSE + "open(a.metrics, 'w').write('{\"val_loss\": NaN}')\n", "diverged", "non-finite"),
    (PARSE + "json.dump({'status': 'oom', 'error': 'caught OOM at micro-batch 1'}, open(a.metrics, 'w'))\n", "oom",
     "caught OOM"),
    (PARSE + "json.dump({'status': 'great', 'val_loss': 1.0}, open(a.metrics, 'w'))\n", "failed",
     "unknown status 'great'"),
    (PARSE + "sys.exit('RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB')\n", "oom",
     "CUDA out of memory"),
])
def test_external_trainer_outcomes(tmp_path, body, status, reason):
    s = spec(tmp_path, trainer="external", settings={"external_command": script(tmp_path, body), "timeout_s": 2})
    start = time.monotonic()
    m = trial.run(s)
    assert time.monotonic() - start < 15
    assert m["status"] == status, m
    if reason:
        assert reason in m["error"], m["error"]
    else:
        assert m["val_loss"] == pytest.approx(2.5 - 5e-4) and m["gpu_hours"] == 0.1 and m["peak_mem_mb"] == 900


def test_external_timeout_kills_the_whole_process_group(tmp_path):
    marker = tmp_path / "still-alive"
    body = PARSE + f"import subprocess\nsubprocess.Popen(['sh', '-c', 'sleep 4; touch {marker}'])\ntime.sleep(60)\n"
    s = spec(tmp_path, trainer="external", settings={"external_command": script(tmp_path, body), "timeout_s": 1})
    assert trial.run(s)["status"] == "failed"
    time.sleep(5)
    assert not marker.exists()


def test_hp_comes_from_a_proposals_file(tmp_path):
    p = tmp_path / "proposals.json"
    p.write_text(json.dumps({"configs": [{"hp": {"a": 1}}, {"hp": {"a": 2}}]}))
    assert trial.config_entry(None, str(p), 1)["hp"] == {"a": 2}
    with pytest.raises(ValueError, match="no configuration at index 5"):
        trial.config_entry(None, str(p), 5)


def test_collections_keep_every_trial_and_name_a_bad_one(tmp_path):
    paths = []
    for run_id in ("g1", "g2"):
        trial.run(spec(tmp_path, run_id=run_id))
        paths.append(tmp_path / "out" / run_id / "metrics.json")
    collection = tmp_path / "stage1.jsonl"
    assert history.write_collection(collection, paths) == 2
    collected = history.read_collections([collection])
    assert [(Path(t.path), t.metrics) for t in collected] == [(p, json.loads(p.read_text())) for p in paths]
    paths[1].write_text('{"run_id": "g2"}')  # a trainer's output that breaks the contract
    with pytest.raises(DataError, match=f"{paths[1]}: not a valid metrics.json"):
        history.write_collection(tmp_path / "again.jsonl", paths)
    assert history.read_collections([collection]) == collected  # the collection already written is untouched
    collection.write_text(collection.read_text() + '{"path": "x"}\n')
    with pytest.raises(DataError, match=f"{collection}: record 3: not a collected trial"):
        history.read_collections([collection])


# --- selection and export ------------------------------------------------------------------------------------

def metrics(run_id, loss, status="ok", hp=None, stage="stage1", dataset="d"):
    return {"run_id": run_id, "stage": stage, "dataset": dataset, "status": status, "val_loss": loss,
            "hp": hp or {"lr": run_id}, "seed": 0}


def test_select_top_k_distinct_ok_configs():
    ms = [metrics("a", 1.0), metrics("b", 0.5, hp={"lr": "a"}), metrics("c", 0.2, status="diverged"),
          metrics("d", 0.7), metrics("e", None, status="failed")]
    sel = select.select_top(ms, 2)
    assert [c["source_run_id"] for c in sel["configs"]] == ["b", "d"]  # a duplicates b's config
    assert sel["excluded"] == {"diverged": 1, "failed": 1}
    with pytest.raises(ValueError, match="only 2 distinct ok configurations"):
        select.select_top(ms, 3)


def test_rerun_summary_statistics_and_winner():
    sel = {"configs": [{"rank": r, "hp": {"x": r}, "source_run_id": n, "source_stage": "stage1", "val_loss": 1.0}
                       for r, n in ((1, "a"), (2, "b"))]}
    ms = [{**metrics(f"top{r}-seed{s}", loss, hp={"x": r}, status="ok" if loss else "diverged"), "seed": 1000 + s}
          for r, losses in ((1, (1.0, 1.2, 1.1)), (2, (0.9, 0.95, None))) for s, loss in enumerate(losses, start=1)]
    rows = select.summarize_reruns(ms, sel)
    assert rows[0]["mean_val_loss"] == pytest.approx(1.1) and rows[0]["std_val_loss"] == pytest.approx(0.1)
    assert rows[0]["ci95_high"] - rows[0]["mean_val_loss"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert rows[1]["n_failed"] == 1
    assert rows[0]["winner"] and not rows[1]["winner"]  # a config with a diverged seed cannot win


def test_runs_table_order_and_bytes(tmp_path):
    ms = [metrics("r2-10", 1.0, stage="stage2", hp=BASE_HP), metrics("r2-9", 1.0, stage="stage2", hp=BASE_HP),
          metrics("g1", 1.0, hp=BASE_HP, dataset="z"), metrics("g2", 0.1 + 0.2, hp=BASE_HP)]
    for m in ms:
        m.update({k: None for k in ("best_val_loss", "train_loss", "peak_mem_mb", "error")},
                 tokens_seen=1, wall_s=0.5, gpu_hours=0.0, device="cpu", trainer="simulated", token_budget=1, seq_len=8)
    cols, rows = export.runs_table(ms, SPACE, {"d": {"a": 1.5}, "z": {"a": 2.5}}, ["z", "d"])
    assert [r["run_id"] for r in rows] == ["g1", "g2", "r2-9", "r2-10"]
    export.write_csv(tmp_path / "a.csv", cols, rows)
    text = (tmp_path / "a.csv").read_text()
    assert "0.30000000000000004" in text  # floats round-trip exactly
    export.write_csv(tmp_path / "b.csv", cols, rows)
    assert (tmp_path / "b.csv").read_bytes() == text.encode()
