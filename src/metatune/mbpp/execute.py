"""The verdict on one completion: build its sandbox request, then judge the reply on the trusted side.

The sandbox returns, for each cut of the task's tests (checks.py), either a value as tagged plain data or the
exception it raised. Here those bytes are decoded strictly and within bounds (wire.py) and each test's trusted
check is evaluated on them, with this process's own builtins and modules. Only that evaluation can make a
test pass; exit codes, printed text and anything else the untrusted process does count for nothing. Whatever
the sandbox sends, and whatever the completion's source is, the outcome is a verdict: nothing here raises.

Statuses: passed | failed (a test's check is false, or its expression raised) | timeout | syntax_error
(the completion does not parse) | error (the completion or setup crashed while loading, the process died
without reporting, a malformed or oversized result, a test shape we cannot split, a dead sandbox worker).
"""

from __future__ import annotations

import builtins
import functools
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from metatune.mbpp import wire
from metatune.mbpp.checks import VALUE_PREFIX, TaskChecks, UnsupportedTest, parse, split_task
from metatune.mbpp.data import Problem
from metatune.mbpp.samples import Sample
from metatune.mbpp.sandbox import SandboxPool, SandboxSettings
from metatune.progress import progress

REASON_CHARS = wire.REASON_CHARS


@dataclass(frozen=True)
class Verdict:
    task_id: int
    sample: int
    status: str  # passed | failed | timeout | syntax_error | error
    reason: str  # empty when passed
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.lru_cache(maxsize=1024)
def trusted_namespace(checks: TaskChecks) -> dict:
    """Where trusted checks run: real builtins plus the task's own import lines (trusted dataset lines)."""
    ns: dict = {"__builtins__": builtins}
    for line in checks.trusted_imports:
        exec(compile(line, f"<task {checks.task_id} trusted imports>", "exec"), ns)
    return ns


def prepare(problem: Problem, completion: str) -> TaskChecks | Verdict:
    """The task's split tests, or the verdict already known without running the completion."""
    try:
        parse(completion)
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes
        reason = f"line {e.lineno}: {e.msg}" if isinstance(e, SyntaxError) else str(e)
        return Verdict(problem.task_id, 0, "syntax_error", reason[:REASON_CHARS])
    except (RecursionError, MemoryError) as e:  # nesting CPython's parser (and compiler) cannot take
        return Verdict(problem.task_id, 0, "error", f"completion too deeply nested to parse ({type(e).__name__})")
    try:
        return split_task(problem)
    except UnsupportedTest as e:
        return Verdict(problem.task_id, 0, "error", f"unsupported test: {e}"[:REASON_CHARS])


def request(problem: Problem, completion: str, checks: TaskChecks) -> dict:
    """What the sandbox gets: code and the cuts, never an expected value."""
    return {
        "code": completion,
        "setup": problem.setup_code,
        "imports": "\n".join(problem.test_imports),
        "cuts": [[c.source, "truth" if c.truth else "value"] for c in checks.cuts],
    }


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # real-time signals have no member
        return f"signal {number}"


def judge(checks: TaskChecks, reply: dict, timeout_s: float) -> tuple[str, str]:
    """(status, reason) for a sandbox reply; an unexpected failure of the judge itself is an `error` too."""
    try:
        return _judge(checks, reply, timeout_s)
    except Exception as e:  # RecursionError and MemoryError included: one sample must never end the run
        return "error", f"judge: {type(e).__name__}: {str(e)[:200]}"


def _judge(checks: TaskChecks, reply: dict, timeout_s: float) -> tuple[str, str]:
    if "worker_error" in reply:
        return "error", reply["worker_error"]
    if reply["setup_error"]:
        return "error", reply["setup_error"]
    if reply["timed_out"]:
        return "timeout", f"still running after {timeout_s:g} s"
    if reply["truncated"]:
        return "error", "result larger than the output cap"
    code = reply["exit"]
    if not reply["output"]:
        if code is None:
            return "error", "the task ended without a status"
        if code == -signal.SIGXCPU:
            return "timeout", "CPU time limit"
        if code < 0:
            return "error", f"killed by {signal_name(-code)} before reporting"
        return "error", f"exited with code {code} before reporting results"
    try:
        load_error, values = wire.decode_result(reply["output"], len(checks.cuts))
    except wire.Malformed as e:
        return "error", f"malformed result: {e}"
    if load_error is not None:
        return "error", load_error
    ns = trusted_namespace(checks)
    values_left = iter(values)
    for n, test in enumerate(checks.tests, start=1):
        env = dict(ns)  # the values go in as globals: a check's comprehensions see globals only
        for i, cut in enumerate(test.cuts):
            kind, value = next(values_left)
            if kind == "raise":
                return "failed", f"test {n}: {cut.source} raised {value}"
            env[f"{VALUE_PREFIX}{i}"] = value
        try:
            ok = eval(test.check, env)
        except Exception as e:  # the check on plain data failed (e.g. set() of an int): the test fails
            return "failed", f"test {n}: {type(e).__name__}: {str(e)[:200]}"
        if not ok:
            return "failed", f"test {n} failed: {test.source.strip()}"
    return "passed", ""


def execute(
    problems: dict[int, Problem], samples: Iterable[Sample], pool: SandboxPool, timeout_s: float
) -> Iterator[Verdict]:
    """Verdicts for every sample, in completion order (not input order)."""
    pending: list[tuple[Sample, TaskChecks]] = []
    known: list[Verdict] = []  # decided without running: syntax errors, unsupported tests

    def requests() -> Iterator[dict]:
        for s in samples:
            if s.task_id not in problems:
                raise KeyError(f"sample for task {s.task_id}, which is not among the problems")
            prepared = Verdict(s.task_id, s.sample, "error", s.malformed) if s.malformed else \
                prepare(problems[s.task_id], s.completion)
            if isinstance(prepared, Verdict):
                known.append(Verdict(s.task_id, s.sample, prepared.status, prepared.reason))
            else:
                pending.append((s, prepared))
                yield request(problems[s.task_id], s.completion, prepared)

    for i, reply in pool.run_all(requests()):
        s, checks = pending[i]
        status, reason = judge(checks, reply, timeout_s)
        yield Verdict(s.task_id, s.sample, status, reason[:REASON_CHARS], float(reply.get("wall", 0.0)))
    yield from known


def run(
    problems: dict[int, Problem], samples: list[Sample], settings: SandboxSettings, workers: int
) -> tuple[list[Verdict], str]:
    """Start a pool, judge every sample, stop the pool: (verdicts sorted by task and sample, isolation)."""
    with SandboxPool(workers, settings) as pool:
        judged = progress(execute(problems, samples, pool, settings.timeout_s), "execute", "samples", len(samples))
        verdicts = sorted(judged, key=lambda v: (v.task_id, v.sample))
        return verdicts, pool.isolation
