"""Nothing lost: the sweep killed at random moments, trials that fail in every way, two runs at once."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_snakemake, without_clock

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
N_KILLS = 10


@pytest.fixture(scope="module")
def reference(tiny_sweep) -> Path:
    return tiny_sweep  # the session's uninterrupted run (conftest.py)


def start(workdir: Path, config: Path) -> subprocess.Popen:
    cmd = ["snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(config),
           "--cores", "2", "--rerun-incomplete"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def test_chaos_kills_lose_nothing(reference, tmp_path):
    """SIGKILL the whole Snakemake process tree at seeded random moments, restart with the README's recovery
    commands each time; the final tables equal those of an uninterrupted run."""
    rng = random.Random(20261121)
    kills = 0
    for _ in range(N_KILLS):
        proc = start(tmp_path, TINY)
        time.sleep(rng.uniform(0.5, 4.0))
        if proc.poll() is not None:
            break  # it finished before the kill: nothing left to interrupt
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        run_snakemake(tmp_path, "--unlock", "--configfile", str(TINY))
    print(f"chaos: {kills} SIGKILLs of the whole Snakemake tree survived")  # the figure, shown with pytest -s
    assert kills >= 5, "the sweep finished too early for the chaos test to mean anything"
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(TINY), "--rerun-incomplete")
    assert (tmp_path / "results/tables/best.csv").read_bytes() == (reference / "results/tables/best.csv").read_bytes()
    assert without_clock(tmp_path / "results/tables/runs.csv") == without_clock(reference / "results/tables/runs.csv")
    for path in (tmp_path / "results").rglob("*.json"):  # no truncated JSON anywhere
        json.loads(path.read_text())
    rows = (tmp_path / "results/tables/runs.csv").read_text().splitlines()[1:]
    assert len({row.split(",")[0] for row in rows}) == len(rows)  # trial_id: no trial twice


FAULTY_TRAINER = """
import json, sys, time
run_id, hp, metrics = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
fault = {
    (1e-4, "attn"): "crash", (1e-4, "attn_mlp"): "hang", (3e-4, "attn"): "partial", (3e-4, "attn_mlp"): "garbage",
    (1e-3, "attn"): "nan", (1e-3, "attn_mlp"): "oom",
}.get((hp["learning_rate"], hp["target_modules"]), "ok")
if fault == "crash":
    raise RuntimeError("trainer bug")
if fault == "hang":
    time.sleep(600)
if fault == "oom":
    sys.exit("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
text = {"partial": '{"val_loss": 1.', "garbage": "\\x00\\x01 not json", "nan": '{"val_loss": NaN}',
        "ok": json.dumps({"val_loss": 2.0 + hp["learning_rate"] * 10})}[fault]
open(metrics, "w").write(text)
"""


def test_faulty_trials_are_recorded_and_the_sweep_finishes(tmp_path):
    trainer = tmp_path / "trainer.py"
    trainer.write_text(FAULTY_TRAINER)
    cfg = yaml.safe_load(TINY.read_text())
    cfg["space"]["learning_rate"]["grid"] = [1e-4, 3e-4, 1e-3, 3e-3]
    cfg["training"] = {"mode": "external", "timeout_s": 3,
                       "external_command": f"{sys.executable} {trainer} {{run_id}} {{hp_json}} {{metrics_path}}"}
    cfg["rerun"] = {"top_k": 1, "seeds": 2}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(path))

    import csv

    rows = list(csv.DictReader(open(tmp_path / "results/tables/runs.csv")))
    stage1 = {(float(r["hp_learning_rate"]), r["hp_target_modules"]): r for r in rows
              if r["stage"] == "stage1" and r["dataset"] == "arith"}
    expected = {
        (1e-4, "attn"): ("failed", "RuntimeError: trainer bug"), (1e-4, "attn_mlp"): ("failed", "timeout after 3 s"),
        (3e-4, "attn"): ("failed", "not valid JSON"), (3e-4, "attn_mlp"): ("failed", "not valid JSON"),
        (1e-3, "attn"): ("diverged", "non-finite val_loss"), (1e-3, "attn_mlp"): ("oom", "CUDA out of memory"),
        (3e-3, "attn"): ("ok", ""), (3e-3, "attn_mlp"): ("ok", ""),
    }
    for key, (status, reason) in expected.items():
        assert stage1[key]["status"] == status, stage1[key]
        assert reason in stage1[key]["error"], stage1[key]["error"]
    # failures reach the optimizer as trials without an objective
    history = list(csv.DictReader(open(tmp_path / "results/stage1/history.csv")))
    assert {h["status"] for h in history if not h["objective"]} == {"failed", "diverged", "oom"}
    assert all(r["status"] == "ok" for r in rows if r["stage"] == "rerun")


def test_a_second_run_on_the_same_directory_refuses(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text("import json, sys, time\ntime.sleep(5)\njson.dump({'val_loss': 1.0}, open(sys.argv[1], 'w'))\n")
    cfg = yaml.safe_load(TINY.read_text())
    cfg["training"] = {"mode": "external", "external_command": f"{sys.executable} {slow} {{metrics_path}}"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = start(tmp_path, path)
    try:
        # Trials running means the first run holds its lock (taken before the first job starts).
        deadline = time.monotonic() + 300
        while (not list((tmp_path / "logs" / "trials").rglob("*.log")) and first.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.2)
        assert list((tmp_path / ".snakemake" / "locks").glob("*")), "the first run never started its trials"
        # --rerun-incomplete is the README's recovery command and the dangerous one: without the lock it would
        # restart the jobs the first run has in flight (and without it, those show up as "incomplete" instead).
        second = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(path), "--rerun-incomplete", check=False)
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stderr + second.stdout
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
