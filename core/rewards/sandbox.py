"""Render untrusted, model-written matplotlib programs to PNGs, safely and fast (the image2code reward).

A GRPO step asks for thousands of renders, and every program is hostile until proven otherwise. Layout::

    trainer (Sandbox)                    parent: prepares job dirs, enforces a backstop wall time, reads PNGs
      └─ unshare --net --pid --fork --mount-proc   (when the OS allows it; the trainer's pid is invisible inside)
           └─ fork server (pid 1 there)  imported matplotlib/numpy once, scrubbed env; mounts read-only empty
                │                        tmpfs over /tmp, /var/tmp, /run/lock, /dev/shm; enforces wall time
                └─ job child (root)      unshare(CLONE_NEWIPC, CLONE_NEWPID): its next child is init of a fresh
                     │                   pid namespace, and the job has its own SysV/POSIX IPC namespace
                     └─ job init (pid 1) setgid/setuid to a per-slot uid, no_new_privs, parent-death SIGKILL
                          └─ program     rlimits, fresh workdir, stdin=/dev/null, exec(code), save the figure

* **One fork per program** from a pristine server: rcParams, monkey-patched numpy, open figures and anything else a
  program changes die with its process; nothing is `exec`ed twice in one interpreter.
* **Tree kill**: at timeout the server SIGKILLs the job child; the job init has PR_SET_PDEATHSIG=SIGKILL, and when a
  pid namespace's init dies the kernel kills every process in it, `setsid` or not. Without pid namespaces the job
  child is a child subreaper that kills its remaining descendants, and the server (also a subreaper) kills any
  orphan that reaches it.
* **A slot is empty before its next program**: the kernel kills a pid namespace's processes asynchronously, and a
  timed-out fork bomb's processes, rationed to one slot's CPU share, can take a second or more to exit, while they
  keep the slot's uid (its RLIMIT_NPROC count, its files) and cgroup. So the server answers for a job only once no
  process of the slot's uid is left (without the uid drop: once no orphan is), SIGKILLing leftovers every few ms and
  moving them to its own CPU cgroup to let them exit; the parent hands the slot its next program only after that
  answer. What cannot be killed within `cleanup_s` (uninterruptible sleep, a zombie nobody reaps) retires the
  slot's uid: the slot goes on under a spare uid of the Sandbox's block, or out of service when none is left (a
  render with every slot out of service raises). After a killed, unresponsive server and at `close()` the parent
  kills what is left of the block's uids the same way.
* **Privileges**: as root, each concurrently running program gets its own uid (`uid_base + slot`, gid nogroup; every
  Sandbox draws its own random block of uids, so trainer ranks sharing a node never share one), so
  RLIMIT_NPROC is per program (a fork bomb cannot starve its neighbours) and programs cannot signal or read each
  other, the server or the trainer. The job dir is root-owned; only its `work/` subfolder belongs to the program.
* **Files**: programs write only in `work/` (fresh per job, deleted after it); in the server's private mount
  namespace /tmp, /var/tmp, /run/lock and /dev/shm are read-only empty tmpfs, and a 0700 directory on the
  interpreter's path (pyenv under /root) is covered by a tmpfs with only the interpreter's entries bound back, so its
  other contents (tokens, caches) stay hidden. Where those folders stay writable (no mount namespace), what the
  slot's uid left at their top is deleted once the slot is empty, before its next program (same uid) could read it.
* **IPC**: SysV shared memory, semaphores and message queues and POSIX message queues outlive their creator; each
  job's own IPC namespace takes them along when its last process exits.
* **CPU**: as root with a writable cgroup cpu controller (v1 or v2), each slot is a cgroup of equal weight, so a
  fork bomb's processes together get one program's share of the CPU, not most of the machine.
* **Output**: the program's own `savefig` calls are intercepted (recorded, not written); afterwards the sandbox saves
  the last figure the program saved, else the current figure (`plt.gcf()` if any figure is open), with dpi clamped so
  that width*height <= `max_pixels`, to `work/_sandbox_output.png`. The parent opens it with
  O_NOFOLLOW|O_NONBLOCK, requires a regular file of bounded size with a PNG signature and checks the PNG's
  dimensions before decoding.
* **Classification** (`STATUSES`): "syntax_error" from `compile()` in the parent (no process); "runtime_error" when
  the program raises (the error is the exception's last line; `input()` raises EOFError since stdin is empty,
  memory bombs usually raise MemoryError under RLIMIT_AS); "timeout" past `wall_s`; "killed" when the program dies
  by a signal (segfault, CPU limit) or exits before the sandbox could report; "no_image" when it ends without any
  figure (or the output is not a valid PNG); "ok" otherwise. `sys.exit()` counts as a normal end: a figure drawn
  before it is saved and gives "ok"; none gives "no_image".

`render_code_in_process` is the bare, UNSAFE baseline for benchmarks only.

Degraded modes (logged once, visible in `Sandbox.protections`): without `unshare` (default Docker) there is no
network/pid/mount namespace, so the trainer's pids are visible (the uid drop still keeps its environ and signals out),
/tmp stays writable (cleaned per slot as above) and the network reachable; not as root there is no uid drop, no
per-job namespace and no cgroup either, only rlimits, the scrubbed environment and the tree kill (subreaper + /proc
scan), and the processes of a server killed as unresponsive cannot be found by uid any more.
"""

from __future__ import annotations

import ctypes
import gc
import io
import json
import logging
import os
import resource
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import weakref
from dataclasses import dataclass

from PIL import Image

__all__ = ["STATUSES", "RenderResult", "Sandbox", "SandboxLimits", "render_code_in_process"]

logger = logging.getLogger(__name__)

STATUSES = ("ok", "syntax_error", "runtime_error", "timeout", "killed", "no_image")

OUTPUT_NAME = "_sandbox_output.png"
_UID_BASE = 2_147_000_000  # far from real users and from the usual subuid ranges (100000+)
_UID_BLOCK = 256  # uids per Sandbox: at most this many slots, the rest replace uids retired with leftover processes
_UID_BLOCKS = 8_000_000  # blocks to draw from: uids stay below 2**32 - 2
_GID = 65534  # nogroup
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RESULT_CAP = 16384
_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWPID = 0x20000000
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_CHILD_SUBREAPER = 36
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_HIDDEN_WRITABLE = ("/tmp", "/var/tmp", "/run/lock", "/dev/shm")
_warned = False


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 10.0  # wall-clock time per program, enforced from outside
    cpu_s: float = 10.0  # RLIMIT_CPU
    memory_mb: int = 1024  # RLIMIT_AS
    file_size_mb: int = 32  # RLIMIT_FSIZE (also caps stdout/stderr files)
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 64  # RLIMIT_NPROC (per uid; each running program has its own uid when run as root)
    cleanup_s: float = 3.0  # after a program ends, how long its slot's leftover processes may take to die
    max_pixels: int = 4_000_000  # cap on the saved figure's width*height (dpi is clamped)
    max_output_bytes: int = 65536  # stdout/stderr kept per program (the head), the rest dropped


@dataclass
class RenderResult:
    status: str  # one of STATUSES
    image: Image.Image | None
    error: str  # short: the exception line, "wall time 2.0 s exceeded", "killed by signal SIGSEGV", ...
    seconds: float
    output: str = ""  # the program's stdout then stderr, at most max_output_bytes of each


# ---------------------------------------------------------------------------------------------------------------- libc
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


# ------------------------------------------------------------------------------------------------------ fork server
def _serve(jobs_root: str, private_mounts: bool) -> None:
    """Server main loop: requests are JSON lines on stdin, replies JSON lines on stdout."""
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy  # noqa: F401

    # Warm up once (fonts, text layout, Agg, PNG writer) so that every forked child starts with those caches filled.
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="x")
    ax.set_title("warm-up")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png")
    plt.close("all")

    libc = _libc()
    root_fd = os.open(jobs_root, os.O_RDONLY | os.O_DIRECTORY)
    caps = {
        "uid_drop": os.geteuid() == 0,
        "hidden_tmp": False,
        "exposed_python": False,
        "pid_namespace_per_job": False,
        "ipc_namespace_per_job": False,
    }
    shared_tmp = [path for path in _HIDDEN_WRITABLE if os.path.isdir(path)]  # writable by programs: cleaned per job
    if private_mounts and os.geteuid() == 0:
        # Only in a private mount namespace (pid 1 under `unshare --mount-proc`); elsewhere this would hit the host.
        shared_tmp = [path for path in shared_tmp if not _hide_keeping_python(libc, path)]
        caps["hidden_tmp"] = len(shared_tmp) < len([p for p in _HIDDEN_WRITABLE if os.path.isdir(p)])
        caps["exposed_python"] = _expose_python(libc)
    _preimport()
    # Probe per-job pid and IPC namespaces once: a throwaway child tries unshare(CLONE_NEWPID), unshare(CLONE_NEWIPC).
    pid = os.fork()
    if pid == 0:
        os._exit((libc.unshare(_CLONE_NEWPID) == 0) | (libc.unshare(_CLONE_NEWIPC) == 0) << 1)
    status = os.waitpid(pid, 0)[1]
    probed = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 0
    caps["pid_namespace_per_job"] = bool(probed & 1)
    caps["ipc_namespace_per_job"] = bool(probed & 2)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    gc.collect()
    gc.freeze()  # children's garbage collections skip the server's objects: no copy-on-write of the whole heap

    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wfd)
    out = sys.stdout
    out.write(json.dumps({"hello": caps}) + "\n")
    out.flush()

    jobs: dict[int, dict] = {}  # pid -> job
    draining: list[dict] = []  # ended jobs whose slot may still hold processes: replied to once the slot is empty
    buf = b""
    stdin_fd = sys.stdin.fileno()
    open_input = True
    while open_input or jobs or draining:
        now = time.monotonic()
        timeout = min((j["deadline"] - now for j in jobs.values()), default=1.0)
        if draining:
            timeout = min(timeout, 0.005)
        try:
            ready, _, _ = select.select([stdin_fd, rfd] if open_input else [rfd], [], [], max(0.0, min(timeout, 1.0)))
        except InterruptedError:
            ready = []
        if rfd in ready:
            try:
                while os.read(rfd, 4096):
                    pass
            except BlockingIOError:
                pass
        if stdin_fd in ready:
            chunk = os.read(stdin_fd, 65536)
            if not chunk:
                open_input = False
                for pid in jobs:
                    _kill(pid)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                pid = _start_job(req, root_fd, caps, libc)
                jobs[pid] = {
                    "id": req["id"],
                    "uid": int(req["uid"]),
                    "deadline": time.monotonic() + req["limits"]["wall_s"],
                    "cleanup_s": float(req["limits"]["cleanup_s"]),
                    "cgroup": req.get("cgroup"),
                    "timeout": False,
                }
        now = time.monotonic()
        for pid, job in jobs.items():
            if not job["timeout"] and now >= job["deadline"]:
                job["timeout"] = True
                _kill(pid)
        while True:  # reap
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            job = jobs.pop(pid, None)
            if job is None:
                continue  # an orphan reparented to us (subreaper / pid 1): already dead now
            reply = {"id": job["id"], "timeout": job["timeout"]}
            if os.WIFSIGNALED(status):
                reply["signal"] = os.WTERMSIG(status)
            else:
                reply["code"] = os.WEXITSTATUS(status)
            job["reply"], job["drain_deadline"] = reply, time.monotonic() + job["cleanup_s"]
            draining.append(job)
        for job in list(draining):
            # The slot takes its next job only after the reply, so nothing of this job may outlive it: the job
            # child is gone, but a timed-out fork bomb's processes (or a pid namespace still being torn down) can
            # live on for a while with the slot's uid, cgroup and RLIMIT_NPROC count, next to the next program.
            left = _leftovers(job["uid"], caps, jobs)
            if left and time.monotonic() < job["drain_deadline"]:
                for pid in left:
                    _kill(pid)
                if job["cgroup"]:
                    _move_out_of_slot(left, job["cgroup"], job.setdefault("moved", set()))
                continue  # reaped above by the next rounds (orphans are ours), or by their namespace's init
            draining.remove(job)
            if left:  # unkillable (uninterruptible sleep, or a zombie whose parent is not ours): retire the uid
                job["reply"]["leftovers"] = len(left)
            elif caps["uid_drop"]:
                _remove_owned_by(job["uid"], shared_tmp)
            out.write(json.dumps(job["reply"]) + "\n")
            out.flush()
        if not caps["pid_namespace_per_job"]:
            for orphan in _children_of(os.getpid()):
                if orphan not in jobs:
                    _kill(orphan)


_PREIMPORT = (
    "collections", "csv", "datetime", "decimal", "encodings.idna", "fractions", "functools", "itertools", "json",
    "math", "random", "re", "statistics", "string", "textwrap", "matplotlib.colors", "matplotlib.dates",
    "matplotlib.gridspec", "matplotlib.patches", "matplotlib.ticker", "mpl_toolkits.mplot3d", "pandas", "seaborn",
)  # fmt: skip


def _preimport() -> None:
    """Import what programs commonly use once, in the server: faster children, and it works even where the
    interpreter's files are unreadable to the dropped uid (a Python under /root without a mount namespace)."""
    import importlib

    for name in _PREIMPORT:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - optional extras
            pass


def _python_paths() -> list[str]:
    """Real paths programs need to import from: the interpreter's prefixes and every sys.path directory."""
    paths = {os.path.realpath(p) for p in [sys.prefix, sys.base_prefix, *sys.path] if p and os.path.isabs(p)}
    return sorted(p for p in paths if os.path.isdir(p))


def _hide_keeping_python(libc, hidden: str) -> bool:
    """Cover `hidden` (e.g. /tmp) with an empty read-only tmpfs, but bind the interpreter's own directories that live
    under it (a checkout or venv in /tmp, as a CI clone may be) back in place, so matplotlib still finds its files."""
    keep: list[str] = []
    for path in _python_paths():
        if path.startswith(hidden.rstrip("/") + "/") and not any(path.startswith(k + "/") for k in keep):
            keep.append(path)
    fds = {path: os.open(path, os.O_PATH) for path in keep}
    try:
        flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        if libc.mount(b"tmpfs", hidden.encode(), b"tmpfs", flags, b"size=64k,mode=755") != 0:
            return False
        for path, fd in fds.items():
            os.makedirs(path, mode=0o755, exist_ok=True)  # inside the new tmpfs
            libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, _MS_BIND | _MS_REC, None)
        # Read-only from now on; the bound directories keep their own (root-owned) permissions.
        return libc.mount(None, hidden.encode(), None, _MS_REMOUNT | _MS_RDONLY | flags, None) == 0
    finally:
        for fd in fds.values():
            os.close(fd)


def _expose_python(libc) -> bool:
    """In the server's private mount namespace, make the interpreter's files readable by the dropped uid.

    A Python installed under a 0700 directory (pyenv under /root) is unreadable to `nobody`, so any import not done
    by the server would fail. The closed directory is covered by an empty tmpfs (hiding its other contents, e.g.
    tokens and caches under /root) and only the entries on the way to sys.path are bind-mounted back.
    """
    wanted: dict[str, set[str]] = {}
    for entry in [sys.prefix, sys.base_prefix, *sys.path]:
        if not entry or not os.path.isabs(entry):
            continue
        parts = os.path.realpath(entry).split(os.sep)[1:]
        cur = "/"
        for part in parts:
            try:
                if not os.stat(cur).st_mode & stat.S_IXOTH:
                    wanted.setdefault(cur, set()).add(part)
                    break
            except OSError:
                break
            cur = os.path.join(cur, part)
    ok = True
    for closed, names in sorted(wanted.items(), key=lambda kv: len(kv[0])):
        if any(closed.startswith(other + os.sep) for other in wanted if other != closed):
            continue  # nested closed directories: not handled, the pre-imported modules still work
        fds = {}
        for name in names:
            try:
                fds[name] = (os.open(os.path.join(closed, name), os.O_PATH), os.path.isdir(os.path.join(closed, name)))
            except OSError:
                pass
        if libc.mount(b"tmpfs", closed.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=64k,mode=711") != 0:
            ok = False
            continue
        for name, (fd, is_dir) in fds.items():
            target = os.path.join(closed, name)
            if is_dir:
                os.mkdir(target, 0o755)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
            if libc.mount(f"/proc/self/fd/{fd}".encode(), target.encode(), None, _MS_BIND | _MS_REC, None) != 0:
                ok = False
            os.close(fd)
    return ok


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _children_of(ppid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            found.append(int(name))
    return found


def _processes_of(uids: set[int]) -> dict[int, int]:
    """pid -> uid of the processes (zombies included: they still count against RLIMIT_NPROC) whose real uid is in
    `uids`, as this process's /proc shows them."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                uid = int(next(line for line in f if line.startswith(b"Uid:")).split()[1])
        except (OSError, StopIteration, ValueError):
            continue
        if uid in uids:
            found[int(name)] = uid
    return found


def _kill_uids(uids: set[int], wait_s: float) -> set[int]:
    """SIGKILL every process of `uids` until none is left or `wait_s` has passed; the uids still in use then."""
    deadline = time.monotonic() + wait_s
    while True:
        left = _processes_of(uids)
        if not left or time.monotonic() >= deadline:
            return set(left.values())
        for pid in left:
            _kill(pid)
        time.sleep(0.01)


def _leftovers(uid: int, caps: dict, jobs: dict) -> list[int]:
    """The processes still alive of an ended job whose programs ran as `uid` (in the server).

    With the uid drop the slot's uid names them exactly: every process of a job but the (reaped) job child runs as
    that uid and cannot change it (no privileges, no_new_privs), and no other running job has it. The slot's cgroup
    would name the same processes, but cgroup v1 has no `cgroup.kill` and a uid, unlike a cgroup, can be retired.
    Without the uid drop everything of an ended job is an orphan that reached this server (a subreaper or pid 1):
    any child that is not a running job's child.
    """
    if caps["uid_drop"]:
        return list(_processes_of({uid}))
    return [pid for pid in _children_of(os.getpid()) if pid not in jobs]


def _move_out_of_slot(pids: list[int], slot_cgroup: str, moved: set[int]) -> None:
    """Move killed processes from the slot's CPU cgroup to this server's own (where they would be without the
    sandbox's cgroups). A process needs CPU time to exit, and a fork bomb's 64 killed processes rationed to one slot's
    share die one by one: about a second on a loaded machine, while the slot cannot take its next program. Killed,
    they can never run the program's code again, so this lends nothing to it. Best effort: cgroup v1 or v2, a pid
    per write, zombies (already exited) refused."""
    base = os.path.dirname(os.path.dirname(slot_cgroup))
    v2 = os.path.isfile(os.path.join(base, "cgroup.controllers"))
    target = None
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if (controllers == "") if v2 else ("cpu" in controllers.split(",")):
                    target = os.path.join(base, path.lstrip("/"), "cgroup.procs")
                    break
        fd = os.open(target, os.O_WRONLY) if target else -1
    except (OSError, ValueError):
        return
    if fd < 0:
        return
    try:
        for pid in pids:
            if pid not in moved:
                moved.add(pid)
                try:
                    os.write(fd, str(pid).encode())
                except OSError:
                    pass
    finally:
        os.close(fd)


def _remove_owned_by(uid: int, folders: list[str]) -> None:
    """Delete what `uid` left at the top of the shared temporary folders (only where there is no private, read-only
    /tmp), so that the slot's next program, same uid, cannot read it. Called once no process of `uid` is left, so
    nothing races the deletion; rmtree does not follow symlinks."""
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if st.st_uid != uid:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def _start_job(req: dict, root_fd: int, caps: dict, libc) -> int:
    pid = os.fork()
    if pid:
        return pid
    # job child (root): never returns
    code = 111
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        job_fd = os.open(req["dir"], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
        # Opened as root, before any privilege drop: the job dir itself is root-owned.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        prog_fd = os.open("program.py", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=job_fd)
        files = (
            os.open("result.json", flags, 0o600, dir_fd=job_fd),
            os.open("stdout.txt", flags, 0o600, dir_fd=job_fd),
            os.open("stderr.txt", flags, 0o600, dir_fd=job_fd),
            os.open("work", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=job_fd),
            os.read(prog_fd, 1 << 24),
        )
        os.close(prog_fd)
        os.close(job_fd)
        if req.get("cgroup"):  # CPU fair share per slot: a fork bomb's 64 processes get one slot's share
            try:
                with open(os.path.join(req["cgroup"], "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            except OSError:
                pass
        if caps["ipc_namespace_per_job"]:
            # SysV shared memory, semaphores, message queues and POSIX message queues outlive their creator (a
            # segment is kept until IPC_RMID): in the job's own IPC namespace they die with its last process instead
            # of waiting there for the slot's next program (same uid) or piling up on the host.
            _check(libc.unshare(_CLONE_NEWIPC), "unshare(CLONE_NEWIPC)")
        in_ns = caps["pid_namespace_per_job"] and libc.unshare(_CLONE_NEWPID) == 0
        if not in_ns:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        alive_r, alive_w = os.pipe()  # EOF on alive_r tells the job init that this process is gone
        init = os.fork()
        if init == 0:
            os.close(alive_w)
            _job_init(req, files, caps, libc, alive_r)
        os.close(alive_r)
        while True:
            wpid, status = os.waitpid(-1, 0)
            if wpid == init:
                break
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if not in_ns:
            for _ in range(50):
                kids = _children_of(os.getpid())
                if not kids:
                    break
                for kid in kids:
                    _kill(kid)
                try:
                    while os.waitpid(-1, os.WNOHANG)[0]:
                        pass
                except ChildProcessError:
                    pass
    finally:
        os._exit(code)


def _job_init(req: dict, files: tuple, caps: dict, libc, alive_r: int) -> None:
    """pid 1 of the job's pid namespace (or the job's top process): drop privileges, fork the program, relay."""
    code = 112
    try:
        uid = int(req["uid"])
        if caps["uid_drop"]:
            os.setgroups([])
            os.setgid(_GID)
            os.setuid(uid)
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it
        if select.select([alive_r], [], [], 0)[0]:  # the job child died before PDEATHSIG was armed
            os._exit(code)
        os.close(alive_r)
        prog = os.fork()
        if prog == 0:
            _run_program(req, files, libc)
        status = os.waitpid(prog, 0)[1]
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    finally:
        os._exit(code)


def _run_program(req: dict, files: tuple, libc) -> None:
    """The program's process: rlimits, workdir, fds, exec, save. Exit 0 means the result file was written."""
    try:
        limits = req["limits"]
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        res_fd, out_fd, err_fd, work_fd, src = files
        os.fchdir(work_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.dup2(res_fd, 3, inheritable=False)
        os.closerange(4, 1 << 16)
        workdir = os.getcwd()
        os.environ.clear()
        os.environ.update(
            PATH="/usr/local/bin:/usr/bin:/bin",
            HOME=workdir,
            TMPDIR=workdir,
            MPLBACKEND="Agg",
            MPLCONFIGDIR=os.path.join(workdir, ".mplconfig"),
            LANG="C.UTF-8",
        )
        mb = 1 << 20
        for rlim, value in (
            (resource.RLIMIT_CPU, max(1, int(limits["cpu_s"] + 0.999))),
            (resource.RLIMIT_AS, int(limits["memory_mb"]) * mb),
            (resource.RLIMIT_FSIZE, int(limits["file_size_mb"]) * mb),
            (resource.RLIMIT_NOFILE, int(limits["open_files"])),
            (resource.RLIMIT_NPROC, int(limits["processes"])),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(rlim, (value, value))
    except BaseException as exc:
        try:
            os.write(2, f"sandbox setup failed: {_exception_line(exc)}\n".encode())
        finally:
            os._exit(113)
    status, error = _exec_and_save(src, int(limits["max_pixels"]))
    try:
        os.write(3, json.dumps({"status": status, "error": error[:500]}).encode())
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(0)


def _exec_and_save(src: bytes, max_pixels: int) -> tuple[str, str]:
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    saved: list = []
    real_savefig = Figure.savefig

    def record_savefig(fig, *args, **kwargs):
        saved.append(fig)

    def pyplot_savefig(*args, **kwargs):
        saved.append(plt.gcf())

    Figure.savefig = record_savefig
    plt.savefig = pyplot_savefig
    plt.show = lambda *args, **kwargs: None
    matplotlib.use("Agg")
    status, error = "ok", ""
    try:
        code = compile(src, "<program>", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit:
        pass
    except BaseException as exc:  # noqa: BLE001 - anything the program raises is its result
        status, error = "runtime_error", _exception_line(exc)
    try:
        if saved:
            fig = saved[-1]
        elif plt.get_fignums():
            fig = plt.gcf()
        else:
            return (status if status != "ok" else "no_image"), error or "no figure drawn"
        w, h = (float(v) for v in fig.get_size_inches())
        dpi = float(fig.dpi)
        if not (w > 0 and h > 0 and dpi > 0):
            return (status if status != "ok" else "no_image"), error or "empty figure size"
        if w * h * dpi * dpi > max_pixels:
            # Shrink the canvas first (a 400-inch axis would lay out thousands of ticks), then the dpi.
            max_area = max_pixels / (72.0 * 72.0)
            if w * h > max_area:
                scale = (max_area / (w * h)) ** 0.5
                w, h = w * scale, h * scale
                fig.set_size_inches(w, h)
            dpi = min(dpi, (max_pixels / (w * h)) ** 0.5 * 0.999)
        buf = io.BytesIO()
        real_savefig(fig, buf, format="png", dpi=dpi)
        try:
            os.unlink(OUTPUT_NAME)
        except FileNotFoundError:
            pass
        fd = os.open(OUTPUT_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
    except BaseException as exc:  # noqa: BLE001
        if status == "ok":
            status, error = "no_image", "saving the figure failed: " + _exception_line(exc)
    return status, error


def _exception_line(exc: BaseException) -> str:
    try:
        return traceback.format_exception_only(type(exc), exc)[-1].strip()[:500]
    except BaseException:  # noqa: BLE001
        return type(exc).__name__


# ------------------------------------------------------------------------------------------------------------ parent
def _make_cgroups(workers: int) -> tuple[str | None, list[str]]:
    """One CPU cgroup per worker slot (equal weights), so CPU is shared per program, not per process."""
    if os.geteuid() != 0:
        return None, []
    name = f"vlm-sandbox-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for base, v2 in (("/sys/fs/cgroup/cpu", False), ("/sys/fs/cgroup", True), ("/sys/fs/cgroup/unified", True)):
        if not os.path.isfile(os.path.join(base, "cgroup.procs")):
            continue
        if v2:
            try:
                with open(os.path.join(base, "cgroup.subtree_control")) as f:
                    if "cpu" not in f.read().split():
                        continue
            except OSError:
                continue
        root = os.path.join(base, name)
        try:
            os.mkdir(root)
            if v2:
                with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
                    f.write("+cpu")
            slots = []
            for slot in range(workers):
                os.mkdir(os.path.join(root, f"slot{slot}"))
                slots.append(os.path.join(root, f"slot{slot}"))
            return root, slots
        except OSError:
            _remove_cgroups(root)
    return None, []


def _remove_cgroups(root: str | None) -> None:
    if not root or not os.path.isdir(root):
        return
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            for _ in range(20):  # a killed job's processes may take a moment to leave
                try:
                    os.rmdir(entry.path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
    try:
        os.rmdir(root)
    except OSError:
        logger.warning("could not remove sandbox cgroup %s", root)


def _probe_unshare() -> list[str]:
    """The namespace prefix this machine allows, best first ([] when none)."""
    exe = shutil.which("unshare")
    if not exe:
        return []
    for prefix in (
        [exe, "--net", "--pid", "--fork", "--mount-proc", "--kill-child"],
        [exe, "--net", "--pid", "--fork", "--mount-proc"],
        [exe, "--net"],
        [exe, "--pid", "--fork", "--mount-proc"],
    ):
        try:
            r = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return prefix
    return []


class Sandbox:
    """Warm fork server that renders matplotlib programs in isolated, resource-limited children."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), workers: int | None = None):
        self.limits = limits
        self.workers = min(_UID_BLOCK, max(1, workers or os.cpu_count() or 1))  # no two slots share a uid
        self.uid_base = _UID_BASE + secrets.randbelow(_UID_BLOCKS) * _UID_BLOCK
        # A slot's uid is retired (replaced by a spare one) when processes of it could not be killed; a slot with no
        # spare uid left is taken out of service.
        self._slot_uids = [self.uid_base + slot for slot in range(self.workers)]
        self._spare_uids = list(range(self.uid_base + _UID_BLOCK - 1, self.uid_base + self.workers - 1, -1))
        self._out_of_service: set[int] = set()
        self._lock = threading.Lock()
        self._next_id = 0
        self._proc: subprocess.Popen | None = None
        self._buf = b""
        self.jobs_root = tempfile.mkdtemp(prefix="vlm-sandbox-")
        os.chmod(self.jobs_root, 0o711)
        self._cgroup_root, self._cgroups = _make_cgroups(self.workers)
        self._finalizer = weakref.finalize(
            self, Sandbox._cleanup, [None], self.jobs_root, self._cgroup_root, self.uid_base
        )
        self.protections: dict[str, bool] = {}
        self._start()

    # -- server lifecycle
    def _start(self) -> None:
        prefix = _probe_unshare()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "MPLBACKEND": "Agg"}
        env["HOME"] = env["MPLCONFIGDIR"] = os.path.join(self.jobs_root, "server")
        os.makedirs(env["HOME"], mode=0o700, exist_ok=True)
        cmd = [*prefix, sys.executable, "-I", os.path.abspath(__file__), "--serve", self.jobs_root]
        cmd.append("private-mounts" if "--mount-proc" in prefix else "shared-mounts")
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True, start_new_session=True
        )
        self._finalizer.detach()
        self._finalizer = weakref.finalize(
            self, Sandbox._cleanup, [self._proc], self.jobs_root, self._cgroup_root, self.uid_base
        )
        hello = self._read_line(time.monotonic() + 60)
        if hello is None or "hello" not in hello:
            self._stop()
            raise RuntimeError(f"sandbox fork server failed to start: {cmd}")
        caps = hello["hello"]
        in_mount_ns = "--mount-proc" in prefix
        self.protections = {
            "network_namespace": "--net" in prefix,
            "pid_namespace": "--pid" in prefix,  # the trainer's pids are invisible to programs
            "pid_namespace_per_job": bool(caps["pid_namespace_per_job"]),  # tree kill via the namespace's init
            "ipc_namespace_per_job": bool(caps["ipc_namespace_per_job"]),  # SysV/POSIX IPC objects die with the job
            "uid_drop": bool(caps["uid_drop"]),
            "private_tmp": bool(caps["hidden_tmp"]) and in_mount_ns,
            "rlimits": True,
            "scrubbed_env": True,
            "fresh_workdir": True,
            "no_new_privs": True,
            "cpu_fair_share": bool(self._cgroups),  # a cgroup per slot: CPU shared per program, not per process
        }
        global _warned
        if not _warned:
            _warned = True
            missing = [k for k, v in self.protections.items() if not v]
            level = logging.WARNING if missing else logging.INFO
            logger.log(level, "sandbox protections: %s; missing: %s", self.protections, missing or "none")

    def _read_line(self, deadline: float) -> dict | None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _stop(self, force: bool = False) -> None:
        proc, self._proc = self._proc, None
        self._buf = b""
        if proc is not None:
            Sandbox._kill_server(proc, grace_s=0.0 if force else 3.0)

    @staticmethod
    def _kill_server(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # unshare and the server (pid-ns init: takes all jobs along)
            except ProcessLookupError:
                pass
            proc.wait()
        proc.stdout.close()

    @staticmethod
    def _cleanup(procs: list, jobs_root: str, cgroup_root: str | None, uid_base: int) -> None:
        for proc in procs:
            if proc is not None and proc.poll() is None:
                Sandbox._kill_server(proc)
        if os.geteuid() == 0:  # a server killed without its pid namespace leaves its programs' processes behind
            _kill_uids(set(range(uid_base, uid_base + _UID_BLOCK)), 1.0)
        shutil.rmtree(jobs_root, ignore_errors=True)
        _remove_cgroups(cgroup_root)

    def close(self) -> None:
        with self._lock:
            self._stop()
            self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- rendering
    def render(self, codes: list[str]) -> list[RenderResult]:
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("Sandbox is closed")
            return self._render(list(codes))

    def _render(self, codes: list[str]) -> list[RenderResult]:
        results: list[RenderResult | None] = [None] * len(codes)
        pending: list[int] = []
        for i, code in enumerate(codes):
            try:
                compile(code, "<program>", "exec")
                pending.append(i)
            except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
                results[i] = RenderResult("syntax_error", None, _exception_line(exc), 0.0)
        pending.reverse()
        free_slots = [slot for slot in range(self.workers - 1, -1, -1) if slot not in self._out_of_service]
        inflight: dict[int, tuple[int, int, str, float]] = {}  # job id -> (index, slot, dir, start)
        backstop = self.limits.wall_s + self.limits.cleanup_s + 5.0
        while pending or inflight:
            if pending and not free_slots and not inflight:
                raise RuntimeError(
                    f"every sandbox slot is out of service: processes of all {_UID_BLOCK} uids of this Sandbox "
                    "could not be killed (see the errors logged above)"
                )
            while pending and free_slots:
                i = pending.pop()
                slot = free_slots.pop()
                job_id, job_dir = self._prepare(codes[i], slot)
                inflight[job_id] = (i, slot, job_dir, time.monotonic())
                req = {"id": job_id, "dir": os.path.basename(job_dir), "uid": self._uid(slot), "limits": self._limits()}
                req["cgroup"] = self._cgroups[slot] if self._cgroups else None
                self._send(req)
            deadline = min(start for _, _, _, start in inflight.values()) + backstop
            reply = self._read_line(deadline)
            if reply is None:  # server dead or hung: restart it, everything in flight timed out
                logger.warning("sandbox fork server unresponsive; restarting it")
                self._stop(force=True)
                # Without a pid namespace the programs outlive the killed server; with one they may still be dying.
                stuck = set()
                if self.protections["uid_drop"]:
                    stuck = _kill_uids(set(self._slot_uids), self.limits.cleanup_s)
                for i, slot, job_dir, start in inflight.values():
                    results[i] = RenderResult("timeout", None, "sandbox server unresponsive", time.monotonic() - start)
                    shutil.rmtree(job_dir, ignore_errors=True)
                    free_slots.append(slot)
                inflight.clear()
                for slot in list(free_slots):
                    if self._slot_uids[slot] in stuck and not self._retire(slot, "processes left by the killed server"):
                        free_slots.remove(slot)
                self._start()
                continue
            i, slot, job_dir, start = inflight.pop(reply["id"])
            try:
                results[i] = self._collect(reply, job_dir, time.monotonic() - start)
            finally:
                shutil.rmtree(job_dir, ignore_errors=True)
                leftovers = int(reply.get("leftovers", 0))
                if not leftovers or self._retire(slot, f"{leftovers} process(es) of its last program"):
                    free_slots.append(slot)
        return results  # type: ignore[return-value]

    def _uid(self, slot: int) -> int:
        return self._slot_uids[slot]

    def _retire(self, slot: int, what: str) -> bool:
        """Give up the slot's uid, whose processes could not be killed within `cleanup_s` (a process in
        uninterruptible sleep, a zombie nobody reaps): the slot's next program must not share their uid, and with it
        their RLIMIT_NPROC count, signals and files. True if the slot goes on with a spare uid, False if it is out of
        service."""
        uid = self._slot_uids[slot]
        why = f"sandbox slot {slot}: {what} could not be killed within {self.limits.cleanup_s:g} s"
        if self._spare_uids:
            self._slot_uids[slot] = self._spare_uids.pop()
            logger.error("%s; uid %d retired, the slot now uses uid %d", why, uid, self._slot_uids[slot])
            return True
        self._out_of_service.add(slot)
        logger.error("%s and no spare uid is left: slot out of service", why)
        return False

    def _limits(self) -> dict:
        lim = self.limits
        return {
            "wall_s": lim.wall_s,
            "cpu_s": lim.cpu_s,
            "memory_mb": lim.memory_mb,
            "file_size_mb": lim.file_size_mb,
            "open_files": lim.open_files,
            "processes": lim.processes,
            "max_pixels": lim.max_pixels,
            "cleanup_s": lim.cleanup_s,
        }

    def _send(self, req: dict) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(req).encode() + b"\n")
        self._proc.stdin.flush()

    def _prepare(self, code: str, slot: int) -> tuple[int, str]:
        self._next_id += 1
        job_dir = os.path.join(self.jobs_root, f"job{self._next_id}")
        os.mkdir(job_dir, 0o755)
        work = os.path.join(job_dir, "work")
        os.mkdir(work, 0o700)
        if self.protections.get("uid_drop"):
            os.chown(work, self._uid(slot), _GID)
        # 0600: read by the job child as root; the programs of other slots, running meanwhile, cannot read it.
        fd = os.open(os.path.join(job_dir, "program.py"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with open(fd, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(code)
        return self._next_id, job_dir

    def _collect(self, reply: dict, job_dir: str, seconds: float) -> RenderResult:
        cap = self.limits.max_output_bytes
        output = "".join(
            _read_capped(os.path.join(job_dir, n), cap).decode("utf-8", "replace") for n in ("stdout.txt", "stderr.txt")
        )
        if reply.get("timeout"):
            return RenderResult("timeout", None, f"wall time {self.limits.wall_s:g} s exceeded", seconds, output)
        code = reply.get("code", 128 + reply.get("signal", 0))
        if code != 0:
            sig = code - 128
            name = signal.Signals(sig).name if 0 < sig < 65 and sig in signal.valid_signals() else ""
            error = f"killed by signal {name or sig}" if name else f"process exited with code {code}"
            return RenderResult("killed", None, error, seconds, output)
        try:
            meta = json.loads(_read_capped(os.path.join(job_dir, "result.json"), _RESULT_CAP))
            status, error = str(meta["status"]), str(meta.get("error", ""))[:500]
        except (ValueError, KeyError, TypeError):
            return RenderResult("killed", None, "the program ended before the sandbox could report", seconds, output)
        if status not in STATUSES:
            status, error = "runtime_error", f"invalid status from the program: {status[:50]}"
        if status != "ok":
            return RenderResult(status, None, error, seconds, output)
        image, why = self._read_png(os.path.join(job_dir, "work"))
        if image is None:
            return RenderResult("no_image", None, why, seconds, output)
        return RenderResult("ok", image, "", seconds, output)

    def _read_png(self, work: str) -> tuple[Image.Image | None, str]:
        max_bytes = self.limits.max_pixels * 4 + (1 << 20)
        try:
            dir_fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            return None, f"workdir unreadable: {exc.strerror}"
        try:
            fd = os.open(OUTPUT_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            return None, f"output unreadable: {exc.strerror}"
        finally:
            os.close(dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None, "output is not a regular file"
            if st.st_size > max_bytes:
                return None, f"output too large ({st.st_size} bytes)"
            data = os.read(fd, max_bytes + 1)
        finally:
            os.close(fd)
        if not data.startswith(_PNG_SIGNATURE) or len(data) > max_bytes:
            return None, "output is not a PNG"
        try:
            image = Image.open(io.BytesIO(data), formats=["PNG"])
            w, h = image.size
            if w * h > self.limits.max_pixels or w <= 0 or h <= 0:
                return None, f"output image too large ({w}x{h})"
            image.load()
        except Exception as exc:  # noqa: BLE001 - any decoder failure means no usable image
            return None, f"output PNG undecodable: {_exception_line(exc)}"
        return image, ""


def _read_capped(path: str, cap: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        chunks, left = [], cap
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def render_code_in_process(code: str) -> Image.Image | None:
    """UNSAFE baseline for benchmarks: exec the program in this process and return the current figure as PIL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    try:
        exec(compile(code, "<program>", "exec"), {"__name__": "__main__"})
    except SystemExit:
        pass
    if not plt.get_fignums():
        return None
    buf = io.BytesIO()
    plt.gcf().savefig(buf, format="png")
    plt.close("all")
    buf.seek(0)
    image = Image.open(buf)
    image.load()
    return image


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--serve":
    _serve(sys.argv[2], sys.argv[3] == "private-mounts")
