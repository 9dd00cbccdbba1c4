"""Run untrusted programs in a pool of sandboxed workers, a fresh process and fresh namespaces per task.

Each worker is one template process (zygote.py) inside its own bubblewrap sandbox:
  - namespaces: no network (--unshare-net: only a loopback that nothing listens on), its own pid namespace
    (nothing outside is visible, and all of it dies with the sandbox), ipc, uts, cgroup;
  - file system: an allow-list, not a deny-list: /usr (read-only), the Python installation (read-only, also
    when it lives under /tmp or /home), /proc and a minimal /dev. /root, /home, /work, /etc's secrets and
    every other path simply do not exist in there;
  - user: as root, bwrap starts without a user namespace and the template keeps only CAP_SETUID/CAP_SETGID,
    CAP_KILL and CAP_SYS_ADMIN (for the tasks' pid namespaces), so that each task runs as a host uid of its
    own that nothing else uses; otherwise bwrap makes a user namespace and the tasks keep the caller's uid.
Per task the template forks a process that is pid 1 of a pid namespace of its own and unshares a user, ipc and
mount namespace, mounts its own /tmp and /dev/shm, sets rlimits and drops every capability before the
completion runs (see zygote.py). The template never sees a request or a result: the parent talks to each task
over a socket the template hands it. When the task ends its namespaces, and everything in them, are gone.
docs/mbpp_threat_model.md says what this defends against and what not.

Fallback, named in `isolation` and so in every results file: without bubblewrap (allow_weak only) there are
no namespaces: the task sees the file system and the network ("setuid+rlimits" as root, "rlimits" otherwise).
"""

from __future__ import annotations

import json
import math
import os
import queue
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
SANDBOX_DIR = "/sandbox"  # where zygote.py and wire.py appear inside the sandbox
SANDBOX_FILES = ("zygote.py", "wire.py")
STRONG = "bwrap+setuid+rlimits"
UID_SPAN = 1 << 16  # task uids per worker (root only): worker w uses uid_base + w * UID_SPAN + (task % UID_SPAN)
CONTROL_MSG_BYTES = 1 << 16  # the template's status messages are small; anything larger means it is broken


class SandboxError(RuntimeError):
    """The sandbox cannot start, or a worker died under a task."""


@dataclass(frozen=True)
class SandboxSettings:
    timeout_s: float = 3.0  # wall time per task (imports + completion + all its tests)
    memory_mb: int = 1024  # RLIMIT_AS of a task
    max_processes: int = 64  # RLIMIT_NPROC: processes and threads of the task (its own user namespace's count)
    max_file_mb: int = 16  # RLIMIT_FSIZE: largest file a task may write
    max_open_files: int = 64  # RLIMIT_NOFILE
    max_output_bytes: int = 1 << 20  # cap on the result a task sends back
    tmp_mb: int = 64  # size of each task's own /tmp (and of its /dev/shm)
    uid_base: int = 0x6D620000  # as root: first host uid given to tasks (a range no real user has)
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
        "RLIMIT_MSGQUEUE": 1 << 16,
    }


def _python_prefixes() -> list[str]:
    """Directories the interpreter needs (a venv's and the base installation's), outside /usr."""
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, os.path.dirname(sys.executable))}
    dirs = {d for d in dirs if not d.startswith("/usr/")}
    return sorted(d for d in dirs if not any(d.startswith(other + "/") for other in dirs))


def bwrap_argv(s: SandboxSettings, template_cfg: dict) -> list[str]:
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
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "0755", "--dir", "/tmp"]  # tasks mount their own /tmp
    for prefix in _python_prefixes():  # after /tmp: a venv under /tmp must not be hidden by it
        # bwrap copies the modes of the host's parents (/root is 0700): make the path walkable for tasks.
        for parent in [p for p in reversed(Path(prefix).parents) if str(p) not in ("/", "/tmp")]:
            argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", prefix, prefix]
    for name in SANDBOX_FILES:
        argv += ["--ro-bind", str(HERE / name), f"{SANDBOX_DIR}/{name}"]
    # CAP_SYS_ADMIN: the template unshares a pid namespace per task and re-enters its own.
    argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SYS_ADMIN"]
    if os.geteuid() == 0:
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
    argv += ["--chdir", "/", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]
    # One thread per library: RLIMIT_NPROC counts threads, and BLAS pools would eat it.
    argv += ["--setenv", "OMP_NUM_THREADS", "1", "--setenv", "OPENBLAS_NUM_THREADS", "1"]
    return argv + ["--", sys.executable, "-I", "-B", f"{SANDBOX_DIR}/zygote.py", json.dumps(template_cfg)]


class Worker:
    """One template process (inside bubblewrap when available) and the control socket to it."""

    def __init__(self, settings: SandboxSettings, index: int = 0):
        self.settings = settings
        self.index = index
        self.isolation = isolation(settings)
        if not self.isolation.startswith("bwrap") and not settings.allow_weak:
            raise SandboxError(
                f"bubblewrap ({settings.bwrap!r}) not found: install it (apt-get install bubblewrap) "
                "or allow the weaker isolation explicitly (allow_weak / --allow-weak-sandbox)"
            )
        self.proc: subprocess.Popen | None = None
        self.ctl: socket.socket | None = None
        self.tmp_root: str | None = None
        # The template's own stderr (tasks cannot write to it): its traceback, should it ever crash.
        self.log = tempfile.TemporaryFile()
        self.start()

    def start(self) -> None:
        s = self.settings
        use_bwrap = self.isolation.startswith("bwrap")
        if not use_bwrap:
            # No private /tmp: the tasks get directories of their own under this one.
            self.tmp_root = tempfile.mkdtemp(prefix="mbpp-sandbox-")
            os.chmod(self.tmp_root, 0o711)
        cfg = {
            "uid_base": s.uid_base + self.index * UID_SPAN,
            "uid_span": UID_SPAN,
            "limits": _rlimits(s),
            "timeout": s.timeout_s,
            "tmp_bytes": s.tmp_mb << 20,
            "prefixes_in_tmp": [p for p in _python_prefixes() if p.startswith("/tmp/")],
            "task_namespaces": use_bwrap,
            "tmp_root": self.tmp_root,
        }
        script = f"{SANDBOX_DIR}/zygote.py" if use_bwrap else str(HERE / "zygote.py")
        argv = bwrap_argv(s, cfg) if use_bwrap else [sys.executable, "-I", "-B", script, json.dumps(cfg)]
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            argv,
            stdin=theirs,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,  # so that close() can kill bwrap and everything under it at once
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        theirs.close()
        self.ctl = ours
        hello = self._receive(time.monotonic() + 60)
        if not hello.get("ready"):
            raise SandboxError(f"sandbox worker did not start: {hello}")

    def run(self, request: dict) -> dict:
        """Run one task: {"exit", "timed_out", "wall", "setup_error", "output": bytes, "truncated"}.
        A template that dies or hangs is restarted and SandboxError raised."""
        timeout = self.settings.timeout_s
        try:
            task, status = self._next_task(time.monotonic() + 30)
        except (OSError, SandboxError) as e:
            self._restart()
            raise SandboxError(f"sandbox worker died before the task ({e})") from None
        with status:
            with task:  # closed before waiting for the status: a task still writing gets EPIPE, not stuck
                output, truncated = self._exchange(task, request, time.monotonic() + timeout + 5)
            doc = self._status(status, time.monotonic() + 10)
        wait_status = doc.get("wait_status")
        return {
            "exit": os.waitstatus_to_exitcode(wait_status) if isinstance(wait_status, int) else None,
            "timed_out": doc.get("timed_out") is True,
            "wall": float(doc.get("wall") or 0.0),
            "setup_error": None if doc else "the sandbox sent no status for the task",
            "output": output,
            "truncated": truncated,
        }

    def _next_task(self, deadline: float) -> tuple[socket.socket, socket.socket]:
        """The task and status sockets of the next forked task (the template sends them one ahead)."""
        assert self.ctl is not None
        self._wait_readable(self.ctl, deadline)
        msg, fds, _, _ = socket.recv_fds(self.ctl, 1, 2)
        if msg != b"T" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            code = self.proc.poll() if self.proc is not None else None
            raise SandboxError(f"unexpected message {msg!r} from the template (exit code {code}){self._log_tail()}")
        return socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])

    def _status(self, sock: socket.socket, deadline: float) -> dict:
        """The template's report on the task (trusted, but bounded anyway); {} if it never came."""
        data = bytearray()
        while len(data) <= CONTROL_MSG_BYTES:
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(CONTROL_MSG_BYTES)
            except OSError:
                return {}
            if not chunk:
                break
            data.extend(chunk)
        try:
            doc = json.loads(data)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def _exchange(self, task: socket.socket, request: dict, deadline: float) -> tuple[bytes, bool]:
        """Send the request, then read the task's result until EOF, the output cap or the deadline. A task
        that died before reading its request, or never ends its output, just yields what it sent."""
        data = json.dumps(request).encode()
        try:
            task.settimeout(max(deadline - time.monotonic(), 0.001))
            task.sendall(struct.pack(">I", len(data)) + data)
            task.shutdown(socket.SHUT_WR)
        except OSError:  # broken pipe, reset, timeout: the task is gone or stuck; the template reports it
            return b"", False
        cap = self.settings.max_output_bytes
        out = bytearray()
        while len(out) <= cap:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                task.settimeout(remaining)
                chunk = task.recv(min(1 << 16, cap + 1 - len(out)))
            except OSError:
                break
            if not chunk:
                break
            out.extend(chunk)
        return bytes(out[:cap]), len(out) > cap

    def _wait_readable(self, sock: socket.socket, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
            raise SandboxError("no reply from the sandbox worker in time")

    def _receive(self, deadline: float) -> dict:
        """The template's one JSON message (its hello)."""
        head = self._read_exact(4, deadline)
        n = struct.unpack(">I", head)[0]
        if n > CONTROL_MSG_BYTES:
            raise SandboxError(f"control message of {n} bytes")
        return json.loads(self._read_exact(n, deadline))

    def _read_exact(self, n: int, deadline: float) -> bytes:
        assert self.ctl is not None
        buf = bytearray()
        while len(buf) < n:
            self._wait_readable(self.ctl, deadline)
            chunk = self.ctl.recv(n - len(buf))
            if not chunk:
                code = self.proc.wait() if self.proc is not None else None
                raise SandboxError(f"sandbox worker exited (code {code}){self._log_tail()}")
            buf.extend(chunk)
        return bytes(buf)

    def _log_tail(self) -> str:
        self.log.seek(0)
        tail = self.log.read()[-400:].decode("utf-8", "replace").strip()
        self.log.seek(0)
        self.log.truncate()
        return f": {tail}" if tail else ""

    def _restart(self) -> None:
        self.close()
        self.start()

    def close(self) -> None:
        """Stop the template. Closing its control socket makes it kill its tasks and exit (a task that got no
        request sees EOF); bwrap returns only once the kernel has torn down its pid namespace, so no task
        process outlives this call. A stuck one is killed."""
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self.proc is not None:
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
        self.workers: list[Worker] = []
        started: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._serve, args=(i, started), daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()
        errors = [e for e in (started.get() for _ in self._threads) if e is not None]
        if errors:
            self.close()
            raise errors[0]

    def _serve(self, index: int, started: queue.Queue) -> None:
        try:
            worker = Worker(self.settings, index)
        except SandboxError as e:
            started.put(e)
            return
        self.workers.append(worker)
        started.put(None)
        try:
            while (job := self._jobs.get()) is not None:
                i, req, out = job
                try:
                    reply = worker.run(req)
                except SandboxError as e:
                    reply = {"worker_error": str(e)}
                out.put((i, reply))
        finally:
            worker.close()

    def pids(self) -> list[int]:
        """The processes this pool started (its bwrap or template processes); tasks run below them."""
        return [w.proc.pid for w in self.workers if w.proc is not None]

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
