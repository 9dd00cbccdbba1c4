"""Run untrusted programs in a pool of sandboxed, pre-forked workers.

Each worker is one long-lived zygote (zygote.py) inside its own bubblewrap sandbox:
  - namespaces: no network (--unshare-net: only a loopback that nothing listens on), its own pid namespace
    (task processes cannot see or signal anything outside, and all die with the sandbox), ipc, uts, cgroup;
  - file system: an allow-list, not a deny-list: /usr (read-only), the Python installation (read-only), a
    fresh /proc, a minimal /dev and a size-limited tmpfs /tmp that is the only writable place. /root, /home,
    /work, /etc's secrets and every other path simply do not exist in there;
  - user: bwrap starts as root without a user namespace (so that uid 65534 is the real `nobody` of the host,
    not a mapped alias of root); the zygote drops to nobody before reading its first request, keeping no
    capabilities (bwrap already dropped all but CAP_SETUID/CAP_SETGID);
  - per task (done by the zygote): fork, new session, rlimits, wall timeout, SIGKILL of every process left.
The zygote forks per task instead of starting an interpreter: that is most of the speed.

Fallbacks, named in `isolation` and so in every results file: without root, bubblewrap runs in a user
namespace and the tasks keep the caller's uid ("bwrap+rlimits"); without bubblewrap (allow_weak only) there
are no namespaces: the task sees the file system and the network and a process that leaves its process
group can survive ("setuid+rlimits" as root, "rlimits" otherwise).
"""

from __future__ import annotations

import json
import math
import os
import queue
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ZYGOTE = Path(__file__).with_name("zygote.py")
SANDBOX_ZYGOTE = "/sandbox/zygote.py"  # where the zygote appears inside the sandbox
NOBODY = 65534
STRONG = "bwrap+setuid+rlimits"


class SandboxError(RuntimeError):
    """The sandbox cannot start, or a worker died under a task."""


@dataclass(frozen=True)
class SandboxSettings:
    timeout_s: float = 3.0  # wall time per task (imports + completion + all its tests)
    memory_mb: int = 1024  # RLIMIT_AS of a task
    max_processes: int = 64  # RLIMIT_NPROC: counts every process and thread of the uid
    max_file_mb: int = 16  # RLIMIT_FSIZE: largest file a task may write
    max_open_files: int = 64  # RLIMIT_NOFILE
    max_output_bytes: int = 1 << 20  # cap on the result a task sends back
    tmp_mb: int = 64  # size of the sandbox's writable /tmp
    uid: int = NOBODY  # who tasks run as, when we are root
    gid: int = NOBODY
    bwrap: str | None = "bwrap"  # None: do not use bubblewrap
    allow_weak: bool = False  # run without bubblewrap rather than fail (stated in `isolation`)


def isolation(settings: SandboxSettings) -> str:
    """What protects the host for these settings on this machine."""
    has_bwrap = settings.bwrap is not None and shutil.which(settings.bwrap) is not None
    root = os.geteuid() == 0
    if has_bwrap:
        return STRONG if root else "bwrap+rlimits"
    return "setuid+rlimits" if root else "rlimits"


def _rlimits(s: SandboxSettings) -> dict[str, int]:
    return {
        # CPU time is the backstop behind the wall timeout (a task that sleeps uses none).
        "RLIMIT_CPU": math.ceil(s.timeout_s) + 1,
        "RLIMIT_AS": s.memory_mb << 20,
        "RLIMIT_NPROC": s.max_processes,
        "RLIMIT_FSIZE": s.max_file_mb << 20,
        "RLIMIT_NOFILE": s.max_open_files,
        "RLIMIT_CORE": 0,
    }


def _python_prefixes() -> list[str]:
    """Directories the interpreter needs (a venv's and the base installation's), outside /usr."""
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    return sorted(d for d in dirs if not d.startswith("/usr/"))


def bwrap_argv(s: SandboxSettings, zygote_cfg: dict) -> list[str]:
    argv = [shutil.which(s.bwrap) or s.bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if os.geteuid() != 0:
        argv += ["--unshare-user"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64"):  # merged-/usr symlinks, or the real directories
        path = Path("/", top)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for prefix in _python_prefixes():
        # bwrap copies the modes of the host's parents (/root is 0700): make the path walkable for nobody.
        parents = [p for p in reversed(Path(prefix).parents) if str(p) != "/"]
        for parent in parents:
            argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(s.tmp_mb << 20), "--tmpfs", "/tmp"]
    argv += ["--ro-bind", str(ZYGOTE), SANDBOX_ZYGOTE]
    if os.geteuid() == 0:
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    argv += ["--chdir", "/tmp", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]
    # One thread per library: RLIMIT_NPROC counts threads, and BLAS pools would eat it.
    argv += ["--setenv", "OMP_NUM_THREADS", "1", "--setenv", "OPENBLAS_NUM_THREADS", "1"]
    return argv + ["--", sys.executable, "-I", "-B", SANDBOX_ZYGOTE, json.dumps(zygote_cfg)]


class Worker:
    """One zygote process (inside bubblewrap when available) and the pipes to it."""

    def __init__(self, settings: SandboxSettings):
        self.settings = settings
        self.isolation = isolation(settings)
        if not self.isolation.startswith("bwrap") and not settings.allow_weak:
            raise SandboxError(
                f"bubblewrap ({settings.bwrap!r}) not found: install it (apt-get install bubblewrap) "
                "or allow the weaker isolation explicitly (allow_weak / --allow-weak-sandbox)"
            )
        self.proc: subprocess.Popen | None = None
        self.tmp_root: str | None = None
        # The zygote's own stderr (tasks cannot write to it): its traceback, should it ever crash.
        self.log = tempfile.TemporaryFile()
        self.start()

    def start(self) -> None:
        s = self.settings
        use_bwrap = self.isolation.startswith("bwrap")
        if not use_bwrap:
            # No private /tmp: give the tasks a directory of their own that nobody may write to.
            self.tmp_root = tempfile.mkdtemp(prefix="mbpp-sandbox-")
            if os.geteuid() == 0:
                os.chown(self.tmp_root, s.uid, s.gid)
        cfg = {
            "uid": s.uid,
            "gid": s.gid,
            "limits": _rlimits(s),
            "max_output": s.max_output_bytes,
            "tmp_root": "/tmp" if use_bwrap else self.tmp_root,
            "own_pid_namespace": use_bwrap,
        }
        argv = bwrap_argv(s, cfg) if use_bwrap else [sys.executable, "-I", "-B", str(ZYGOTE), json.dumps(cfg)]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,  # so that close() can kill bwrap and everything under it at once
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        hello = self._receive(deadline=time.monotonic() + 60)
        if not hello.get("ready"):
            raise SandboxError(f"sandbox worker did not start: {hello}")

    def run(self, request: dict) -> dict:
        """Send one task, wait for its reply. A worker that dies or hangs is restarted and SandboxError raised."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            data = json.dumps(request).encode()
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
            # The zygote enforces the timeout; this margin only catches a zygote that is itself gone or stuck.
            return self._receive(deadline=time.monotonic() + float(request["timeout"]) + 10)
        except (OSError, SandboxError, ValueError) as e:
            self.close()
            self.start()
            raise SandboxError(f"sandbox worker died during the task ({e})") from None

    def _receive(self, deadline: float) -> dict:
        head = self._read_exact(4, deadline)
        return json.loads(self._read_exact(struct.unpack(">I", head)[0], deadline))

    def _read_exact(self, n: int, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise SandboxError("no reply from the sandbox worker in time")
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise SandboxError(f"sandbox worker exited (code {self.proc.wait()}){self._log_tail()}")
            buf.extend(chunk)
        return bytes(buf)

    def _log_tail(self) -> str:
        self.log.seek(0)
        tail = self.log.read()[-400:].decode("utf-8", "replace").strip()
        self.log.seek(0)
        self.log.truncate()
        return f": {tail}" if tail else ""

    def close(self) -> None:
        """Stop the zygote. Closing its stdin lets it exit; bwrap then returns only once the kernel has torn
        down its pid namespace, so no task process outlives this call. A stuck zygote is killed instead."""
        if self.proc is not None:
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:  # a broken pipe while flushing: the process is gone anyway
                    pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
            self.proc = None
        if self.tmp_root is not None:
            shutil.rmtree(self.tmp_root, ignore_errors=True)
            self.tmp_root = None


class SandboxPool:
    """`n` workers, each owned by a thread of its own for the pool's whole life: bwrap's --die-with-parent
    follows the *thread* that started it, so a worker must be started (and restarted) by a thread that lives
    as long as the worker. `run_all` yields (index, reply) in the order replies arrive."""

    def __init__(self, n: int, settings: SandboxSettings):
        self.settings = settings
        self.isolation = isolation(settings)
        self._jobs: queue.Queue = queue.Queue()
        started: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._serve, args=(started,), daemon=True) for _ in range(n)]
        for t in self._threads:
            t.start()
        errors = [e for e in (started.get() for _ in self._threads) if e is not None]
        if errors:
            self.close()
            raise errors[0]

    def _serve(self, started: queue.Queue) -> None:
        try:
            worker = Worker(self.settings)
        except SandboxError as e:
            started.put(e)
            return
        started.put(None)
        try:
            while (job := self._jobs.get()) is not None:
                index, req, out = job
                try:
                    reply = worker.run(req)
                except SandboxError as e:
                    reply = {"worker_error": str(e)}
                out.put((index, reply))
        finally:
            worker.close()

    def run_all(self, requests: Iterable[dict]) -> Iterator[tuple[int, dict]]:
        """Queue each request as soon as the iterable yields it (workers start while later ones are still
        being prepared), then yield (index, reply) in the order replies arrive."""
        out: queue.Queue = queue.Queue()
        n = 0
        for n, r in enumerate(requests, start=1):
            self._jobs.put((n - 1, r, out))
        for _ in range(n):
            yield out.get()

    def close(self) -> None:
        while True:  # drop queued work that nobody waits for any more
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
