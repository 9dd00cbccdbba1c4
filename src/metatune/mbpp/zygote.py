"""The sandbox's zygote: a long-lived process that forks one child per untrusted program.

Run as a script (standard library only) inside bubblewrap by metatune.mbpp.sandbox; never imported by the
trusted side. Starting a Python interpreter costs ~20 ms plus its imports; forking this already-warm process
costs well under 1 ms, which is where the harness gets its speed.

Protocol on the pipes the trusted side holds (each message: 4-byte big-endian length + UTF-8 JSON):
    zygote -> parent  {"ready": true}                           once, after setup
    parent -> zygote  {"code", "setup", "imports", "exprs", "timeout"}
    zygote -> parent  {"exit", "timed_out", "wall", "output", "truncated"}
`output` is what the child wrote on its result pipe, capped at max_output bytes. It is untrusted data: the
parent parses it strictly. The request never contains an expected value (see metatune.mbpp.checks).

Isolation done here (bubblewrap adds the namespaces and the read-only file system around it):
  - the zygote drops to `nobody` right away (it starts as root only so that it can) and makes itself
    non-dumpable, so a child running as the same uid cannot ptrace it or open /proc/<zygote>/fd or mem;
  - each child starts a new session, keeps only its result pipe open, applies rlimits (CPU time, address
    space, processes, file size, open files, no core dumps) and then runs the untrusted code;
  - after the child exits or its wall time runs out, every process of the task is SIGKILLed: with a pid
    namespace, kill(-1) from `nobody` reaches every task process, even ones that double-forked into a new
    session, and nothing outside the namespace; without one (fallback), only the child's process group.
"""

import builtins
import ctypes
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time

# Modules MBPP solutions import most (counted over mbpp.jsonl): imported once here, inherited by every fork.
import array, bisect, cmath, collections, copy, datetime, functools, heapq, itertools, math, operator, re, string  # noqa: E401,F401,E501

# Bound before any untrusted code runs: a completion that patches builtins.type must not blind the encoder.
_type, _issubclass = type, issubclass

PR_SET_DUMPABLE = 4
RESULT_FD = 3
MAX_DEPTH = 100


# ---------------------------------------------------------------- the child side (runs untrusted code)

def encode(value, depth=0):
    """Plain data as tagged JSON. Built-in types only (subclasses are read through the base type's own
    methods, so an overridden __eq__, __iter__ or __repr__ is never called); anything else is refused."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    t = _type(value)
    if value is None:
        return ["none"]
    if t is bool:
        return ["bool", value is True]
    if _issubclass(t, int):
        return ["int", int.__repr__(value)]
    if _issubclass(t, float):
        return ["float", float.__repr__(value)]
    if _issubclass(t, complex):
        return ["complex", complex.__repr__(value)]
    if _issubclass(t, str):
        return ["str", str.__str__(value)]
    if _issubclass(t, bytes):
        return ["bytes", bytes.hex(value)]
    for base in (list, tuple, set, frozenset):
        if _issubclass(t, base):
            return [base.__name__, [encode(x, depth + 1) for x in base.__iter__(value)]]
    if _issubclass(t, dict):
        return ["dict", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]]
    raise TypeError(f"cannot return a {t.__name__!s} (only built-in data types)")


def describe(exc):
    """'Type: message', short; str() of a hostile exception may itself fail."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:
        text = type(exc).__name__
    return text[:300]


def run_task(req):
    """Run imports, completion and setup, then every expression; return the result document."""
    ns = {"__name__": "__mbpp__", "__builtins__": builtins}
    for phase, source in (("imports", req["imports"]), ("completion", req["code"]), ("setup", req["setup"])):
        try:
            exec(compile(source, f"<{phase}>", "exec"), ns)
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: they must not end the run silently
            return {"load_error": f"{phase}: {describe(e)}", "values": []}
    values = []
    for expr in req["exprs"]:
        try:
            values.append(["ok", encode(eval(compile(expr, "<test>", "eval"), ns))])
        except BaseException as e:
            values.append(["raise", describe(e)])
    return {"load_error": None, "values": values}


def child_main(req, result_w, limits, task_dir):
    """In the forked child: shed everything the zygote holds, limit it, run, report. Never returns."""
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the zygote's stderr (its crash log) stays out of reach too
            os.dup2(devnull, fd)
        os.dup2(result_w, RESULT_FD)
        os.closerange(RESULT_FD + 1, 65536)  # the zygote's control pipes among them
        for name, value in limits.items():
            resource.setrlimit(getattr(resource, name), (value, value))
        os.chdir(task_dir)
        os.environ["HOME"] = os.environ["TMPDIR"] = task_dir
        data = json.dumps(run_task(req)).encode()
        for i in range(0, len(data), 65536):
            os.write(RESULT_FD, data[i : i + 65536])
    except BaseException:
        pass
    os._exit(0)


# ---------------------------------------------------------------- the zygote side (trusted code)

def kill_task(pid, own_pid_namespace):
    """SIGKILL every process of the task; with a pid namespace, loop until none is left."""
    if not own_pid_namespace:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    me = os.getpid()
    for _ in range(100):
        try:
            os.kill(-1, signal.SIGKILL)  # every process this uid may signal in the namespace, except us
        except ProcessLookupError:
            pass
        left = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me) and not _zombie(p)]
        if not left:
            return
        time.sleep(0.01)


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True  # already gone


def run_one(req, cfg, serial):
    task_dir = os.path.join(cfg["tmp_root"], f"task{serial}")
    os.mkdir(task_dir, 0o700)
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        child_main(req, write_fd, cfg["limits"], task_dir)
    os.close(write_fd)
    pidfd = os.pidfd_open(pid)
    out, truncated, timed_out = bytearray(), False, False
    deadline = start + float(req["timeout"])
    watch = [read_fd, pidfd]

    def take(chunk):
        nonlocal truncated
        room = cfg["max_output"] - len(out)
        out.extend(chunk[: max(room, 0)])
        truncated |= len(chunk) > room

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(watch, [], [], remaining)
        if read_fd in ready:
            chunk = os.read(read_fd, 65536)
            if chunk:
                take(chunk)
            else:  # EOF: the child closed its end; keep waiting for its exit
                watch.remove(read_fd)
        if pidfd in ready:
            break
    kill_task(pid, cfg["own_pid_namespace"])
    _, status = os.waitpid(pid, 0)
    wall = time.monotonic() - start
    os.set_blocking(read_fd, False)  # anything still buffered from writers that are dead by now
    try:
        while chunk := os.read(read_fd, 65536):
            take(chunk)
    except BlockingIOError:
        pass
    os.close(read_fd)
    os.close(pidfd)
    for entry in os.listdir(cfg["tmp_root"]):  # whatever the task wrote, wherever it could
        path = os.path.join(cfg["tmp_root"], entry)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            pass  # a task that made its leftovers undeletable only costs space; the next one gets a new dir
    return {
        "exit": os.waitstatus_to_exitcode(status),
        "timed_out": timed_out,
        "wall": wall,
        "output": out.decode("utf-8", "replace"),
        "truncated": truncated,
    }


def read_msg(fd):
    head = _read_exact(fd, 4)
    if head is None:
        return None
    return json.loads(_read_exact(fd, struct.unpack(">I", head)[0]))


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf.extend(chunk)
    return bytes(buf)


def write_msg(fd, obj):
    data = json.dumps(obj).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def main():
    cfg = json.loads(sys.argv[1])
    # Keep the control pipes away from 0/1 so nothing printed by accident corrupts the protocol; stderr stays
    # (the parent's log of this zygote, for its own tracebacks).
    ctl_in, ctl_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    if os.getuid() == 0 and cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    write_msg(ctl_out, {"ready": True, "uid": os.getuid()})
    serial = 0
    while (req := read_msg(ctl_in)) is not None:
        serial += 1
        write_msg(ctl_out, run_one(req, cfg, serial))


if __name__ == "__main__":
    main()
