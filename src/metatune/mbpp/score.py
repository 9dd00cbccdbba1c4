"""Scores from verdicts: pass@k, syntax rate, the results JSON, and a paired comparison of two results.

Results JSON (DESIGN.md contract, written atomically):
    {"pass@1": float, "pass@10": float, ...       one key per k (k <= samples of every task)
     "syntax_rate": float,                         share of completions that parse
     "n_tasks": int, "n_samples": int,
     "isolation": "bwrap+setuid+rlimits" (root) | "bwrap+rlimits" | weaker fallback, named,
     "timings": {"wall_s", "exec_mean_s", "exec_max_s"},
     "per_task": [{"task_id", "passed", "status", "reason", "n", "n_passed", "wall_s"}, ...]}
A task row's `passed`/`status`/`reason` describe its first sample (sample 0: the greedy one); `n_passed` of
`n` count all of them. Tasks are sorted by id.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metatune.io import DataError, atomic_write_json
from metatune.mbpp import execute
from metatune.mbpp.data import by_id, load_problems
from metatune.mbpp.execute import Verdict
from metatune.mbpp.samples import read_samples
from metatune.mbpp.sandbox import SandboxSettings


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task with c correct among n samples (Chen et al. 2021, eq. 1):
    1 - C(n-c, k) / C(n, k), as a product so that large n does not overflow."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass(frozen=True)
class TaskRow:
    task_id: int
    passed: bool
    status: str
    reason: str
    n: int
    n_passed: int
    wall_s: float


def task_rows(verdicts: list[Verdict]) -> list[TaskRow]:
    by_task: dict[int, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        by_task[v.task_id].append(v)
    rows = []
    for task_id in sorted(by_task):
        vs = sorted(by_task[task_id], key=lambda v: v.sample)
        first = vs[0]
        rows.append(
            TaskRow(
                task_id=task_id,
                passed=first.passed,
                status=first.status,
                reason=first.reason,
                n=len(vs),
                n_passed=sum(v.passed for v in vs),
                wall_s=round(sum(v.wall_s for v in vs), 4),
            )
        )
    return rows


def score(verdicts: list[Verdict], ks: list[int], isolation: str, wall_s: float) -> dict:
    """The results document for one set of verdicts (see the module docstring)."""
    if not verdicts:
        raise DataError("no samples to score")
    rows = task_rows(verdicts)
    min_n = min(r.n for r in rows)
    too_big = [k for k in ks if k > min_n]
    if too_big:
        raise DataError(f"pass@{too_big[0]} needs at least {too_big[0]} samples per task; some task has {min_n}")
    results: dict = {}
    for k in sorted(set(ks)):
        results[f"pass@{k}"] = float(np.mean([pass_at_k(r.n, r.n_passed, k) for r in rows]))
    exec_times = [v.wall_s for v in verdicts]
    results.update(
        syntax_rate=sum(v.status != "syntax_error" for v in verdicts) / len(verdicts),
        n_tasks=len(rows),
        n_samples=len(verdicts),
        isolation=isolation,
        timings={
            "wall_s": round(wall_s, 3),
            "exec_mean_s": round(float(np.mean(exec_times)), 4),
            "exec_max_s": round(float(np.max(exec_times)), 4),
        },
        per_task=[vars(r) for r in rows],
    )
    return results


def compare(adapter: dict, baseline: dict, n_boot: int = 10_000, seed: int = 0) -> dict:
    """pass@1 of `adapter` minus that of `baseline` over their common tasks, with a paired bootstrap 95% CI
    (tasks resampled with replacement, the same tasks for both sides in each resample)."""
    a = {r["task_id"]: r["n_passed"] / r["n"] for r in adapter["per_task"]}
    b = {r["task_id"]: r["n_passed"] / r["n"] for r in baseline["per_task"]}
    common = sorted(a.keys() & b.keys())
    if not common:
        raise DataError("the two results share no task")
    diff = np.array([a[t] - b[t] for t in common])
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {
        "n_tasks": len(common),
        "pass@1_adapter": float(np.mean([a[t] for t in common])),
        "pass@1_baseline": float(np.mean([b[t] for t in common])),
        "delta_pass@1": float(diff.mean()),
        "ci95": [float(lo), float(hi)],
        "n_boot": n_boot,
        "seed": seed,
    }


def score_files(
    problems_path: str | Path,
    samples_path: str | Path,
    out_path: str | Path,
    settings: SandboxSettings,
    workers: int,
    ks: list[int],
) -> dict:
    """Run every sample of `samples_path` against its problem and write the results JSON to `out_path`."""
    problems = by_id(load_problems(problems_path))
    samples = read_samples(samples_path)
    unknown = sorted({s.task_id for s in samples} - problems.keys())
    if unknown:
        raise DataError(f"{samples_path}: task {unknown[0]} is not in {problems_path}")
    start = time.monotonic()
    verdicts, isolation = execute.run(problems, samples, settings, workers)
    results = score(verdicts, ks, isolation, time.monotonic() - start)
    atomic_write_json(out_path, results)
    return results
