"""The sandbox against MBPP's reference solutions (positive control), hostile completions, and the places the
scorer must run: a venv under /tmp or /home, as root and as an unprivileged user.

The processes under test are the ones this test's own pool started (its bwrap processes and everything below
them, and the host uids it hands to tasks), never "every process of some user" on the host.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from metatune.mbpp import data, execute, sandbox
from metatune.mbpp.samples import Sample

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2
TIMEOUT = 1.0
IS_ROOT = os.geteuid() == 0
pytestmark = pytest.mark.skipif(not shutil.which("bwrap"), reason="the sandbox needs bubblewrap")


def task_uids(settings: sandbox.SandboxSettings, workers: int) -> range:
    return range(settings.uid_base, settings.uid_base + workers * sandbox.UID_SPAN)


def below(pids: list[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            procs += psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    return [p for p in procs if _alive(p)]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def with_uids(uids: range) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real in uids and _alive(p)]


# Depth of a task below the pool's bwrap process: bwrap -> bwrap (its pid 1) -> template -> task; without
# root the template first becomes pid 1 of a user and pid namespace of its own, one level further down.
TASK_DEPTH = 3 if IS_ROOT else 4


def leftover_task_processes(pool: sandbox.SandboxPool) -> list[psutil.Process]:
    """Processes below a task once it is over. Each worker holds the next task, forked ahead and waiting for
    its request: it has no processes of its own yet."""
    left = []
    for pid in pool.pids():
        level = [psutil.Process(pid)]
        for _ in range(TASK_DEPTH):
            level = [c for p in level for c in p.children()]
        left += [p for task in level for p in task.children(recursive=True) if _alive(p)]
    return left


@pytest.fixture(scope="module")
def pool():
    settings = sandbox.SandboxSettings(timeout_s=TIMEOUT)
    with sandbox.SandboxPool(WORKERS, settings) as p:
        pids = p.pids()
        assert len(pids) == WORKERS
        yield p
    assert below(pids) == [] and not any(psutil.pid_exists(pid) for pid in pids)
    assert with_uids(task_uids(settings, WORKERS)) == []  # closing the pool leaves no task process anywhere


def verdict(pool, problem: data.Problem, completion: str) -> execute.Verdict:
    (v,) = execute.execute({problem.task_id: problem}, [Sample(problem.task_id, completion)], pool, TIMEOUT)
    return v


@pytest.fixture(scope="module")
def mbpp(shared):
    return data.load_local(shared / "mbpp" / "mbpp.jsonl"), data.load_local(shared / "mbpp" / "sanitized-mbpp.json")


def test_reference_solutions_pass(mbpp):
    """Positive control: MBPP's own solutions for the 500 test tasks and every sanitized task, full sandbox,
    3 s, 2 workers. Task 123 (amicable numbers below 9999, ~2.5 s alone) may time out on a loaded machine."""
    full, sanitized = mbpp
    for problems in (data.select_split(full, "test"), sanitized):
        samples = [Sample(p.task_id, p.code) for p in problems]
        verdicts, isolation = execute.run(data.by_id(problems), samples, sandbox.SandboxSettings(), WORKERS)
        assert isolation == sandbox.isolation(sandbox.SandboxSettings())
        failed = {v.task_id: (v.status, v.reason) for v in verdicts if not v.passed}
        assert len(verdicts) == len(problems) and set(failed) <= {123}, failed
        assert all(status == "timeout" for status, _ in failed.values()), failed


SECRET_VALUE = secrets.randbelow(10**12) + 10**12
CORRECT = f"def target(x):\n    return {SECRET_VALUE}"
TARGET = data.Problem(task_id=9001, text="t", code=CORRECT, tests=(f"assert target(1) == {SECRET_VALUE}",))


def test_the_hostile_target_can_pass(pool):
    """Without this, 'does not pass' below would prove nothing."""
    assert verdict(pool, TARGET, CORRECT).status == "passed"


HOSTILE = {
    "infinite loop": ("def target(x):\n    while True:\n        pass", {"timeout"}),
    "sleep": ("import time\ndef target(x):\n    time.sleep(60)", {"timeout"}),
    "sys.exit(0) before the tests": ("import sys\nsys.exit(0)", {"error"}),
    "exit(0) before the tests": ("exit(0)", {"error"}),
    "raise KeyboardInterrupt": ("raise KeyboardInterrupt", {"error"}),
    "sys.exit(0) inside the call": ("import sys\ndef target(x):\n    sys.exit(0)", {"failed"}),
    "patched builtins": (
        "import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.issubclass = lambda *a: True\n"
        "builtins.type = lambda *a: int\nclass Eq:\n    def __eq__(self, o): return True\n"
        "def target(x):\n    return Eq()",
        {"failed", "error"},  # error: the patched isinstance also breaks json.dumps, so nothing is reported
    ),
    "execv a forger of results": (
        "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', "
        "\"import os; os.write(3, b'[\\\"loaded\\\", [[\\\"ok\\\", [\\\"bool\\\", true]]]]')\"])",
        {"failed"},
    ),
    "fork bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                  {"timeout"}),
    "unbounded allocation": ("x = []\nwhile True:\n    x.append(bytearray(1 << 28))", {"error", "timeout"}),
    "floods stdout and stderr": (
        "import sys\nfor _ in range(20000):\n    print('x' * 1000)\n    print('y' * 1000, file=sys.stderr)\n"
        "def target(x):\n    return 0",
        {"failed"},
    ),
    "detached sleeper (setsid, double fork)": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(600)\n"
        "    os._exit(0)\ndef target(x):\n    return 0",
        {"failed"},
    ),
    "kills its parent's process group": ("import os\nos.killpg(os.getpgid(os.getppid()), 9)", {"error", "failed"}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_completion_does_not_pass(pool, name):
    completion, statuses = HOSTILE[name]
    v = verdict(pool, TARGET, completion)
    assert v.status in statuses, v
    assert leftover_task_processes(pool) == []
    # The harness goes on: the next task is judged normally.
    assert verdict(pool, TARGET, CORRECT).status == "passed"


def test_cannot_write_outside_its_own_tmp(pool, tmp_path):
    tag = secrets.token_hex(6)
    targets = [Path("/root") / f"pwned-{tag}", ROOT / f"pwned-{tag}", tmp_path / f"pwned-{tag}",
               Path("/tmp") / f"pwned-{tag}", Path("/dev/shm") / f"pwned-{tag}", Path("/var/tmp") / f"pwned-{tag}"]
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
    assert [t for t in targets if t.exists()] == []  # /tmp and /dev/shm were the task's own, now gone


def test_cannot_read_secrets(pool, tmp_path):
    token = secrets.token_hex(16)
    files = [Path("/root") / f".mbpp-secret-{token[:8]}", Path(__file__).parent / f".mbpp-secret-{token[:8]}",
             tmp_path / "secret"]
    code = textwrap.dedent(
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
    problem = data.Problem(task_id=9002, text="t", code=code, tests=(f"assert steal() == {token!r}",))
    try:
        for f in files:
            f.write_text(token)
            f.chmod(0o644)  # readable by anyone who can reach it: only the sandbox may stop the read
        assert verdict(pool, problem, code).status == "failed"
    finally:
        for f in files:
            f.unlink(missing_ok=True)


def test_cannot_connect_to_localhost(pool):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        code = textwrap.dedent(
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
        problem = data.Problem(task_id=9003, text="t", code=code, tests=("assert probe() == 'connected'",))
        assert verdict(pool, problem, code).status == "failed"
        assert select.select([server], [], [], 0.2)[0] == []  # no connection ever arrived


def test_statuses_and_reasons(pool):
    p = data.Problem(task_id=9006, text="t", code="def f(x):\n    return x * x", tests=("assert f(2) == 4",
                                                                                      "assert f(3) == 9"))
    cases = {
        "def f(x):\n    return x * x": ("passed", ""),
        "def f(x):\n    return x + 2": ("failed", "test 2 failed: assert f(3) == 9"),
        "def f(x):\n    return 1 / 0": ("failed", "test 1: f(2) raised ZeroDivisionError: division by zero"),
        "def f(x) return x": ("syntax_error", "line 1: expected ':'"),
        "import no_such_module": ("error", "completion: ModuleNotFoundError: No module named 'no_such_module'"),
        "def f(x):\n    return iter([x])": ("failed", "test 1: f(2) raised TypeError: cannot return a list_iterator "
                                                       "(only built-in data types)"),
    }
    for completion, (status, reason) in cases.items():
        v = verdict(pool, p, completion)
        assert (v.status, v.reason) == (status, reason)


def test_nothing_remains_on_the_host(tmp_path):
    """Completions that leave files, shared memory, SysV IPC objects, keys and daemons behind: once the run is
    over, none of it exists on the host (processes, files, IPC objects owned by a task uid, keyring users)."""
    tag = secrets.token_hex(4)
    litter = textwrap.dedent(
        f"""
        import ctypes, os, time
        libc = ctypes.CDLL(None)
        for path in ("/tmp/litter-{tag}", "/dev/shm/litter-{tag}"):
            open(path, "w").write("x")
        libc.shmget(0x6D62, 4096, 0o1666)
        libc.semget(0x6D62, 1, 0o1666)
        libc.msgget(0x6D62, 0o1666)
        libc.syscall(248, b"user", b"litter-{tag}", b"x", 1, -4)
        libc.syscall(248, b"user", b"litter-{tag}", b"x", 1, -3)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        def f():
            return 1
        """
    )
    # uids of its own: the module's pool holds tasks forked ahead, under the default range
    settings = sandbox.SandboxSettings(timeout_s=TIMEOUT,
                                       uid_base=sandbox.SandboxSettings.uid_base + 8 * sandbox.UID_SPAN)
    uids = task_uids(settings, WORKERS)
    p = data.Problem(9010, "t", "def f():\n    return 1", ("assert f() == 1",))
    with sandbox.SandboxPool(WORKERS, settings) as pool:
        pids = pool.pids()
        verdicts = list(execute.execute({p.task_id: p}, [Sample(p.task_id, litter, i) for i in range(4)], pool,
                                        TIMEOUT))
        assert all(v.passed for v in verdicts), verdicts
    assert below(pids) == []
    assert [(q.pid, q.ppid(), q.status(), q.cmdline()[-1][:60]) for q in with_uids(uids)] == []
    assert list(Path("/tmp").glob(f"litter-{tag}")) == list(Path("/dev/shm").glob(f"litter-{tag}")) == []
    for kind in ("shm", "sem", "msg"):  # the host's own SysV IPC objects: none with our key
        rows = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        assert not [r for r in rows if int(r.split()[0]) == 0x6D62], kind
    if IS_ROOT:  # task keys belong to their own user namespace and uid: none is left on the host
        deadline = time.monotonic() + 10
        while (users := [ln for ln in Path("/proc/key-users").read_text().splitlines()
                         if int(ln.split(":")[0]) in uids]) and time.monotonic() < deadline:
            time.sleep(0.2)  # the kernel collects unreferenced keys in the background
        assert users == []
    assert f"litter-{tag}" not in Path("/proc/keys").read_text()


def test_without_bubblewrap_the_weaker_isolation_is_explicit_and_stated():
    settings = sandbox.SandboxSettings(timeout_s=TIMEOUT, bwrap=None)
    with pytest.raises(sandbox.SandboxError, match="bubblewrap"):
        sandbox.SandboxPool(1, settings)
    weak = sandbox.SandboxSettings(timeout_s=TIMEOUT, bwrap=None, allow_weak=True)
    p = data.Problem(task_id=9007, text="t", code="def f(x):\n    return x * x", tests=("assert f(2) == 4",))
    samples = [Sample(9007, "def f(x):\n    return x * x", 0), Sample(9007, "def f(x):\n    return x", 1),
               Sample(9007, "while True:\n    pass", 2),
               Sample(9007, "import os, signal\nos.kill(os.getpid(), signal.SIGRTMIN + 3)", 3),
               Sample(9007, "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\n"
                            "def f(x):\n    return x * x", 4)]
    with sandbox.SandboxPool(1, weak) as pool:
        pids = pool.pids()
        verdicts = sorted(execute.execute({9007: p}, samples, pool, TIMEOUT), key=lambda v: v.sample)
        assert len(below(pids)) <= 2  # the next task, forked ahead; the escaped sleeper was killed
    assert pool.isolation == ("setuid+rlimits" if IS_ROOT else "rlimits")
    assert [v.status for v in verdicts] == ["passed", "failed", "timeout", "error", "passed"]
    assert verdicts[3].reason == f"killed by signal {int(__import__('signal').SIGRTMIN) + 3} before reporting"


# ---------------------------------------------------------------- where the scorer runs

DRIVER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    from metatune.mbpp import sandbox, wire
    good = {"code": "import fractions\\ndef f():\\n    return fractions.Fraction(1, 3)", "setup": "", "imports": "",
            "cuts": [["f()", "value"], ["open('/tmp/t', 'w').write('ok')", "value"]]}
    bad = dict(good, code="def f():\\n    return 0")
    with sandbox.SandboxPool(1, sandbox.SandboxSettings(timeout_s=5)) as pool:
        replies = [r for _, r in sorted(pool.run_all([good, bad]))]
    values = [wire.decode_result(r["output"], 2)[1] for r in replies]
    print(json.dumps({"isolation": pool.isolation, "uid": os.getuid(), "prefix": sys.prefix,
                      "values": [[str(v) for _, v in vs] for vs in values]}))
    """
)


def _copy_of_src(base: Path) -> Path:
    """The library where an unprivileged user can read it (the checkout may be under /root)."""
    src = base / "src"
    shutil.copytree(ROOT / "src" / "metatune", src / "metatune", ignore=shutil.ignore_patterns("__pycache__"))
    for d in [src, *src.rglob("*")]:
        d.chmod(0o755 if d.is_dir() else 0o644)
    return src


@pytest.mark.parametrize("parent", ["/tmp", "/home"])
@pytest.mark.parametrize("user", ["root", "nobody"])
def test_the_scorer_runs_from_a_venv_as_root_and_as_nobody(parent, user):
    """A venv under /tmp (the sandbox mounts each task's own /tmp over it, and binds the prefix back) and
    under /home, run as root (tasks get uids of their own) and as an unprivileged user (bubblewrap makes a
    user namespace, and each task a nested one). A correct and a wrong completion, judged as data."""
    if not IS_ROOT:
        pytest.skip("switching users needs root")
    if not Path(parent).is_dir() or os.stat(parent).st_mode & 0o005 != 0o005:
        pytest.skip(f"{parent} is not there for everyone")
    # The base interpreter must be readable by nobody as well: a venv of a pyenv under /root would not be.
    base_python = sys.executable if user == "root" else shutil.which("python3", path="/usr/bin:/bin")
    if base_python is None:
        pytest.skip("no system python3 for an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="mbpp-venv-", dir=parent))
    try:
        base.chmod(0o755)
        subprocess.run([base_python, "-m", "venv", "--without-pip", str(base / "venv")], check=True)
        src = _copy_of_src(base)
        (base / "driver.py").write_text(DRIVER)
        cmd = [str(base / "venv" / "bin" / "python"), str(base / "driver.py"), str(src)]
        if user == "nobody":
            cmd = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")
        assert out.returncode == 0, out.stderr[-3000:]
        doc = __import__("json").loads(out.stdout.splitlines()[-1])
        assert doc["prefix"].startswith(str(base))
        assert doc["uid"] == (0 if user == "root" else 65534)
        assert doc["isolation"] == ("bwrap+setuid+rlimits" if user == "root" else "bwrap+rlimits")
        assert doc["values"] == [["1/3", "2"], ["0", "2"]]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_python_prefix_is_bound_after_the_sandbox_tmp():
    """bwrap applies its arguments in order: a /tmp set up after the prefix would hide a venv under /tmp."""
    argv = sandbox.bwrap_argv(sandbox.SandboxSettings(), {})
    prefix_binds = [i for i, a in enumerate(argv) if a == "--ro-bind" and argv[i + 1] in sandbox._python_prefixes()]
    tmp_entries = [i for i, a in enumerate(argv) if a.startswith("/tmp") and argv[i - 1] in ("--tmpfs", "--dir")]
    assert prefix_binds and all(t < b for t in tmp_entries for b in prefix_binds)
