"""profiles/slurm on a real Slurm cluster: a single-node cluster on this machine (tests/slurm/cluster.sh: munge,
MariaDB, slurmdbd, slurmctld, slurmd with two fake GPUs) runs the tiny simulated sweep through the Slurm executor
plugin, with the profile exactly as users get it. While it runs, one trial job is killed with scancel.

Checks: every trial ran inside a Slurm job that sacct knows, trial jobs asked for a GPU (--gpus=1, gpumem) and
other jobs did not, packing put several trials into one Slurm job (fewer Slurm jobs than trials), the killed
job was retried, and runs.csv is complete.

Needs root (the cluster installs Debian packages and runs daemons). It starts the cluster if it is not running
and stops it afterwards (only if it started it). METATUNE_SLURM_TESTS=0 skips it.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT

CLUSTER_SH = ROOT / "tests" / "slurm" / "cluster.sh"
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
TRIALS_PER_DATASET = 4 + 2 * 2 + 2 * 3  # tiny.yaml: stage-1 grid of 4, 2 rounds of 2, top 2 x 3 seeds
DATASETS = ("arith", "markov")
SWEEP_TIMEOUT_S = 900  # hard limit: the executor plugin can wait forever on a job Slurm lost
TEST_ACCOUNT = "metatune"  # created by cluster.sh

pytestmark = pytest.mark.slow


def _skip_reason() -> str | None:
    if os.environ.get("METATUNE_SLURM_TESTS", "1") == "0":
        return "METATUNE_SLURM_TESTS=0"
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root: tests/slurm/cluster.sh installs Slurm packages and starts daemons"
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        return "no Slurm and no apt-get to install it (the test cluster is built from Debian packages)"
    return None


def _cluster(cmd: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SH), cmd], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_cluster():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    already_running = _cluster("status", timeout=60).returncode == 0
    t0 = time.monotonic()
    started = _cluster("start")
    if started.returncode != 0:
        log = started.stderr[-3000:]
        if "apt-get" in log or "Unable to locate package" in log or "installing" in log:
            pytest.skip(f"could not install the Slurm packages:\n{log}")
        pytest.fail(f"tests/slurm/cluster.sh start failed:\n{started.stdout[-2000:]}\n{log}")
    print(f"Slurm cluster up in {time.monotonic() - t0:.0f}s")
    yield
    if not already_running:
        _cluster("stop", timeout=300)


def _sacct(run_id: str) -> dict[str, dict[str, str]]:
    """This sweep's Slurm jobs (array tasks one each), by job id: State, ReqTRES."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--name", run_id, "-S", "now-3hours", "-o", "JobID,State,ReqTRES"],
        capture_output=True, text=True, check=True,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, state, tres = line.split("|")
        jobs[job_id] = {"State": state.split()[0], "ReqTRES": tres}
    return jobs


# A trial job as the jobstep's Snakemake prints it: its output path results/trials/{stage}/{dataset}/{run_id}/
# (DESIGN.md's layout; stabler than the rules' wildcard names).
TRIAL_IN_LOG = re.compile(
    r"^rule trial_\w+:\n(?:    .*\n)*?    output: results/trials/(\w+)/(\w+)/([\w-]+)/metrics\.json", re.MULTILINE
)
ANY_RULE_IN_LOG = re.compile(r"^rule (\w+):$", re.MULTILINE)


def _jobs_from_slurm_logs(logdir: Path) -> dict[str, dict]:
    """Per Slurm job id (file name %j.log, or %A_%a.log for array tasks): the rules and trials it ran, as the
    jobstep's Snakemake printed them into the job's Slurm log."""
    jobs = {}
    for log in logdir.rglob("*.log"):
        text = log.read_text(errors="replace")
        jobs[log.stem] = {
            "rules": set(ANY_RULE_IN_LOG.findall(text)),
            "trials": set(TRIAL_IN_LOG.findall(text)),
        }
    return jobs


class _KillOneTrialJob(threading.Thread):
    """Waits until a stage-1 trial job of this sweep has run for a few seconds, then kills it with
    `scancel --batch --signal=KILL`, as a crash, the OOM killer or a failing node would: Slurm records it as
    FAILED and the executor plugin has Snakemake retry it.

    Not a plain `scancel`: sacct then reports "CANCELLED by <uid>", which plugin 2.8 compares against
    "CANCELLED" literally, takes for a job still running and waits for forever (docs/profiles.md)."""

    def __init__(self, log: Path):
        super().__init__(daemon=True)
        self.log = log
        self.killed: str | None = None
        self.stop = threading.Event()

    def run(self):
        run_id = None
        while not self.stop.is_set() and self.killed is None:
            if run_id is None and self.log.exists():
                m = re.search(r"SLURM run ID: (\S+)", self.log.read_text(errors="replace"))
                run_id = m.group(1) if m else None
            if run_id:
                # %k: the comment, rule_<rule or group>...; %M: time used, m:ss.
                out = subprocess.run(["squeue", "-h", "-n", run_id, "-t", "RUNNING", "-o", "%i %M %k"],
                                     capture_output=True, text=True).stdout
                for line in out.splitlines():
                    job_id, used, comment = line.split(maxsplit=2)
                    minutes, _, seconds = used.rpartition(":")
                    if "trials_stage1" in comment and int(minutes or 0) * 60 + int(seconds) >= 5:
                        subprocess.run(["scancel", "--batch", "--signal=KILL", job_id], check=True)
                        self.killed = job_id
                        return
            time.sleep(0.5)


@pytest.fixture(scope="module")
def slurm_sweep(slurm_cluster, tmp_path_factory):
    """The tiny simulated sweep through profiles/slurm, one trial job killed on the way."""
    workdir = tmp_path_factory.mktemp("slurm_sweep")
    log = workdir / "snakemake.log"
    env = dict(
        os.environ,
        METATUNE_SLURM_ACCOUNT=TEST_ACCOUNT,  # the profile's one place for the account
        METATUNE_GPUS="1",  # trials ask for a GPU, as with real training (the simulated trainer needs none)
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    )
    cmd = [
        # SIGINT at the limit: Snakemake then cancels its Slurm jobs (on SIGTERM it would wait for them).
        "timeout", "-s", "INT", "-k", "30", str(SWEEP_TIMEOUT_S),
        "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(TINY),
        "--profile", str(ROOT / "profiles" / "slurm"),
        # Test-only: keys the profile does not set, so they add to it instead of replacing a profile key.
        "--slurm-init-seconds-before-status-checks", "2",  # the profile's 40 s would make this test slow
        "--slurm-keep-successful-logs",  # the logs tell which trials each Slurm job ran
    ]
    killer = _KillOneTrialJob(log)
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        killer.start()
        try:
            rc = proc.wait(timeout=SWEEP_TIMEOUT_S + 30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        finally:
            killer.stop.set()
    text = log.read_text(errors="replace")
    run_id = re.search(r"SLURM run ID: (\S+)", text)
    if run_id:  # nothing of this sweep may outlive it, whatever happened
        subprocess.run(["scancel", "--name", run_id.group(1)], capture_output=True)
    assert rc == 0 and run_id, f"sweep failed (rc {rc}, {time.monotonic() - t0:.0f}s):\n{text[-6000:]}"
    print(f"slurm sweep: {time.monotonic() - t0:.0f}s")
    return {
        "workdir": workdir,
        "log": text,
        "sacct": _sacct(run_id.group(1)),
        "slurm_logs": _jobs_from_slurm_logs(workdir / "logs" / "slurm"),
        "killed": killer.killed,
    }


def _runs(workdir: Path) -> list[dict]:
    with open(workdir / "results" / "tables" / "runs.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_runs_csv_is_complete(slurm_sweep):
    rows = _runs(slurm_sweep["workdir"])
    assert len(rows) == len(DATASETS) * TRIALS_PER_DATASET
    assert {r["status"] for r in rows} <= {"ok", "diverged"}
    assert (slurm_sweep["workdir"] / "results" / "tables" / "best.csv").is_file()


def test_every_trial_ran_as_a_slurm_job(slurm_sweep):
    sacct, logs = slurm_sweep["sacct"], slurm_sweep["slurm_logs"]
    completed_trials = {
        trial for job_id, job in logs.items() if sacct.get(job_id, {}).get("State") == "COMPLETED"
        for trial in job["trials"]
    }
    expected = {(r["stage"], r["dataset"], r["run_id"]) for r in _runs(slurm_sweep["workdir"])}
    assert expected == completed_trials, "trials without a completed Slurm job that sacct knows"


def test_trial_jobs_ask_for_a_gpu_and_other_jobs_do_not(slurm_sweep):
    sacct, logs = slurm_sweep["sacct"], slurm_sweep["slurm_logs"]
    trial_jobs = {j for j, job in logs.items() if job["trials"]}
    other_jobs = {j for j, job in logs.items() if job["rules"] and not job["trials"]}
    assert trial_jobs and other_jobs
    for job_id in trial_jobs:
        assert "gres/gpu=1" in sacct[job_id]["ReqTRES"], (job_id, sacct[job_id])
        assert "gres/gpumem=" in sacct[job_id]["ReqTRES"], (job_id, sacct[job_id])
    for job_id in other_jobs:
        assert "gres/gpu" not in sacct[job_id]["ReqTRES"], (job_id, logs[job_id]["rules"], sacct[job_id])
    # prefetch_dataset is a localrule (it needs the internet): it ran in the controller, not as a Slurm job.
    assert not any("prefetch_dataset" in job["rules"] for job in logs.values())
    assert "localrule prefetch_dataset:" in slurm_sweep["log"]


def test_packing_puts_several_trials_into_one_slurm_job(slurm_sweep):
    sacct, logs = slurm_sweep["sacct"], slurm_sweep["slurm_logs"]
    n_trials = len(DATASETS) * TRIALS_PER_DATASET
    completed = {j: job for j, job in logs.items() if sacct.get(j, {}).get("State") == "COMPLETED"}
    trial_jobs = [job for job in completed.values() if job["trials"]]
    assert len(trial_jobs) < n_trials
    # Stage 1 and reruns are grouped (group-components in the profile): all 8 stage-1 trials of the tiny
    # sweep in one job, all 12 reruns in another; stage-2 trials run one job each.
    per_stage = {stage: max(sum(t[0] == stage for t in job["trials"]) for job in trial_jobs)
                 for stage in ("stage1", "stage2", "rerun")}
    assert per_stage["stage1"] > 1 and per_stage["rerun"] > 1, per_stage
    # Every Slurm job that ran trials, the killed one included: fewer jobs than trials.
    assert len([job for job in logs.values() if job["trials"]]) < n_trials


def test_a_killed_trial_job_is_retried_and_the_sweep_completes(slurm_sweep):
    killed = slurm_sweep["killed"]
    assert killed, "no running stage-1 trial job was seen to kill"
    assert slurm_sweep["sacct"][killed]["State"] == "FAILED"
    assert "Trying to restart job" in slurm_sweep["log"]
    # The killed job's trials ran again in another job, which completed (and runs.csv is complete: above).
    logs, sacct = slurm_sweep["slurm_logs"], slurm_sweep["sacct"]
    lost = logs.get(killed, {}).get("trials", set())
    redone = set().union(*(job["trials"] for j, job in logs.items()
                           if j != killed and sacct.get(j, {}).get("State") == "COMPLETED"))
    assert lost <= redone
