"""Adversarial suite: the MBPP scorer against hostile completions, one class of attack at a time.

Every case runs a wrong completion (which must not pass) and a correct control (which must pass) in the same
run, through the real bubblewrap sandbox. The expected values are fresh random numbers, so only a leak of an
expected value, of the judge's verdict or of another sample's result could make a wrong completion pass.
Classes (issue 12):
  1  trusted tests: builtins, test imports and modules stay the judge's, whatever the completion binds
  2  no memory between tasks: nothing an earlier sample ran, sent or received is readable by a later one
  3  no influence on the parent or the neighbours: per-task uid, namespaces, limits, /tmp
  4  the judge never dies: any bytes, any signal, any source become a per-task verdict
  5  correct answers of common types are scored like plain Python would score them
  (6, the environment the scorer runs in, is in test_mbpp_sandbox.py)
"""

from __future__ import annotations

import json
import secrets
import shutil
import textwrap
import time
from dataclasses import dataclass, field

import pytest

from metatune import cli
from metatune.mbpp import data, execute, sandbox
from metatune.mbpp.samples import Sample, read_samples

TIMEOUT = 3.0  # numpy imports in the sandbox take a while on a loaded machine
pytestmark = pytest.mark.skipif(not shutil.which("bwrap"), reason="the sandbox needs bubblewrap")

S = secrets.randbelow(10**12) + 10**12  # the secret expected value: 13 digits
SF = 1 + secrets.randbelow(10**9) / 10**9
HASH_MODULUS = (1 << 61) - 1


@dataclass(frozen=True)
class Case:
    tests: tuple[str, ...]
    correct: str
    wrong: str
    imports: tuple[str, ...] = ()
    setup: str = ""
    wrong_statuses: frozenset[str] = field(default=frozenset({"failed"}))
    reference: str = ""  # the task's reference solution, when it is not the correct control itself


def problem(case: Case, task_id: int) -> data.Problem:
    # The reference solution decides which names are the completion's (here: the correct control).
    return data.Problem(task_id, "t", case.reference or case.correct, case.tests, case.setup, case.imports)


def run(pool, p: data.Problem, completions: list[str]) -> list[execute.Verdict]:
    samples = [Sample(p.task_id, c, i) for i, c in enumerate(completions)]
    return sorted(execute.execute({p.task_id: p}, samples, pool, TIMEOUT), key=lambda v: v.sample)


@pytest.fixture(scope="module")
def pool():
    with sandbox.SandboxPool(2, sandbox.SandboxSettings(timeout_s=TIMEOUT)) as p:
        yield p


@pytest.fixture(scope="module")
def pool1():
    """One worker: consecutive samples run on the same template, one after the other."""
    with sandbox.SandboxPool(1, sandbox.SandboxSettings(timeout_s=TIMEOUT)) as p:
        yield p


def check_case(pool, case: Case, task_id: int, wrong_first: bool = False) -> None:
    p = problem(case, task_id)
    order = [case.wrong, case.correct] if wrong_first else [case.correct, case.wrong]
    verdicts = run(pool, p, order)
    right, wrong = (verdicts[1], verdicts[0]) if wrong_first else (verdicts[0], verdicts[1])
    assert right.status == "passed", right
    assert wrong.status in case.wrong_statuses, wrong


EQ = ("class Eq:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
      "    __hash__ = object.__hash__\n")
ret = lambda v: f"def f():\n    return {v}\n"  # noqa: E731

# ---------------------------------------------------------------- class 1: the tests stay trusted

TRUSTED = {
    "rebinds math.isclose": Case(
        (f"assert math.isclose(f(), {SF!r}, rel_tol=1e-12)",), ret(repr(SF)),
        "import math\nmath.isclose = lambda *a, **k: True\n" + ret(0.0), ("import math",)),
    "swaps the math module in sys.modules": Case(
        (f"assert math.isclose(f(), {SF!r})",), ret(repr(SF)),
        "import sys, types\nfake = types.ModuleType('math')\nfake.isclose = lambda *a, **k: True\n"
        "sys.modules['math'] = fake\nmath = fake\n" + ret(0.0), ("import math",)),
    "binds its own math": Case(
        ("assert math.floor(f()) == 3",), ret(3.5),
        "class M:\n    floor = staticmethod(lambda x: 3)\nmath = M()\n" + ret(0.0), ("import math",)),
    "rebinds sys.getsizeof": Case(
        ("assert f((1, 'a')) == sys.getsizeof((1, 'a'))",), "import sys\ndef f(t):\n    return sys.getsizeof(t)",
        "import sys\nsys.getsizeof = lambda *a: 0\ndef f(t):\n    return 0", ("import sys",)),
    "defines its own set": Case(
        (f"assert set(f()) == set([{S}, 1])",), ret(f"[1, {S}]"), "def set(x):\n    return 0\n" + ret("[]")),
    "patches builtins.set": Case(
        (f"assert set(f()) == set([{S}])",), ret(f"[{S}]"),
        "import builtins\nbuiltins.set = lambda *a: 0\n" + ret("[]")),
    "patches builtins.sorted": Case(
        (f"assert sorted(f()) == [1, {S}]",), ret(f"[{S}, 1]"),
        EQ + "import builtins\nbuiltins.sorted = lambda x: Eq()\n" + ret("[]")),
    "rebinds len": Case(("assert len(f()) == 3",), ret("[1, 2, 3]"), "len = lambda x: 3\n" + ret("[]")),
    "patches abs": Case(
        (f"assert abs(f() - {SF!r}) < 1e-9",), ret(repr(SF)),
        "import builtins\nbuiltins.abs = lambda x: 0\n" + ret(0.0)),
    "rebinds str": Case((f"assert str(f()) == '{S}'",), ret(S), EQ + "str = lambda x: Eq()\n" + ret(0)),
    "patches isinstance": Case(
        ("assert isinstance(f(), tuple)",), ret("(1,)"),
        "import builtins\nbuiltins.isinstance = lambda *a: True\n" + ret("[1]"),
        wrong_statuses=frozenset({"failed", "error"})),  # error: json in the sandbox breaks too
    "returns an always-equal object": Case((f"assert f() == {S}",), ret(S), EQ + ret("Eq()")),
    "returns an int subclass that equals anything": Case(
        (f"assert f() == {S}",), ret(S),
        f"class I(int):\n    def __eq__(self, o): return True\n    def __repr__(self): return '{S}'\n"
        "    __hash__ = int.__hash__\n" + ret("I(0)")),
    "returns a str subclass that equals anything": Case(
        (f"assert f() == '{S}'",), ret(f"'{S}'"),
        "class T(str):\n    def __eq__(self, o): return True\n    __hash__ = str.__hash__\n" + ret("T('')")),
    "returns a list subclass with a lying __iter__": Case(
        (f"assert f() == [{S}]",), ret(f"[{S}]"),
        f"class L(list):\n    def __iter__(self): return iter([{S}])\n    def __eq__(self, o): return True\n"
        + ret("L()")),
    "returns a float subclass that equals anything": Case(
        (f"assert f() == {SF!r}",), ret(repr(SF)),
        "class F(float):\n    def __eq__(self, o): return True\n    __hash__ = float.__hash__\n" + ret("F(0.0)")),
    "patches the encoder": Case(
        (f"assert f() == {S}",), ret(S),
        "import sys\nsys.modules['wire'].encode = lambda v, depth=0: ['bool', True]\n" + ret(0)),
    "forges a whole result document": Case(
        (f"assert f() == {S}", f"assert f() + 1 == {S + 1}"), ret(S),
        "import os\nos.write(3, b'[\"loaded\", [[\"ok\", [\"bool\", true]], [\"ok\", [\"bool\", true]]]]')\n"
        "os._exit(0)"),
    "defines the function through a builtin's name": Case(
        (f"assert max(f(), 0) == {S}",), ret(S), "def max(*a):\n    return Eq()\n" + EQ + ret(0)),
    "looks for the expected value in frames, gc and /proc": Case(
        (f"assert f() == {S}",), ret(S),
        textwrap.dedent(
            """
            import gc, os, re, sys
            def _numbers(text):
                return [int(m) for m in re.findall(r"\\d{13}", text)]
            def f():
                found = []
                frame = sys._getframe()
                while frame is not None:
                    found += _numbers(repr(frame.f_locals)) + _numbers(repr(list(frame.f_globals)))
                    frame = frame.f_back
                for o in gc.get_objects():
                    try:
                        found += _numbers(repr(o)[:10000])
                    except Exception:
                        pass
                for pid in os.listdir("/proc"):
                    for part in ("cmdline", "environ"):
                        try:
                            with open(f"/proc/{pid}/{part}", "rb") as fh:
                                found += _numbers(fh.read(1 << 20).decode("latin-1"))
                        except Exception:
                            pass
                return found[0] if found else 0
            """
        )),
}


@pytest.mark.parametrize("name", list(TRUSTED))
def test_class1_tests_stay_trusted(pool, name):
    check_case(pool, TRUSTED[name], 1000 + list(TRUSTED).index(name))


def test_class1_on_the_real_tasks_the_review_named(pool, shared):
    """Task 596 (sys.getsizeof), sanitized task 2 (set) and a sanitized isclose task, with their references."""
    full = data.by_id(data.load_local(shared / "mbpp" / "mbpp.jsonl"))
    sanitized = data.load_local(shared / "mbpp" / "sanitized-mbpp.json")
    isclose = next(p for p in sanitized if any("math.isclose" in t for t in p.tests))
    name = isclose.tests[0].split("isclose(")[1].split("(")[0]
    cases = [
        (full[596], "import sys\nsys.getsizeof = lambda *a: 0\ndef tuple_size(t):\n    return 0"),
        (data.by_id(sanitized)[2], "def set(x):\n    return 0\ndef similar_elements(a, b):\n    return 0"),
        (isclose, f"import math\nmath.isclose = lambda *a, **k: True\ndef {name}(*a):\n    return 0.0"),
    ]
    for p, wrong in cases:
        right, bad = run(pool, p, [p.code, wrong])
        assert right.status == "passed" and bad.status == "failed", (p.task_id, right, bad)


# ---------------------------------------------------------------- class 2: no memory between tasks

LEAK = data.Problem(2000, "t", ret(S), (f"assert f() == {S}",))
SCAN = data.Problem(2004, "t", ret(f"[{S}]"), (f"assert {S} in f()",))
SCAN_MEMORY = textwrap.dedent(
    """
    import ctypes, re
    def f():
        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: the sandbox made us undumpable
        pattern = re.compile(rb"(?<![0-9])[0-9]{13}(?![0-9])")
        found = set()
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                fields = line.split()
                if "rw" not in fields[1] or (len(fields) > 5 and not fields[5].startswith("[heap")):
                    continue  # anonymous writable memory only: where data lives
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                try:
                    mem.seek(lo)
                    found.update(int(m) for m in pattern.findall(mem.read(hi - lo)))
                except (OSError, OverflowError, ValueError):
                    pass
        return sorted(found)
    """
)
GC_SCAN = textwrap.dedent(
    """
    import gc
    def f():
        found = []
        for o in gc.get_objects():  # dicts (namespaces, instances) and tuples (constants); not `found` itself
            items = o.values() if type(o) is dict else o if type(o) is tuple else ()
            for x in items:
                if type(x) is int and 10**12 <= x < 10**13:
                    found.append(x)
                elif type(x) is str and x.isdigit() and len(x) == 13:
                    found.append(int(x))
        return found
    """
)
PLANT_EVERYWHERE = ret(S).replace(
    "def f():",
    textwrap.dedent(
        f"""
        import ctypes, os, socket, time
        for path in ("/tmp/leak", "/dev/shm/leak"):
            with open(path, "w") as fh:
                fh.write("{S}")
        libc = ctypes.CDLL(None, use_errno=True)
        shm = libc.shmget(0x4D42, 64, 0o1666)
        if shm >= 0:
            libc.shmat.restype = ctypes.c_void_p
            ctypes.memmove(libc.shmat(shm, None, 0), b"{S}", 13)
        libc.syscall(248, b"user", b"mbpp-leak", b"{S}", 13, -4)  # add_key to the user keyring
        libc.syscall(248, b"user", b"mbpp-leak", b"{S}", 13, -3)  # ... and to the session keyring
        if os.fork() == 0:
            os.setsid()
            server = socket.socket(socket.AF_UNIX)
            server.bind("\\0mbpp-leak")
            server.listen(8)
            while True:
                conn, _ = server.accept()
                conn.sendall(b"{S}")
                conn.close()
        time.sleep(0.2)
        def f():"""
    ).strip("\n"),
)
READ_LEAKS = textwrap.dedent(
    """
    import ctypes, socket
    def f():
        for path in ("/tmp/leak", "/dev/shm/leak"):
            try:
                return int(open(path).read())
            except (OSError, ValueError):
                pass
        libc = ctypes.CDLL(None, use_errno=True)
        shm = libc.shmget(0x4D42, 64, 0)
        if shm >= 0:
            libc.shmat.restype = ctypes.c_void_p
            return int(ctypes.string_at(libc.shmat(shm, None, 0), 13))
        buf = ctypes.create_string_buffer(64)
        for keyring in (-4, -3, -5):  # user, session, user-session
            key = libc.syscall(250, 10, keyring, b"user", b"mbpp-leak", 0)  # KEYCTL_SEARCH
            if key > 0 and libc.syscall(250, 11, key, buf, 64) > 0:  # KEYCTL_READ
                return int(buf.value)
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect("\\0mbpp-leak")
            return int(s.recv(64))
        except OSError:
            pass
        return 0
    """
)


def test_class2_the_scanners_find_what_is_there(pool1):
    """Positive control: both scanners find a 13-digit number their own process holds."""
    planted = secrets.randbelow(10**12) + 10**12
    p = data.Problem(2001, "t", ret(f"[{planted}]"), (f"assert {planted} in f()",))
    held = f"\nheld = (b'{planted}', {planted})\n"
    assert [v.status for v in run(pool1, p, [SCAN_MEMORY + held, GC_SCAN + held])] == ["passed", "passed"]


def test_class2_a_later_sample_finds_no_earlier_sample_in_its_memory(pool1):
    """Correct samples (whose code and result hold S) run first on the same worker; the scanners after them
    find nothing. Order: correct, memory scan, correct, gc scan."""
    verdicts = run(pool1, SCAN, [SCAN.code, SCAN_MEMORY, SCAN.code, GC_SCAN])
    assert [v.status for v in verdicts] == ["passed", "failed", "passed", "failed"], verdicts


def test_class2_nothing_planted_by_an_earlier_sample_survives(pool1):
    """Files in /tmp and /dev/shm, SysV shared memory, keys in the user and session keyrings and a daemon on
    an abstract socket, all left by a correct sample: the reader after it (same worker) finds none."""
    p = data.Problem(2002, "t", PLANT_EVERYWHERE, (f"assert f() == {S}",))
    verdicts = run(pool1, p, [PLANT_EVERYWHERE, READ_LEAKS, PLANT_EVERYWHERE, READ_LEAKS])
    assert [v.status for v in verdicts] == ["passed", "failed", "passed", "failed"], verdicts
    assert "raised" not in verdicts[1].reason


def test_class2_the_reader_can_read_what_its_own_task_plants(pool1):
    """Positive control for the reader: planting and reading in one task does find S."""
    p = data.Problem(2003, "t", PLANT_EVERYWHERE, (f"assert f() == {S}",))
    both = PLANT_EVERYWHERE.replace("def f():\n    return", "def _unused():\n    return") + READ_LEAKS
    assert run(pool1, p, [both])[0].status == "passed"


def test_class2_order_of_samples_and_workers(pool):
    """Many samples of one task over two workers, correct and wrong interleaved: every wrong one fails."""
    completions = [SCAN.code, SCAN_MEMORY, GC_SCAN, SCAN.code, SCAN_MEMORY, SCAN.code, GC_SCAN, SCAN.code]
    verdicts = run(pool, SCAN, completions)
    assert [v.passed for v in verdicts] == [c == SCAN.code for c in completions], verdicts


# ---------------------------------------------------------------- class 3: no influence on parent or neighbours

FORKS = textwrap.dedent(
    f"""
    import ctypes, os
    def f():
        libc = ctypes.CDLL(None)
        assert libc.semget(0, 1, 0o1600) >= 0  # IPC_PRIVATE
        assert libc.syscall(248, b"user", b"probe", b"x", 1, -3) > 0  # add_key to the session keyring
        kids = []
        for _ in range(8):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            kids.append(pid)
        for pid in kids:
            os.waitpid(pid, 0)
        with open("/tmp/probe", "wb") as fh:
            fh.write(b"x" * (1 << 20))
        os.mkdir("/tmp/x")
        return {S}
    """
)
FORKS_PROBLEM = data.Problem(3000, "t", FORKS, (f"assert f() == {S}",))
VISIBLE_PIDS = "import os\npids = [int(p) for p in os.listdir('/proc') if p.isdigit()] + [os.getppid(), 1]\n"
NEIGHBOURS = {
    "prlimit on every process it can see": VISIBLE_PIDS + textwrap.dedent(
        """
        import resource
        for pid in pids:
            for limit, value in ((resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NOFILE, 3),
                                 (resource.RLIMIT_STACK, 1 << 16), (resource.RLIMIT_NPROC, 0)):
                try:
                    resource.prlimit(pid, limit, (value, value))
                except (OSError, ValueError):
                    pass
        """),
    "setpriority and scheduler changes": VISIBLE_PIDS + textwrap.dedent(
        """
        for pid in pids:
            for call in (lambda: os.setpriority(os.PRIO_PROCESS, pid, 19),
                         lambda: os.sched_setaffinity(pid, {0}),
                         lambda: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))):
                try:
                    call()
                except OSError:
                    pass
        for who, which in ((os.getuid(), os.PRIO_USER), (0, os.PRIO_PGRP)):
            try:
                os.setpriority(which, who, 19)
            except OSError:
                pass
        """),
    "kills every process it can": "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
    "kills its parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(0, signal.SIGKILL)\n",
    "ptrace-attaches to everything it can see": VISIBLE_PIDS + textwrap.dedent(
        """
        import ctypes
        libc = ctypes.CDLL(None)
        for pid in pids:
            libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
        """),
    "a fork swarm that sleeps": textwrap.dedent(
        """
        import os, time
        while True:
            try:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
            except OSError:
                break
        time.sleep(60)
        """),
    "fills /tmp and /dev/shm": textwrap.dedent(
        """
        for path in ("/tmp/fill", "/dev/shm/fill"):
            try:
                with open(path, "wb") as fh:
                    while True:
                        fh.write(b"x" * (1 << 20))
            except OSError:
                pass
        """),
    "leaves an unremovable directory in /tmp": textwrap.dedent(
        """
        import os
        os.makedirs("/tmp/x/y/z")
        os.chmod("/tmp/x/y", 0)
        os.chmod("/tmp/x", 0o500)
        """),
    "exhausts SysV IPC": textwrap.dedent(
        """
        import ctypes
        libc = ctypes.CDLL(None)
        for key in range(1, 40000):
            if libc.semget(key, 1, 0o1666) < 0 and libc.msgget(key, 0o1666) < 0:
                break
        for key in range(1, 5000):
            if libc.shmget(key, 1 << 20, 0o1666) < 0:
                break
        """),
    "exhausts the keyring quota": textwrap.dedent(
        """
        import ctypes
        libc = ctypes.CDLL(None)
        for i in range(100000):
            if libc.syscall(248, b"user", b"k%d" % i, b"x" * 2000, 2000, -4) < 0:
                break
        """),
    "a detached daemon that keeps killing": textwrap.dedent(
        """
        import os, signal, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                deadline = time.time() + 5
                while time.time() < deadline:
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except OSError:
                        pass
            os._exit(0)
        time.sleep(0.1)
        """),
    "lowers its own limits and exits": "import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (4, 4))\n",
}


@pytest.mark.parametrize("name", list(NEIGHBOURS))
def test_class3_the_next_task_on_the_same_worker_is_unaffected(pool1, name):
    """The hostile sample runs first; the correct one after it on the same worker forks, writes /tmp, mkdirs."""
    hostile = NEIGHBOURS[name] + "\ndef f():\n    return 0\n"
    verdicts = run(pool1, FORKS_PROBLEM, [hostile, FORKS])
    assert verdicts[0].status != "passed" and verdicts[1].status == "passed", verdicts


def test_class3_a_fork_swarm_does_not_starve_the_other_worker(pool):
    """Two workers: swarms and correct forking samples interleaved; every correct one passes meanwhile."""
    swarm = NEIGHBOURS["a fork swarm that sleeps"]
    verdicts = run(pool, FORKS_PROBLEM, [swarm, FORKS, swarm, FORKS, FORKS, swarm, FORKS])
    assert [v.passed for v in verdicts] == [False, True, False, True, True, False, True], verdicts
    assert {v.status for v in verdicts if not v.passed} == {"timeout"}


# ---------------------------------------------------------------- class 4: the judge never dies

def forge(payload: bytes) -> str:
    return f"import os\nos.write(3, {payload!r})\nos._exit(0)\n"


COLLIDING = f"[k * {HASH_MODULUS} + 7 for k in range(30000)]"  # under the output cap
JUDGE = {
    # The task is pid 1 of its own pid namespace, which ignores signals it sends itself: these fail, where the
    # weaker sandbox has them killed (test_mbpp_sandbox.py) and execute.judge names the signal (unit test below).
    "a real-time signal to itself": ("import os, signal\nos.kill(os.getpid(), signal.SIGRTMIN + 3)", {"failed"}),
    "a real-time signal to itself inside the call": (
        "import os, signal\ndef f():\n    os.kill(os.getpid(), signal.SIGRTMAX)", {"failed"}),
    "an over-long int literal": (forge(b'["loaded", [["ok", ["int", "' + b"f" * 200_000 + b'"]]]]'), {"error"}),
    "a bare JSON number of 100,000 digits": (forge(b'["loaded", [["ok", 1' + b"0" * 100_000 + b"]]]"), {"error"}),
    "deeply nested brackets": (forge(b"[" * 500_000), {"error"}),
    "a forged set of ints sharing one hash": (
        f"import json, os\nitems = [['int', format(k * {HASH_MODULUS} + 7, 'x')] for k in range(30000)]\n"
        "os.write(3, json.dumps(['loaded', [['ok', ['set', items]]]]).encode())\nos._exit(0)", {"error"}),
    "a list of ints sharing one hash, for the check's set()": (f"def f():\n    return {COLLIDING}", {"error"}),
    "bytes that are not UTF-8": (forge(b"\xff\xfe\xfd"), {"error"}),
    "a document of the wrong shape": (forge(b'{"load_error": null, "values": [["ok", ["bool", true]]]}'), {"error"}),
    "too few values": (forge(b'["loaded", []]'), {"error"}),
    "a load error that is not text": (forge(b'["load_error", [[[["x"]]]]]'), {"error"}),
    "an unknown tag": (forge(b'["loaded", [["ok", ["pickle", "gASVAAAA"]]]]'), {"error"}),
    "floods the result socket": ("import os\nfor _ in range(40):\n    os.write(3, b'x' * (1 << 16))", {"error"}),
    "closes its result socket": ("import os\nos.close(3)\ndef f():\n    return 0", {"error"}),
    "an expression nested past the parser": ("x = " + "1+" * 200_000 + "1", {"error"}),
    "brackets nested past the tokenizer": ("x = " + "(" * 300 + ")" * 300, {"syntax_error"}),
    "null bytes": ("def f():\x00\n    return 1", {"syntax_error"}),
    "unbounded recursion in the call": ("def f():\n    return f()", {"failed"}),
    "an exception whose str() raises": (
        "class E(Exception):\n    def __str__(self): raise E()\ndef f():\n    raise E()", {"failed"}),
    "a huge exception message": ("def f():\n    raise ValueError('x' * 10**7)", {"failed"}),
    "a value nested 100,000 deep": (
        "def f():\n    v = []\n    for _ in range(100000):\n        v = [v]\n    return v", {"failed"}),
    "stops itself": ("import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\nos.kill(0, signal.SIGSTOP)",
                     {"failed", "timeout"}),
    "ignores SIGALRM and spins": (
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass", {"timeout"}),
    "sys.exit(0) before the tests": ("import sys\nsys.exit(0)", {"error"}),
    "os._exit(0) inside the call": ("import os\ndef f():\n    os._exit(0)", {"error"}),
    "execs another program": ("import os\nos.execv('/bin/true', ['true'])", {"error"}),
    "one huge allocation": ("x = bytearray(1 << 34)", {"error"}),
}
JUDGE_PROBLEM = data.Problem(4000, "t", ret(S), (f"assert f() == {S}",))


def test_class4_every_hostile_output_is_a_per_task_verdict(pool):
    """All of them in one run with correct samples between them: the run ends, each gets its verdict with a
    reason, the correct ones pass, and the judge's own time stays bounded."""
    names = list(JUDGE)
    completions = [c for name in names for c in (JUDGE[name][0], JUDGE_PROBLEM.code)]
    start = time.monotonic()
    verdicts = run(pool, JUDGE_PROBLEM, completions)
    assert time.monotonic() - start < 60
    for name, hostile, control in zip(names, verdicts[::2], verdicts[1::2]):
        assert hostile.status in JUDGE[name][1] and hostile.reason, (name, hostile)
        assert control.status == "passed", (name, control)
    reasons = {name: v.reason for name, v in zip(names, verdicts[::2])}
    assert "share one hash" in reasons["a list of ints sharing one hash, for the check's set()"]
    assert "nested" in reasons["an expression nested past the parser"]


@pytest.mark.parametrize(
    "reply, status, reason",
    [
        ({"exit": -37}, "error", "killed by signal 37 before reporting"),
        ({"exit": -9}, "error", "killed by SIGKILL before reporting"),
        ({"exit": -24}, "timeout", "CPU time limit"),
        ({"exit": None}, "error", "the task ended without a status"),
        ({"exit": 0, "output": b"[" * 10**6}, "error", "malformed result: not a JSON document (RecursionError)"),
        ({"exit": 0, "setup_error": "no status"}, "error", "no status"),
        ({"exit": 0, "output": b'["load_error", "sandbox setup: PermissionError: unshare"]'}, "error",
         "sandbox setup: PermissionError: unshare"),
        ({"exit": 0, "truncated": True}, "error", "result larger than the output cap"),
        ({"worker_error": "gone"}, "error", "gone"),
    ],
)
def test_class4_judge_turns_any_reply_into_a_verdict(reply, status, reason):
    full = {"exit": 0, "timed_out": False, "wall": 0.0, "setup_error": None, "output": b"", "truncated": False}
    checks = execute.prepare(JUDGE_PROBLEM, JUDGE_PROBLEM.code)
    assert execute.judge(checks, {**full, **reply}, TIMEOUT) == (status, reason)


def test_class4_the_cli_writes_its_results_whatever_the_samples(tmp_path):
    """`metatune mbpp-score` on a samples file of nothing but hostile completions (and one control)."""
    problems = tmp_path / "problems.jsonl"
    p = JUDGE_PROBLEM
    problems.write_text(json.dumps({"task_id": p.task_id, "text": "t", "code": p.code, "test_list": list(p.tests)}))
    samples = tmp_path / "samples.jsonl"
    lines = [{"task_id": p.task_id, "completion": c, "sample": i}
             for i, c in enumerate([p.code] + [JUDGE[name][0] for name in JUDGE])]
    lines += [{"task_id": p.task_id, "completion": bad, "sample": len(lines) + i}
              for i, bad in enumerate([None, 12, ["def f(): pass"], {"code": "x"}])]
    samples.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "results.json"
    argv = ["mbpp-score", "--problems", str(problems), "--samples", str(samples), "--out", str(out),
            "--timeout", str(TIMEOUT)]
    assert cli.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["n_samples"] == len(lines) and doc["per_task"][0]["n_passed"] == 1
    assert doc["per_task"][0]["status"] == "passed"
    verdicts = execute.run({p.task_id: p}, read_samples(samples)[-4:], sandbox.SandboxSettings(), 1)[0]
    assert [v.reason for v in verdicts] == [f"samples.jsonl:{len(lines) - 3 + i}: completion is a {t}, not a string"
                                            for i, t in enumerate(["NoneType", "int", "list", "dict"])]


# ---------------------------------------------------------------- class 5: correct answers scored right

NP = "import numpy as np\n"
TYPES = {
    "numpy int64": Case(("assert f() == 5",), NP + ret("np.int64(5)"), NP + ret("np.int64(6)")),
    "numpy bool_ in a bare assert": Case(("assert f()",), NP + ret("np.bool_(True)"), NP + ret("np.bool_(False)")),
    "numpy bool_ compared": Case(("assert f() == True",), NP + ret("np.True_"), NP + ret("np.False_")),
    "numpy float64": Case(("assert f() == 0.5",), NP + ret("np.float64(0.5)"), NP + ret("np.float32(0.25)")),
    "numpy scalars in a list": Case(("assert f() == [1, 2.5]",), NP + ret("[np.int32(1), np.float64(2.5)]"),
                                    NP + ret("[np.int32(1), np.float64(2.25)]")),
    "Fraction": Case(("assert f() == Fraction(1, 3)",), "from fractions import Fraction\n" + ret("Fraction(1, 3)"),
                     "from fractions import Fraction\n" + ret("Fraction(1, 4)"), ("from fractions import Fraction",)),
    "Fraction against a float": Case(("assert f() == 0.5",), "from fractions import Fraction\n" + ret("Fraction(1, 2)"),
                                     "from fractions import Fraction\n" + ret("Fraction(1, 3)")),
    "Decimal": Case(("assert f() == Decimal('1.10')",), "from decimal import Decimal\n" + ret("Decimal('1.1')"),
                    "from decimal import Decimal\n" + ret("Decimal('1.2')"), ("from decimal import Decimal",)),
    "dict keys against a set": Case(("assert f() == {1, 2}",), ret("{2: 'a', 1: 'b'}.keys()"),
                                    ret("{1: 'a', 3: 'b'}.keys()")),
    "dict items against a set": Case(("assert f() == {(1, 'a')}",), ret("{1: 'a'}.items()"), ret("{1: 'b'}.items()")),
    "dict values never equal a list": Case(("assert f() == [1, 2]",), ret("[1, 2]"), ret("{0: 1, 1: 2}.values()")),
    "a keys view listed in order": Case(("assert list(f()) == [2, 1]",), ret("{2: 0, 1: 0}.keys()"),
                                        ret("{1: 0, 2: 0}.keys()")),
    "re.Match in a bare assert": Case(("assert f('ab')",), "import re\ndef f(s):\n    return re.match('a', s)",
                                      "import re\ndef f(s):\n    return re.match('z', s)"),
    "re.Match under not": Case(("assert not f('zz')",), "import re\ndef f(s):\n    return re.match('a', s)",
                               "import re\ndef f(s):\n    return re.match('z', s)"),
    "an object in a bare assert": Case(("assert f() and not g()",),
                                       "class A:\n    pass\ndef f():\n    return A()\ndef g():\n    return None",
                                       "def f():\n    return object()\ndef g():\n    return object()"),
    "a function put in globals()": Case(
        ("assert sum(10, 15) == 6",),
        "globals()['sum'] = lambda a, b, _real=sum: _real(i for i in range(1, min(a, b)) if a % i == 0 and b % i == 0)",
        "globals()['sum'] = lambda a, b: 0",
        reference="def sum(a, b):\n    return 6"),  # MBPP task 126 names its function `sum`
    "a function made by exec": Case((f"assert f() == {S}",), f"exec('def f():\\n    return {S}')",
                                    "exec('def f():\\n    return 0')"),
    "a deque is not a list": Case(("assert f() == [1, 2]",), ret("[1, 2]"),
                                  "from collections import deque\n" + ret("deque([1, 2])")),
    "a deque equals a deque": Case(("assert f() == deque([1, 2])",),
                                   "from collections import deque\n" + ret("deque([1, 2])"),
                                   "from collections import deque\n" + ret("deque([2, 1])"),
                                   ("from collections import deque",)),
    "an int of 5,000 digits": Case(("assert f() == 10 ** 5000",), ret("10 ** 5000"), ret("10 ** 5000 + 1")),
    "a namedtuple": Case(("assert f() == (1, 2)",), "from collections import namedtuple\nP = namedtuple('P', 'a b')\n"
                         + ret("P(1, 2)"), ret("(2, 1)")),
    "a Counter": Case(("assert f() == {'a': 2}",), "from collections import Counter\n" + ret("Counter('aa')"),
                      "from collections import Counter\n" + ret("Counter('ab')")),
    "nan and inf": Case(("assert math.isnan(f()[0]) and math.isinf(f()[1])",), ret("(float('nan'), float('-inf'))"),
                        ret("(0.0, float('-inf'))"), ("import math",)),
    "is None and is True": Case(("assert f(0) is None and f(1) is True",),
                                "def f(x):\n    return None if x == 0 else True",
                                "def f(x):\n    return None if x == 0 else 1"),
    "a bytearray against bytes": Case(("assert f() == b'ab'",), ret("bytearray(b'ab')"), ret("bytearray(b'ba')")),
    "a range": Case(("assert f() == range(3)",), ret("range(0, 3)"), ret("range(4)")),
    "True counts as 1": Case(("assert f() == 1",), ret(True), ret(False)),
    "a class from the setup code": Case(
        ("assert depth(root) == 2",),
        "class Node:\n    def __init__(self, left=None):\n        self.left = left\n"
        "def depth(n):\n    return 0 if n is None else 1 + depth(n.left)",
        "class Node:\n    def __init__(self, left=None):\n        self.left = left\ndef depth(n):\n    return 3",
        setup="root = Node(Node())"),
    "state kept across the tests": Case(
        ("assert tick() == 1", "assert tick() == 2"),
        "n = 0\ndef tick():\n    global n\n    n += 1\n    return n",
        "def tick():\n    return 1"),
}


@pytest.mark.parametrize("name", list(TYPES))
def test_class5_correct_answers_pass_like_plain_python(pool, name):
    check_case(pool, TYPES[name], 5000 + list(TYPES).index(name), wrong_first=True)
