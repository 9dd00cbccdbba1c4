"""Sweep speed against the issue's targets, in one run:
  1. `snakemake -n` of a 10,000-trial sweep (20 datasets x 500 trials): target at most 15 s. It runs as the
     README tells a user to: from the repository, `snakemake -n --configfile STUDY.yaml`, and prints the job
     counts it measured. Beside it, the floor: the same dry run of a bare Snakefile with 10,000 jobs of one
     trial-like rule (an input, an output, a log, a shell command) and one rule that asks for them all. No
     workflow of 10,000 jobs is faster than that on the same machine and Snakemake, so the ratio says how much
     the sweep's own DAG adds.
  2. 1,000 simulated trials end to end with --cores 2: target at most 180 s (printed as trials/s). It runs in a
     scratch folder (--directory) so that it leaves nothing in the repository's results/; the config it ran,
     kept in results/configs/, is checked to be what `metatune check-config STUDY --print` prints.
Each sweep has 500 trials per dataset: a 400-point stage-1 grid, 5 rounds of 16 stage-2 proposals, the top 4
rerun with 5 seeds. Usage: python benchmarks/bench_sweep.py [--skip-run]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "learning_rate": {"type": "log_float", "low": 1e-5, "high": 3e-2, "grid": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3]},
    "lora_r": {"type": "int", "low": 1, "high": 64, "log": True, "grid": [4, 8, 16, 32]},
    "lora_alpha": {"type": "int", "low": 1, "high": 128, "log": True, "grid": [16, 32]},
    "lora_dropout": {"type": "float", "low": 0.0, "high": 0.3, "grid": [0.0, 0.1]},
    "batch_size": {"type": "int", "low": 4, "high": 256, "log": True, "grid": [8, 16, 32, 64, 128]},
}


def sweep_config(n_datasets: int) -> dict:
    datasets = [{"name": f"markov{i:02d}",
                 "source": {"kind": "builtin", "generator": "markov",
                            "options": {"n_docs": 40, "temperature": 0.3 + 0.2 * i, "seed": i}}}
                for i in range(n_datasets)]
    return {"datasets": datasets, "tokenizer": {"name": "bytes"}, "space": SPACE,
            "stage1": {"design": "factorial", "token_budget": 100000, "seq_len": 128},
            "stage2": {"rounds": 5, "batch": 16}, "optimizer": {"method": "tpe"}, "rerun": {"top_k": 4, "seeds": 5},
            "training": {"mode": "simulated"}}


FLOOR_SNAKEFILE = """
TRIALS = [f"t{i}" for i in range(config["n_trials"])]
rule all:
    input: expand("trials/{trial}/metrics.json", trial=TRIALS)
rule data:
    output: "data.json"
    shell: "touch {output}"
rule trial:
    input: data="data.json"
    output: metrics="trials/{trial}/metrics.json"
    log: "logs/{trial}.log"
    shell: "python -m trial --id {wildcards.trial} --data {input.data} --metrics {output.metrics} > {log} 2>&1"
"""


def snakemake(study: Path, config: dict, *args: str, cwd: Path = ROOT) -> tuple[float, subprocess.CompletedProcess]:
    """Write `config` to `study` and run `snakemake --configfile STUDY ARGS...` in `cwd`."""
    study.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = ["snakemake", "--configfile", str(study), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return elapsed, proc


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run (printed twice; the first is enough)."""
    stats = dry_run_output.split("Job stats:")[1].split("\n\n")[0]
    return {parts[0]: int(parts[1]) for parts in map(str.split, stats.splitlines())
            if len(parts) == 2 and parts[1].isdigit()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-run", action="store_true", help="only the dry run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        floor = Path(tmp) / "floor"
        floor.mkdir()
        (floor / "Snakefile").write_text(FLOOR_SNAKEFILE)
        floor_s, _ = snakemake(floor / "config.yaml", {"n_trials": 10_000}, "-n", "-q", "rules", cwd=floor)
        print(f"floor, bare Snakefile with 10000 trial jobs (-n -q rules): {floor_s:.1f} s")
        # `-q rules` prints the job counts per rule; a plain `-n` also prints every one of the 10,000 jobs.
        study = Path(tmp) / "study.yaml"
        for label, quiet in (("dry run, job counts (-n -q rules)", ["-q", "rules"]), ("dry run, every job (-n)", [])):
            elapsed, proc = snakemake(study, sweep_config(20), "-n", *quiet)
            counts = job_counts(proc.stdout)
            trials = {rule: n for rule, n in counts.items() if rule.startswith("trial_")}
            print(f"{label}: {counts['total']} jobs, {sum(trials.values())} trials "
                  f"({', '.join(f'{rule} {n}' for rule, n in trials.items())}) in {elapsed:.1f} s "
                  f"(target 15 s: {15 / elapsed:.2f}x inside it; {elapsed / floor_s:.2f}x the floor)")
    if args.skip_run:
        return
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study.yaml"
        elapsed, _ = snakemake(study, sweep_config(2), "--directory", tmp, "--cores", "2", "-q")
        with open(Path(tmp) / "results" / "tables" / "runs.csv") as f:
            n_trials = sum(1 for _ in csv.DictReader(f))
        print(f"end to end: {n_trials} simulated trials in {elapsed:.1f} s = {n_trials / elapsed:.1f} trials/s "
              f"(target 180 s: {180 / elapsed:.2f}x inside it)")
        printed = subprocess.run([sys.executable, "-m", "metatune.cli", "check-config", str(study), "--print"],
                                 capture_output=True, text=True, check=True).stdout
        kept = [p.read_text() for p in (Path(tmp) / "results" / "configs").glob("*.yaml")]
        print(f"the config it ran is what check-config prints: {kept == [printed]}")


if __name__ == "__main__":
    main()
