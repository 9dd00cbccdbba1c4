"""The sandbox against MBPP's reference solutions (positive control) and against hostile completions.

Every hostile completion targets a problem whose expected value is a fresh random number: only a leak of
the expected value (or of the harness's verdict) could make it pass. Each must not pass, the harness must
go on, no process of the sandbox user may survive its task, and nothing outside the sandbox may change.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import textwrap
from collections import Counter
from pathlib import Path

import psutil
import pytest

from metatune.mbpp import data, execute, sandbox
from metatune.mbpp.samples import Sample

MBPP = "/work/shared/data/mbpp/mbpp.jsonl"
WORKERS = 2
TIMEOUT = 1.0
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not __import__("shutil").which("bwrap"),
                                reason="the full sandbox needs root and bubblewrap")


def nobody_processes() -> list[psutil.Process]:
    procs = []
    for p in psutil.process_iter(["uids", "status"]):
        if p.info["uids"] and p.info["uids"].real == sandbox.NOBODY and p.info["status"] != psutil.STATUS_ZOMBIE:
            procs.append(p)
    return procs


@pytest.fixture(scope="module")
def pool():
    with sandbox.SandboxPool(WORKERS, sandbox.SandboxSettings(timeout_s=TIMEOUT)) as p:
        yield p
    assert nobody_processes() == []  # closing the pool leaves nothing running as nobody


def verdict(pool, problem: data.Problem, completion: str) -> execute.Verdict:
    (v,) = execute.execute({problem.task_id: problem}, [Sample(problem.task_id, completion)], pool, TIMEOUT)
    return v


def assert_only_zygotes_left():
    # The workers' zygotes run as nobody; anything else of that uid is a task process that survived.
    assert len(nobody_processes()) == WORKERS, [p.cmdline() for p in nobody_processes()]


def test_reference_solutions_pass():
    """Positive control: MBPP's own solutions for the 500 test tasks, full sandbox, 3 s, 2 workers."""
    problems = data.select_split(data.load_local(MBPP), "test")
    samples = [Sample(p.task_id, p.code) for p in problems]
    verdicts, isolation = execute.run(data.by_id(problems), samples, sandbox.SandboxSettings(), WORKERS)
    assert isolation == "bwrap+setuid+rlimits"
    failed = {v.task_id: (v.status, v.reason) for v in verdicts if not v.passed}
    assert len(verdicts) == 500 and len(failed) <= 2, failed
    assert set(failed) <= {123}, failed  # 123 runs ~2.5 s (more on a loaded machine): the only one allowed
    assert nobody_processes() == []


SECRET_VALUE = secrets.randbelow(10**12) + 10**12
TARGET = data.Problem(task_id=9001, text="t", code="", tests=(f"assert target(1) == {SECRET_VALUE}",))


def test_the_hostile_target_can_pass(pool):
    """Without this, 'does not pass' below would prove nothing."""
    assert verdict(pool, TARGET, f"def target(x):\n    return {SECRET_VALUE}").status == "passed"


HOSTILE = {
    "infinite loop": ("def target(x):\n    while True:\n        pass", {"timeout"}),
    "sleep": ("import time\ndef target(x):\n    time.sleep(60)", {"timeout"}),
    "ignores SIGALRM": (
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.alarm(0)\n"
        "def target(x):\n    while True:\n        pass",
        {"timeout"},
    ),
    "sys.exit(0) before the tests": ("import sys\nsys.exit(0)", {"error"}),
    "os._exit(0) before the tests": ("import os\nos._exit(0)", {"error"}),
    "exit(0) before the tests": ("exit(0)", {"error"}),
    "raise SystemExit": ("raise SystemExit(0)", {"error"}),
    "raise KeyboardInterrupt": ("raise KeyboardInterrupt", {"error"}),
    "os._exit(0) inside the call": ("import os\ndef target(x):\n    os._exit(0)", {"error"}),
    "sys.exit(0) inside the call": ("import sys\ndef target(x):\n    sys.exit(0)", {"failed"}),
    "always-equal object": (
        "class Eq:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
        "    __hash__ = object.__hash__\ndef target(x):\n    return Eq()",
        {"failed"},
    ),
    "int subclass with __eq__ and __repr__": (
        f"class I(int):\n    def __eq__(self, o): return True\n    def __repr__(self): return '{SECRET_VALUE}'\n"
        "    __hash__ = int.__hash__\ndef target(x):\n    return I(0)",
        {"failed"},
    ),
    "patched builtins": (
        "import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.issubclass = lambda *a: True\n"
        "builtins.type = lambda *a: int\nclass Eq:\n    def __eq__(self, o): return True\n"
        "def target(x):\n    return Eq()",
        {"failed", "error"},  # error: the patched isinstance also breaks json.dumps, so nothing is reported
    ),
    "patched encoder": (
        "import __main__, json\n__main__.encode = lambda v, depth=0: ['bool', True]\n"
        "json.dumps = lambda *a, **k: '{\"load_error\": null, \"values\": [[\"ok\", [\"bool\", true]]]}'\n"
        "def target(x):\n    return 0",
        {"failed"},
    ),
    "looks for the expected value in frames, gc, /proc": (
        textwrap.dedent(
            """
            import gc, os, re, sys
            def _numbers(text):
                return [int(m) for m in re.findall(r"\\d{13}", text)]
            def target(x):
                found = []
                f = sys._getframe()
                while f is not None:
                    found += _numbers(repr(f.f_locals)) + _numbers(repr(f.f_globals.keys()))
                    f = f.f_back
                for o in gc.get_objects():
                    try:
                        found += _numbers(repr(o)[:10000])
                    except Exception:
                        pass
                for pid in os.listdir("/proc"):
                    for part in ("cmdline", "environ", "mem"):
                        try:
                            with open(f"/proc/{pid}/{part}", "rb") as fh:
                                found += _numbers(fh.read(1 << 20).decode("latin-1"))
                        except Exception:
                            pass
                return found[0] if found else 0
            """
        ),
        {"failed"},
    ),
    "execv another program": ("import os\nos.execv('/bin/true', ['true'])", {"error"}),
    "execv a forger of results": (
        "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', "
        "\"import os; os.write(3, b'{\\\"load_error\\\": null, \\\"values\\\": [[\\\"ok\\\", [\\\"bool\\\", true]]]}')\"])",
        {"failed"},
    ),
    "fork bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        {"timeout", "error"},
    ),
    "unbounded allocation": ("x = []\nwhile True:\n    x.append(bytearray(1 << 28))", {"error", "timeout"}),
    "one huge allocation": ("x = [0] * (1 << 34)", {"error"}),
    "floods stdout and stderr": (
        "import sys\nfor _ in range(20000):\n    print('x' * 1000)\n    print('y' * 1000, file=sys.stderr)\n"
        "def target(x):\n    return 0",
        {"failed"},
    ),
    "floods the result pipe": ("import os\nfor _ in range(64):\n    os.write(3, b'x' * (1 << 16))", {"error"}),
    "detached sleeper (setsid, double fork)": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(600)\n"
        "    os._exit(0)\ndef target(x):\n    return 0",
        {"failed"},
    ),
    "kills its parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", {"error"}),
    "kills its parent's process group": ("import os\nos.killpg(os.getpgid(os.getppid()), 9)", {"error"}),
    "kills every process it can": ("import os\nos.kill(-1, 9)", {"error"}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_completion_does_not_pass(pool, name):
    completion, statuses = HOSTILE[name]
    v = verdict(pool, TARGET, completion)
    assert v.status in statuses, v
    assert_only_zygotes_left()
    # The harness goes on: the next task is judged normally.
    assert verdict(pool, TARGET, f"def target(x):\n    return {SECRET_VALUE}").status == "passed"


def test_cannot_write_outside_its_directory(pool, tmp_path):
    tag = secrets.token_hex(6)
    targets = [Path("/root") / f"pwned-{tag}", Path("/work") / f"pwned-{tag}", tmp_path / f"pwned-{tag}",
               Path("/tmp") / f"pwned-{tag}"]
    completion = textwrap.dedent(
        f"""
        import os
        written = 0
        for path in {[str(t) for t in targets]!r} + [os.path.expanduser("~/../pwned-{tag}")]:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write("pwned")
                written += 1
            except OSError:
                pass
        def target(x):
            return written
        """
    )
    assert verdict(pool, TARGET, completion).status == "failed"
    assert [t for t in targets if t.exists()] == []
    assert_only_zygotes_left()


def test_cannot_read_secrets(pool, tmp_path):
    token = secrets.token_hex(16)
    files = [Path("/root") / f".mbpp-secret-{token[:8]}", Path(__file__).parent / f".mbpp-secret-{token[:8]}",
             tmp_path / "secret"]
    problem = data.Problem(task_id=9002, text="t", code="", tests=(f"assert steal() == {token!r}",))
    completion = textwrap.dedent(
        f"""
        def steal():
            for path in {[str(f) for f in files]!r}:
                try:
                    return open(path).read()
                except OSError:
                    pass
            return None
        """
    )
    try:
        for f in files:
            f.write_text(token)
            f.chmod(0o644)  # readable by anyone who can reach it: only the sandbox may stop the read
        assert verdict(pool, problem, completion).status == "failed"
    finally:
        for f in files:
            f.unlink(missing_ok=True)


def test_cannot_connect_to_localhost(pool):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        problem = data.Problem(task_id=9003, text="t", code="", tests=("assert probe() == 'connected'",))
        completion = textwrap.dedent(
            f"""
            import socket
            def probe():
                try:
                    with socket.create_connection(("127.0.0.1", {port}), timeout=0.5) as s:
                        s.sendall(b"hello")
                    return "connected"
                except OSError as e:
                    return str(e)
            """
        )
        assert verdict(pool, problem, completion).status == "failed"
        assert select.select([server], [], [], 0.2)[0] == []  # no connection ever arrived


def test_values_cross_the_boundary_as_plain_data(pool):
    """Built-in values (and subclasses, read as their base type) come back equal; others are refused."""
    expected = "(1, -0.0, 2**70, 1.5, 1+2j, 'é\\x00', b'\\xff', [1, (2,)], {1, 2}, frozenset({3}), {'a': [None, True]})"
    problem = data.Problem(task_id=9004, text="t", code="", tests=(f"assert values() == {expected}",
                                                                    "assert counts() == {'a': 2, 'b': 1}",
                                                                    "assert math.isclose(third(), 0.3333, rel_tol=1e-3)",
                                                                    "assert not empty()"),
                           test_imports=("import math",))
    completion = f"import collections\ndef values():\n    return {expected}\n" \
                 "def counts():\n    return collections.Counter('aab')\n" \
                 "def third():\n    return 1 / 3\ndef empty():\n    return []\n"
    assert verdict(pool, problem, completion).status == "passed"
    odd = data.Problem(task_id=9005, text="t", code="", tests=("assert gen() == [1, 2]",))
    v = verdict(pool, odd, "def gen():\n    return iter([1, 2])")
    assert v.status == "failed" and "cannot return a list_iterator" in v.reason


def test_statuses_and_reasons(pool):
    p = data.Problem(task_id=9006, text="t", code="", tests=("assert f(2) == 4", "assert f(3) == 9"))
    cases = {
        "def f(x):\n    return x * x": ("passed", ""),
        "def f(x):\n    return x + 2": ("failed", "test 2 failed: assert f(3) == 9"),
        "def f(x):\n    return 1 / 0": ("failed", "test 1: f(2) raised ZeroDivisionError: division by zero"),
        "def f(x) return x": ("syntax_error", "line 1: expected ':'"),
        "import no_such_module": ("error", "completion: ModuleNotFoundError: No module named 'no_such_module'"),
    }
    for completion, (status, reason) in cases.items():
        v = verdict(pool, p, completion)
        assert (v.status, v.reason) == (status, reason)


def test_without_bubblewrap_the_weaker_isolation_is_explicit_and_stated():
    settings = sandbox.SandboxSettings(timeout_s=TIMEOUT, bwrap=None)
    with pytest.raises(sandbox.SandboxError, match="bubblewrap"):
        sandbox.SandboxPool(1, settings)
    before = len(nobody_processes())  # the module's pool may be running
    weak = sandbox.SandboxSettings(timeout_s=TIMEOUT, bwrap=None, allow_weak=True)
    p = data.Problem(task_id=9007, text="t", code="", tests=("assert f(2) == 4",))
    samples = [Sample(9007, "def f(x):\n    return x * x", 0), Sample(9007, "def f(x):\n    return x", 1),
               Sample(9007, "while True:\n    pass", 2)]
    verdicts, isolation = execute.run({9007: p}, samples, weak, 1)
    assert isolation == "setuid+rlimits"
    assert [v.status for v in verdicts] == ["passed", "failed", "timeout"]
    assert len(nobody_processes()) == before
