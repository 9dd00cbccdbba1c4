"""The workflow itself: the DAG, config errors before any job, an end-to-end tiny sweep, determinism, resume,
the external trainer inside the sweep, the data stage on real data, and the workflow's hygiene checks."""

import base64
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from conftest import ROOT, job_counts, run_snakemake, without_clock

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
TRIALS_PER_DATASET = 4 + 2 * 2 + 2 * 3


def tiny(tmp_path: Path, **overrides) -> Path:
    cfg = yaml.safe_load(TINY.read_text())
    cfg.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_dry_run_shows_every_job(tmp_path):
    out = run_snakemake(tmp_path, "-n", "--configfile", str(TINY)).stdout
    counts = job_counts(out)
    assert counts == {
        "prefetch_dataset": 2, "normalize": 2, "metafeatures": 2, "nanogpt_bins": 2, "nanogpt_table": 1,
        "trial_stage1": 8, "collect_stage1": 2, "stage1_history": 1, "propose": 4, "trial_stage2": 8,
        "collect_round": 4, "select": 2, "trial_rerun": 12, "collect_reruns": 2, "export": 1, "summarize_reruns": 1,
        "recommend": 2, "plot_landscape": 2, "plot_search": 1, "plot_reruns": 1, "plot_transfer": 1, "plot_cost": 1,
        "summary": 1, "optuna_journal": 1, "optuna_live": 4, "optuna_live_round": 4, "all": 1, "total": 73,
    }
    assert not (tmp_path / "results").exists()


def test_named_targets_stop_at_their_stage(tmp_path):
    counts = job_counts(run_snakemake(tmp_path, "stage1", "-n", "--configfile", str(TINY)).stdout)
    assert counts["trial_stage1"] == 8 and "propose" not in counts and "trial_rerun" not in counts
    counts = job_counts(run_snakemake(tmp_path, "prepare_nanogpt_data", "-n", "--configfile", str(TINY)).stdout)
    assert counts["nanogpt_bins"] == 2 and "trial_stage1" not in counts
    counts = job_counts(run_snakemake(tmp_path, "prefetch", "-n", "--configfile", str(TINY)).stdout)
    assert set(counts) == {"prefetch_dataset", "prefetch", "total"}


def test_bad_config_stops_before_any_job(tmp_path):
    proc = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(tiny(tmp_path, stage2={"rounds": -2})),
                         check=False)
    assert proc.returncode != 0
    assert "invalid config: stage2.rounds: -2 is less than the minimum of 0" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_tiny_sweep_end_to_end(tiny_sweep):
    rows = read_csv(tiny_sweep / "results" / "tables" / "runs.csv")
    assert len(rows) == 2 * TRIALS_PER_DATASET
    assert [r["stage"] for r in rows[:8]] == ["stage1"] * 8 and rows[-1]["stage"] == "rerun"
    assert {r["status"] for r in rows} <= {"ok", "diverged"}
    assert {"hp_learning_rate", "hp_target_modules", "val_loss", "gpu_hours", "mf_token_entropy"} <= set(rows[0])
    proposals = json.loads((tiny_sweep / "results" / "stage2" / "arith" / "round2" / "proposals.json").read_text())
    assert proposals["method"] == "tpe" and len(proposals["configs"]) == 2
    assert proposals["n_target_history"] == 4 + 2  # stage 1 and round 1 of its own dataset
    selection = json.loads((tiny_sweep / "results" / "rerun" / "markov" / "selection.json").read_text())
    assert [c["rank"] for c in selection["configs"]] == [1, 2]
    best = read_csv(tiny_sweep / "results" / "tables" / "best.csv")
    assert len(best) == 4 and sum(r["winner"] == "True" for r in best) == 2
    for r in best:
        assert float(r["ci95_low"]) <= float(r["mean_val_loss"]) <= float(r["ci95_high"])
    table = read_csv(tiny_sweep / "results" / "tables" / "nanogpt_datasets.csv")
    assert [r["dataset"] for r in table] == ["arith", "markov"]


def test_rerun_with_nothing_changed_does_nothing(tiny_sweep):
    runs = tiny_sweep / "results" / "tables" / "runs.csv"
    before = (runs.read_bytes(), runs.stat().st_mtime_ns)
    out = run_snakemake(tiny_sweep, "--cores", "2", "--configfile", str(TINY))
    assert "Nothing to be done" in out.stdout + out.stderr
    assert (runs.read_bytes(), runs.stat().st_mtime_ns) == before


def test_same_config_and_seeds_give_the_same_bytes(tiny_sweep, tmp_path):
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(TINY))
    for table in ("best.csv", "nanogpt_datasets.csv"):
        assert ((tmp_path / "results" / "tables" / table).read_bytes()
                == (tiny_sweep / "results" / "tables" / table).read_bytes())
    assert without_clock(tmp_path / "results/tables/runs.csv") == without_clock(tiny_sweep / "results/tables/runs.csv")


def test_killed_sweep_resumes_without_redoing_or_losing_anything(tiny_sweep, tmp_path):
    cmd = ["snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(TINY),
           "--cores", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    trials = tmp_path / "results" / "trials"
    while len(list(trials.glob("*/*/*/metrics.json"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole tree, as a preempted job or a lost session would
    proc.wait()
    # Finished: Snakemake recorded the job as done. A job killed after its trainer wrote metrics.json but before
    # Snakemake saw it end still carries an incomplete marker, and --rerun-incomplete rightly runs it again.
    incomplete = {base64.b64decode(m.name).decode() for m in (tmp_path / ".snakemake" / "incomplete").glob("*")}
    finished = {p: p.stat().st_mtime_ns for p in trials.glob("*/*/*/metrics.json")
                if str(p.relative_to(tmp_path)) not in incomplete}
    assert 4 <= len(finished) < 2 * TRIALS_PER_DATASET
    run_snakemake(tmp_path, "--unlock", "--configfile", str(TINY))
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(TINY), "--rerun-incomplete")
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nothing finished was redone
    assert without_clock(tmp_path / "results/tables/runs.csv") == without_clock(tiny_sweep / "results/tables/runs.csv")


def test_external_trainer_failures_are_data(tmp_path):
    trainer = tmp_path / "train.py"
    trainer.write_text(
        "import json, sys\n"
        "hp, metrics = json.loads(sys.argv[1]), sys.argv[2]\n"
        "if hp['target_modules'] == 'attn':\n"
        "    sys.exit('simulated crash: attention-only adapters are not supported')\n"
        "json.dump({'val_loss': 3.0 + hp['learning_rate'], 'gpu_hours': 0.01}, open(metrics, 'w'))\n"
    )
    command = f"{sys.executable} {trainer} {{hp_json}} {{metrics_path}} {{train_path}}"
    cfg = tiny(tmp_path, training={"mode": "external", "external_command": command, "timeout_s": 30},
               stage2={"rounds": 1, "batch": 2}, rerun={"top_k": 1, "seeds": 2})
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(cfg))
    rows = read_csv(tmp_path / "results" / "tables" / "runs.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all("exit code 1: simulated crash" in r["error"] for r in failed)
    assert all(r["hp_target_modules"] == "attn" for r in failed)
    assert all(r["status"] == "ok" for r in rows if r["stage"] == "rerun")  # reruns use ok configurations only
    assert (tmp_path / "results" / "bins" / "arith" / "train.bin").exists()  # the external trainer reads bins


def test_data_stage_on_real_data_with_gpt2(tmp_path, shared):
    cfg = {
        "datasets": [
            {"name": "shakespeare",
             "source": {"kind": "local", "paths": [str(shared / "tinyshakespeare" / "input.txt")],
                        "sample_by": "paragraph"}},
            {"name": "codealpaca", "format": "instruction", "template": "alpaca",
             "source": {"kind": "local", "paths": [str(shared / "codealpaca" / "code_alpaca_2k.json")]}},
            {"name": "mbpp", "format": "instruction", "template": "mbpp",
             "source": {"kind": "hf", "path": "json", "data_files": str(shared / "mbpp" / "mbpp.jsonl")}},
        ],
        "tokenizer": {"name": "gpt2"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_snakemake(tmp_path, "prepare_nanogpt_data", "--cores", "2", "--configfile", str(path))
    table = read_csv(tmp_path / "results" / "tables" / "nanogpt_datasets.csv")
    assert [r["dataset"] for r in table] == ["shakespeare", "codealpaca", "mbpp"]
    assert all(int(r["train_tokens"]) > 10_000 and r["dtype"] == "uint16" for r in table)
    meta = json.loads((tmp_path / "results" / "bins" / "mbpp" / "meta.json").read_text())
    assert meta["tokenizer"] == "gpt2" and meta["provenance"]["source"]["kind"] == "hf"
    assert (tmp_path / "results" / "benchmarks" / "nanogpt_bins" / "mbpp.tsv").exists()


def test_a_broken_dataset_fails_alone(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["datasets"].append({"name": "broken", "source": {"kind": "local", "paths": [str(tmp_path / "missing.txt")]}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path, "prepare_nanogpt_data", "--cores", "2", "--keep-going", "--configfile", str(path),
                         check=False)
    assert proc.returncode != 0
    assert "dataset broken: source file not found" in proc.stderr
    assert (tmp_path / "results" / "bins" / "arith" / "train.bin").exists()
    assert (tmp_path / "results" / "bins" / "markov" / "meta.json").exists()


def test_snakefmt_and_lint_pass():
    subprocess.run(["snakefmt", "--check", str(ROOT)], check=True, capture_output=True)
    lint = subprocess.run(["snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr
