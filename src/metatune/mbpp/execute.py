"""The verdict on one completion: build its sandbox request, then judge the reply on the trusted side.

The sandbox returns, for each untrusted expression of the task's tests, either a value as tagged plain data
or the exception it raised. Here those values are decoded strictly into built-in types and each test's
trusted check (checks.py) is evaluated on them. Only that evaluation can make a test pass; exit codes,
printed text and anything else the untrusted process does count for nothing.

Statuses: passed | failed (a test's check is false, or its expression raised) | timeout | syntax_error
(the completion does not parse) | error (the completion or setup crashed while loading, the process died
without reporting, a malformed or oversized result, a test shape we cannot split, a dead sandbox worker).
"""

from __future__ import annotations

import builtins
import json
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from metatune.mbpp.checks import VALUE_PREFIX, TaskChecks, UnsupportedTest, parse, split_task
from metatune.mbpp.data import Problem
from metatune.mbpp.samples import Sample
from metatune.mbpp.sandbox import SandboxPool, SandboxSettings
from metatune.progress import progress

MAX_DEPTH = 100
REASON_CHARS = 300


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


class MalformedResult(ValueError):
    """The sandbox's reply is not the plain data it must be."""


_SCALARS = {
    "int": int,  # int("...") caps digits (sys.int_info), so a huge number is an error, not a hang
    "float": float,
    "complex": complex,  # parses complex.__repr__, parentheses and all
    "str": str,
    "bytes": bytes.fromhex,
}
_CONTAINERS = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


def decode(x, depth: int = 0):
    """Tagged JSON -> built-in value (the inverse of zygote.encode), refusing anything else."""
    if depth > MAX_DEPTH or not isinstance(x, list) or not x or not isinstance(x[0], str):
        raise MalformedResult(f"not a tagged value: {str(x)[:80]}")
    tag, args = x[0], x[1:]
    try:
        if tag == "none" and not args:
            return None
        if tag == "bool" and len(args) == 1 and isinstance(args[0], bool):
            return args[0]
        if tag in _SCALARS and len(args) == 1 and isinstance(args[0], str):
            return _SCALARS[tag](args[0])
        if tag in _CONTAINERS and len(args) == 1 and isinstance(args[0], list):
            return _CONTAINERS[tag](decode(v, depth + 1) for v in args[0])
        if tag == "dict" and len(args) == 1 and isinstance(args[0], list):
            if not all(isinstance(kv, list) and len(kv) == 2 for kv in args[0]):
                raise MalformedResult("dict item is not a [key, value] pair")
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in args[0]}
    except (ValueError, TypeError) as e:  # bad literal, unhashable key
        raise MalformedResult(f"bad {tag} value: {e}") from None
    raise MalformedResult(f"unknown or malformed tag {tag!r}")


def trusted_namespace(problem: Problem) -> dict:
    """Where trusted checks run: real builtins plus the task's own test imports (trusted dataset lines)."""
    ns: dict = {"__builtins__": builtins}
    for line in problem.test_imports:
        exec(compile(line, f"<task {problem.task_id} test imports>", "exec"), ns)
    return ns


def prepare(problem: Problem, completion: str) -> TaskChecks | Verdict:
    """Split the tests for this completion, or the verdict already known without running it."""
    try:
        tree = parse(completion)
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes
        reason = f"line {e.lineno}: {e.msg}" if isinstance(e, SyntaxError) else str(e)
        return Verdict(problem.task_id, 0, "syntax_error", reason[:REASON_CHARS])
    try:
        return split_task(problem, tree)
    except UnsupportedTest as e:
        return Verdict(problem.task_id, 0, "error", f"unsupported test: {e}"[:REASON_CHARS])


def request(problem: Problem, completion: str, checks: TaskChecks, timeout_s: float) -> dict:
    """What the sandbox gets: code and the untrusted expressions, never an expected value."""
    return {
        "code": completion,
        "setup": problem.setup_code,
        "imports": "\n".join(problem.test_imports),
        "exprs": list(checks.exprs),
        "timeout": timeout_s,
    }


def judge(problem: Problem, checks: TaskChecks, reply: dict, timeout_s: float) -> tuple[str, str]:
    """(status, reason) for a sandbox reply."""
    if "worker_error" in reply:
        return "error", reply["worker_error"]
    if reply["timed_out"]:
        return "timeout", f"still running after {timeout_s:g} s"
    if reply["truncated"]:
        return "error", "result larger than the output cap"
    code = reply["exit"]
    if not reply["output"]:
        if code == -signal.SIGXCPU:
            return "timeout", "CPU time limit"
        if code < 0:
            return "error", f"killed by {signal.Signals(-code).name} before reporting"
        return "error", f"exited with code {code} before reporting results"
    try:
        doc = _parse_output(reply["output"], len(checks.exprs))
    except MalformedResult as e:
        return "error", f"malformed result: {e}"
    if doc["load_error"] is not None:
        return "error", str(doc["load_error"])
    values = iter(doc["values"])
    ns = trusted_namespace(problem)
    for n, test in enumerate(checks.tests, start=1):
        local = {}
        for i, expr in enumerate(test.exprs):
            kind, value = next(values)
            if kind == "raise":
                return "failed", f"test {n}: {expr} raised {value}"
            local[f"{VALUE_PREFIX}{i}"] = value
        try:
            ok = eval(test.check, ns, local)
        except Exception as e:  # the check on plain data failed (e.g. set() of an int): the test fails
            return "failed", f"test {n}: {type(e).__name__}: {e}"
        if not ok:
            return "failed", f"test {n} failed: {test.source.strip()}"
    return "passed", ""


def _parse_output(output: str, n_exprs: int) -> dict:
    try:
        doc = json.loads(output)
    except json.JSONDecodeError as e:
        raise MalformedResult(f"not JSON ({e.msg})") from None
    if not isinstance(doc, dict) or set(doc) != {"load_error", "values"}:
        raise MalformedResult("unexpected document")
    if doc["load_error"] is not None:
        return {"load_error": str(doc["load_error"])[:REASON_CHARS], "values": []}
    raw = doc["values"]
    if not isinstance(raw, list) or len(raw) != n_exprs:
        raise MalformedResult(f"expected {n_exprs} values")
    values = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and item[0] in ("ok", "raise")):
            raise MalformedResult("bad value entry")
        values.append(("ok", decode(item[1])) if item[0] == "ok" else ("raise", str(item[1])[:REASON_CHARS]))
    return {"load_error": None, "values": values}


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
            prepared = prepare(problems[s.task_id], s.completion)
            if isinstance(prepared, Verdict):
                known.append(Verdict(s.task_id, s.sample, prepared.status, prepared.reason))
            else:
                pending.append((s, prepared))
                yield request(problems[s.task_id], s.completion, prepared, timeout_s)

    for i, reply in pool.run_all(requests()):
        s, checks = pending[i]
        status, reason = judge(problems[s.task_id], checks, reply, timeout_s)
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
