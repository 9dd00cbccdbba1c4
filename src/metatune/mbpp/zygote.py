"""The sandbox's template: a pre-imported process that forks one fresh task per completion and never sees one.

Run as a script (standard library only, plus wire.py beside it) inside bubblewrap by metatune.mbpp.sandbox;
never imported by the trusted side. Forking this warm process costs far less than starting an interpreter.

What the template never holds: a request, a completion, a result. Per task it forks, and passes the parent
(over its control socket, SCM_RIGHTS) two socket ends: the task's, on which the parent writes the request and
reads the result, and a status socket, on which the template reports the task's end. So a task's memory is
the template's (imports only) plus its own request: nothing an earlier task sent or received is there to find.

Protocol on the control socket:
    template -> parent  {"ready": true, "uid": int}       once, after setup (4-byte big-endian length + JSON)
    template -> parent  b"T" + [task socket, status socket] (SCM_RIGHTS) for every task, in order, one ahead
    parent closes it    the template kills whatever is left and exits
On the task socket: parent -> task {"code", "setup", "imports", "cuts": [[source, "value" | "truth"]]} (framed
like above), then task -> parent wire.encode_result(...) until EOF, decoded strictly (wire.decode_result).
On the status socket: template -> parent {"wait_status", "timed_out", "wall"}, then EOF.

Each task, with `task_namespaces` (always inside bubblewrap), is pid 1 of a pid namespace of its own (the
template unshares one for each fork and re-enters its own right after). Before it reads its request it drops
to a host uid of its own when the template is root (a fresh one per task), unshares a user, ipc and mount
namespace and maps just that uid, mounts a fresh size-limited tmpfs on /tmp and /dev/shm (the interpreter's
prefix bound back if it lives under /tmp), joins a new session keyring, sets rlimits, drops every capability
and sets no-new-privileges; then the completion runs. The template starts its wall clock when the task has
its request, and kills it when it runs out. When the task dies the kernel kills everything in its pid
namespace; the namespaces, their tmpfs, SysV IPC objects and keyrings go with them. Processes of one task
cannot name the template, the parent or another task (no pid to kill, prlimit, setpriority or ptrace), the
next task waiting its turn is undumpable, and their process count is their own user namespace's
(RLIMIT_NPROC counts per user namespace).
Without namespaces (the explicit weak fallback outside bubblewrap) a task gets a directory of its own, runs as a
uid of its own if we are root, and every process that stays below the template (a child subreaper) is killed.
"""

# Modules MBPP solutions import most (counted over mbpp.jsonl): imported once here, inherited by every fork.
import array  # noqa: E401,F401,E501
import ctypes
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 4, 24, 38, 36
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID = 0x20000, 0x08000000, 0x10000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 0x1000, 0x4000, 1 << 18
CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SYS_ADMIN = 5, 6, 7, 21
KEYCTL_JOIN_SESSION_KEYRING = 1
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(platform.machine())
TASK_UID = 1000  # the task's uid inside its own user namespace
RESULT_FD = 3


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target, fstype, flags, options=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(options)), f"mount {target}")


def set_capabilities(keep=()):
    """Keep only `keep` (capability numbers): drop the rest from the bounding set, then from every set."""
    for cap in range(64):
        if cap not in keep:
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last capability: nothing to drop
    bits = sum(1 << c for c in keep)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)(bits, bits, 0, 0, 0, 0)  # effective, permitted, inheritable (two 32-bit words)
    _check(libc.capset(header, data), "capset")


# ---------------------------------------------------------------- inside the task (G runs the completion)

def run_task(req):
    """Imports, completion and setup, then every cut; the result document as bytes."""
    ns = {"__name__": "__mbpp__", "__builtins__": __builtins__}
    for phase, source in (("imports", req["imports"]), ("completion", req["code"]), ("setup", req["setup"])):
        try:
            exec(compile(source, f"<{phase}>", "exec"), ns)
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: they must not end the run silently
            return wire.encode_result(f"{phase}: {describe(e)}", None)
    entries = []
    for source, need in req["cuts"]:
        try:
            value = eval(compile(source, "<test>", "eval"), ns)
            if need == "truth":  # `True if value`: no lookup of `bool`, which a completion may have patched
                entries.append(["ok", ["bool", True if value else False]])  # noqa: SIM210
            else:
                entries.append(["ok", wire.encode(value)])
        except BaseException as e:
            entries.append(["raise", describe(e)])
    return wire.encode_result(None, entries)


def describe(exc):
    """'Type: message', short; str() of a hostile exception may itself fail."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:
        text = "an exception that cannot be described"
    return text[:300]


def private_mounts(cfg):
    """The task's own mount tree: nothing it mounts or writes is seen outside, and it all vanishes with it."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    keep = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in cfg["prefixes_in_tmp"]]  # before the tmpfs hides them
    size = cfg["tmp_bytes"]
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},nr_inodes=8192,mode=1777")
    for path, fd in zip(cfg["prefixes_in_tmp"], keep):
        os.makedirs(path, mode=0o755)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)  # stays read-only: the source mount is
        os.close(fd)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},nr_inodes=1024,mode=1777")


def isolate(cfg, uid):
    """A uid (as root), then a user, ipc and mount namespace of the task's own, private /tmp and /dev/shm, a
    fresh session keyring (the user keyring is the new user namespace's)."""
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # from root: every capability goes with it
    if not cfg["task_namespaces"]:
        return
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # the uid change made us undumpable: /proc/self/*_map were root's
    outer_uid, outer_gid = os.getuid(), os.getgid()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWIPC | CLONE_NEWNS), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{TASK_UID} {outer_uid} 1"),
                       ("gid_map", f"{TASK_UID} {outer_gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no task of the same uid may read or write this one's memory
    private_mounts(cfg)
    if SYS_KEYCTL is not None:
        libc.syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None)


def task_main(cfg, sock, started_w, uid, task_dir):
    """The task (pid 1 of its own pid namespace): isolate, take the request, tell the template the clock
    starts, run it, report. Never returns."""
    try:
        try:
            isolate(cfg, uid)
        except OSError as e:  # never run a completion with less isolation than promised
            sock.sendall(wire.encode_result(f"sandbox setup: {describe(e)}", None))
            os._exit(0)
        os.setsid()
        req = read_msg(sock.fileno())
        os.close(started_w)  # EOF on the template's side: the request is here, the wall clock runs
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # before the result socket goes to fd 3, which devnull itself may be
            os.dup2(devnull, fd)
        os.dup2(sock.fileno(), RESULT_FD)
        os.closerange(RESULT_FD + 1, 1 << 16)
        for name, value in cfg["limits"].items():
            resource.setrlimit(getattr(resource, name), (value, value))
        if cfg["task_namespaces"]:
            set_capabilities()
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        os.chdir(task_dir)
        os.environ["HOME"] = os.environ["TMPDIR"] = task_dir
        data = run_task(req)
        for i in range(0, len(data), 65536):
            os.write(RESULT_FD, data[i : i + 65536])
    except BaseException:
        pass
    os._exit(0)


# ---------------------------------------------------------------- the template (trusted code)

class Task:
    """A forked task, and what the template keeps of it: its pid, the end of the pipe it closes once it has
    its request, and the status socket whose other end the parent holds."""

    def __init__(self, cfg, ctl, serial, own_pid_ns):
        uid = None
        if os.getuid() == 0 and cfg["uid_base"] is not None:
            uid = cfg["uid_base"] + serial % cfg["uid_span"]
        self.task_dir = "/tmp"
        if not cfg["task_namespaces"]:
            self.task_dir = os.path.join(cfg["tmp_root"], f"task{serial}")
            os.mkdir(self.task_dir, 0o700)
            if uid is not None:
                os.chown(self.task_dir, uid, uid)
        task_parent, task_child = socket.socketpair()
        status_parent, self.status = socket.socketpair()
        self.started_r, started_w = os.pipe()
        if own_pid_ns is not None:  # the next child is pid 1 of a new pid namespace...
            _check(libc.unshare(CLONE_NEWPID), "unshare")
        self.pid = os.fork()
        if self.pid == 0:  # keep only our own two ends (and stderr): not those of the task still running
            close_all_but({2, task_child.fileno(), started_w})
            task_main(cfg, task_child, started_w, uid, self.task_dir)
        if own_pid_ns is not None:  # ... and the ones after it are not
            _check(libc.setns(own_pid_ns, CLONE_NEWPID), "setns")
        task_child.close()
        os.close(started_w)
        self.pidfd = os.pidfd_open(self.pid)
        socket.send_fds(ctl, [b"T"], [task_parent.fileno(), status_parent.fileno()])
        task_parent.close()
        status_parent.close()

    def supervise(self, cfg, ctl):
        """Wait for the task to end, killing it (and with it its pid namespace) when its wall time, counted
        from its request, runs out; send its status to the parent. False if the parent went away."""
        start = deadline = None
        timed_out = False
        watch = [self.pidfd, self.started_r, ctl]
        while True:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0)
            ready = select.select(watch, [], [], wait)[0]
            if ctl in ready:
                return False
            if self.pidfd in ready:
                break
            if self.started_r in ready:
                watch.remove(self.started_r)
                start = time.monotonic()
                deadline = start + cfg["timeout"]
            elif not ready:
                timed_out = True
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                deadline = None
        wait_status = os.waitpid(self.pid, 0)[1]
        status = {"wait_status": wait_status, "timed_out": timed_out,
                  "wall": time.monotonic() - start if start is not None else 0.0}
        for fd in (self.pidfd, self.started_r):
            os.close(fd)
        try:
            self.status.sendall(json.dumps(status).encode())
        except OSError:  # the parent stopped waiting for this task
            pass
        self.status.close()
        return True


def close_all_but(keep):
    """Close every file descriptor but those in `keep`."""
    low = 0
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def children():
    """Pids of this process's children (task processes re-parent here: we are a child subreaper)."""
    pids = []
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


def kill_all_children():
    """SIGKILL and reap every process below the template, until none is left. Listed children are not
    reaped yet, so their pids cannot have been reused."""
    while pids := children():
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            os.waitpid(pid, 0)


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


def write_msg(sock, obj):
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def reenterable_pid_namespace(ctl):
    """An fd of our pid namespace, which we must be able to re-enter (setns) after each task's unshare.
    As root we can. Otherwise bubblewrap's pid namespace belongs to a user namespace we hold no capability
    in: make a user and pid namespace of our own, and go on as its pid 1 (the process before waits)."""
    if os.getuid() != 0:
        uid, gid = os.getuid(), os.getgid()
        _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWPID), "unshare")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        pid = os.fork()
        if pid != 0:
            close_all_but({2})
            os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) & 0xFF)
    return os.open("/proc/self/ns/pid", os.O_RDONLY)


def main():
    cfg = json.loads(sys.argv[1])
    ctl = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # stderr stays: the parent's log of the template, for its own tracebacks
        os.dup2(devnull, fd)
    own_pid_ns = None
    if cfg["task_namespaces"]:
        own_pid_ns = reenterable_pid_namespace(ctl)
        root = os.getuid() == 0
        set_capabilities(keep=(CAP_KILL, CAP_SETUID, CAP_SETGID, CAP_SYS_ADMIN) if root else (CAP_SYS_ADMIN,))
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # With namespaces the next task is forked and handed over while the current one runs: its set-up is off
    # the critical path, and no task can reach another. Without them a waiting task would be exposed.
    prefork = cfg["task_namespaces"]
    write_msg(ctl, {"ready": True, "uid": os.getuid()})
    serial = 0

    def start():
        nonlocal serial
        serial += 1
        return Task(cfg, ctl, serial, own_pid_ns)

    try:
        running = start()
        waiting = start() if prefork else None
        while running.supervise(cfg, ctl):
            if not cfg["task_namespaces"]:
                kill_all_children()  # whatever escaped the task's process tree
                shutil.rmtree(running.task_dir, ignore_errors=True)
            running = waiting or start()
            waiting = start() if prefork else None
    except (BrokenPipeError, ConnectionResetError):  # the parent went away while we handed a task over
        pass
    finally:
        kill_all_children()


if __name__ == "__main__":
    main()
