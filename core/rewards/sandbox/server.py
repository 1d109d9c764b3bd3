"""The sandbox's fork server and the program's process it forks per job (see the package docstring for the layout
and what each level enforces).

Over 500 lines: this file runs as the fork server, ``python -I <this file> --serve JOBS_ROOT MOUNTS``, and isolated
mode puts neither this folder nor the repository on sys.path, so everything the server runs must live in this one
stdlib-only file (the parent, core.rewards.sandbox.client, imports its few shared helpers from here).

Protocol: requests are JSON lines on stdin (``{"id", "dir", "uid", "limits", "cgroup"}``, ``dir`` relative to
JOBS_ROOT), replies JSON lines on stdout (``{"hello": caps}`` once, then ``{"id", "timeout", "code" | "signal",
"leftovers"?}`` per job, sent only once the job's slot is empty). The program's own result (status, error) is in
the job dir's ``result.json``, its figure in ``work/`` + :data:`OUTPUT_NAME`.
"""

from __future__ import annotations

import ctypes
import gc
import io
import json
import os
import resource
import select
import shutil
import signal
import stat
import sys
import time
import traceback

OUTPUT_NAME = "_sandbox_output.png"
GID = 65534  # nogroup
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


# ---------------------------------------------------------------------------------------------------------------- libc
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


# ------------------------------------------------------------------------------------------------------ fork server
def _serve(jobs_root: str, private_mounts: bool) -> None:
    """Set up the server (imports, warm-up, hidden folders, capabilities), then answer jobs until stdin closes."""
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
    root_fd = os.open(jobs_root, os.O_RDONLY | os.O_DIRECTORY)  # before /tmp, where it may be, is hidden
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
    own_namespaces = _probe_job_namespaces(libc, caps)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    gc.collect()
    gc.freeze()  # children's garbage collections skip the server's objects: no copy-on-write of the whole heap
    _Server(root_fd, caps, shared_tmp, own_namespaces, libc).run()


def _own_pidfd() -> int | None:
    """A pidfd of this process (readable once it has exited), or None where the kernel has none (before 5.3)."""
    try:
        return os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        return None


def _probe_job_namespaces(libc, caps: dict) -> dict[int, int]:
    """Whether each program can get its own pid and IPC namespaces (`caps`); fds of this server's own ones.

    unshare() moves the caller's own IPC namespace and the pid namespace of its next child, so the server forks a
    job's program right after an unshare and moves back with setns() at once (`_fork_program`); probed here the
    same way. A failed move back would leave the server's next children in the wrong namespaces: fatal."""
    own = {}
    for flag, name, cap in (
        (_CLONE_NEWPID, "pid", "pid_namespace_per_job"),
        (_CLONE_NEWIPC, "ipc", "ipc_namespace_per_job"),
    ):
        try:
            fd = os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        if libc.unshare(flag) == 0:
            _check(libc.setns(fd, flag), f"setns({name})")
            own[flag], caps[cap] = fd, True
        else:
            os.close(fd)
    return own


class _Server:
    """The server's loop: start each requested job, enforce its wall time, answer it once its slot is empty.

    Requests are JSON lines on stdin, answers JSON lines on stdout. A job is its program's process, forked from this
    pristine server. The answer waits until no process of the job is left (the slot's next program gets the same
    uid, cgroup and RLIMIT_NPROC count): at once when the program was the init of its own pid namespace and ended by
    itself (the kernel lets an init exit only once every other process of its namespace is gone, and nothing leaves
    a pid namespace), else after a search for the slot's processes (`_leftovers`) comes back empty, SIGKILLing what
    it finds every few ms and moving it out of the slot's CPU cgroup, for at most `cleanup_s`; what is still there
    then is reported (`leftovers`: the parent retires the slot's uid).
    """

    def __init__(self, root_fd: int, caps: dict, shared_tmp: list[str], own_namespaces: dict[int, int], libc):
        self.root_fd = root_fd
        self.caps, self.shared_tmp, self.own_namespaces, self.libc = caps, shared_tmp, own_namespaces, libc
        self.jobs: dict[int, dict] = {}  # pid of the job's program -> job, until reaped
        self.draining: list[dict] = []  # ended or killed jobs answered once their slot is empty
        self.out = sys.stdout
        # Lets a program tell, once its parent-death signal is armed, whether this server died before (`_run_program`).
        self.pidfd = _own_pidfd()

    def run(self) -> None:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wfd)
        self.send({"hello": self.caps})
        buf = b""
        stdin_fd = sys.stdin.fileno()
        open_input = True
        while open_input or self.jobs or self.draining:
            now = time.monotonic()
            timeout = min((j["deadline"] - now for j in self.jobs.values() if not j["timeout"]), default=1.0)
            if self.draining:
                timeout = min(timeout, 0.005)
            watched = [stdin_fd, rfd] if open_input else [rfd]
            try:
                ready, _, _ = select.select(watched, [], [], max(0.0, min(timeout, 1.0)))
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
                    for pid in self.jobs:
                        _kill(pid)
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.start(json.loads(line))
            self.expire()
            self.reap()
            self.drain()
            if not self.caps["pid_namespace_per_job"]:
                for orphan in _children_of(os.getpid()):
                    if orphan not in self.jobs:
                        _kill(orphan)

    def send(self, message: dict) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def start(self, req: dict) -> None:
        job = {
            "id": req["id"],
            "uid": int(req["uid"]),
            "deadline": time.monotonic() + req["limits"]["wall_s"],
            "cleanup_s": float(req["limits"]["cleanup_s"]),
            "cgroup": req.get("cgroup"),
            "timeout": False,
        }
        try:
            job["pid"] = _start_job(req, self.root_fd, self.caps, self.libc, self.own_namespaces, self.pidfd)
        except OSError as exc:  # the job's files, or the namespaces: the program never ran
            print(f"sandbox job {req['id']} not started: {exception_line(exc)}", file=sys.stderr, flush=True)
            self.answer(job, {"id": job["id"], "timeout": False, "code": 111})
            return
        self.jobs[job["pid"]] = job

    def expire(self) -> None:
        """Kill the programs past their wall time; each is drained from now on (its namespace may take a while)."""
        now = time.monotonic()
        for pid, job in self.jobs.items():
            if not job["timeout"] and now >= job["deadline"]:
                _kill(pid)
                job["timeout"], job["reply"] = True, {"id": job["id"], "timeout": True}
                job["drain_deadline"] = now + job["cleanup_s"]
                self.draining.append(job)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self.jobs.pop(pid, None)
            if job is None or job["timeout"]:
                continue  # an orphan reparented to us (subreaper / pid 1), or a killed job: being drained
            reply = {"id": job["id"], "timeout": False}
            if os.WIFSIGNALED(status):
                reply["signal"] = os.WTERMSIG(status)
            else:
                reply["code"] = os.WEXITSTATUS(status)
            if self.caps["pid_namespace_per_job"]:  # its namespace's init is reaped: nothing of the job is left
                self.answer(job, reply)
            else:
                job["reply"], job["drain_deadline"] = reply, time.monotonic() + job["cleanup_s"]
                self.draining.append(job)

    def drain(self) -> None:
        for job in list(self.draining):
            # The slot takes its next job only after the answer, so nothing of this job may outlive it: a timed-out
            # fork bomb's processes (or a pid namespace still being torn down) can live on for a while with the
            # slot's uid, cgroup and RLIMIT_NPROC count, next to the next program.
            left = _leftovers(job["uid"], self.caps, self.jobs)
            unreaped = job["pid"] in self.jobs  # a killed program not gone yet (with the uid drop, also in `left`)
            if (left or unreaped) and time.monotonic() < job["drain_deadline"]:
                for pid in left:
                    _kill(pid)
                if job["cgroup"]:
                    _move_out_of_slot(left, job["cgroup"], job.setdefault("moved", set()))
                continue  # reaped by the next rounds (orphans are ours), or by their namespace's init
            self.draining.remove(job)
            if left or unreaped:  # unkillable (uninterruptible sleep, a zombie whose parent is not ours): retire uid
                job["reply"]["leftovers"] = max(len(left), 1)
            self.answer(job, job["reply"])

    def answer(self, job: dict, reply: dict) -> None:
        """Reply for a job whose slot is empty (or given up: `leftovers`), after deleting what the slot's uid left in
        the shared temporary folders; the slot takes its next program after this."""
        if self.caps["uid_drop"] and "leftovers" not in reply:
            _remove_owned_by(job["uid"], self.shared_tmp)
        self.send(reply)


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


def kill_uids(uids: set[int], wait_s: float) -> set[int]:
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

    With the uid drop the slot's uid names them exactly: every process of a job runs as that uid once past its first
    steps (a killed program still setting up is waited for as unreaped) and cannot change it (no privileges,
    no_new_privs), and no other running job has it. The slot's cgroup would name the same processes, but cgroup v1
    has no `cgroup.kill` and a uid, unlike a cgroup, can be retired. Without the uid drop everything of an ended job
    is an orphan that reached this server (a subreaper or pid 1): any child that is not a running job's program.
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


def _join_cgroup(cgroup: str) -> None:
    """Move this (single-threaded) process into `cgroup`. On cgroup v1, writing 0 to `tasks` moves the calling
    thread alone, which the kernel does without the global threadgroup lock that a `cgroup.procs` write takes; that
    lock's RCU grace period cost 7-25 ms per job here. v2 has no `tasks` file: `cgroup.procs` it is."""
    tasks = os.path.join(cgroup, "tasks")
    if os.path.exists(tasks):
        path, value = tasks, "0"
    else:
        path, value = os.path.join(cgroup, "cgroup.procs"), str(os.getpid())
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        pass


def _start_job(req: dict, root_fd: int, caps: dict, libc, own_namespaces: dict[int, int], pidfd: int | None) -> int:
    """Open the job's files as root (its folder is root's; only `work/` is the program's), fork the program and
    close them again here; the program's pid."""
    job_fd = os.open(req["dir"], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
    files: list[int] = []
    try:
        prog_fd = os.open("program.py", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=job_fd)
        try:
            src = os.read(prog_fd, 1 << 24)
        finally:
            os.close(prog_fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for name in ("result.json", "stdout.txt", "stderr.txt"):
            files.append(os.open(name, flags, 0o600, dir_fd=job_fd))
        files.append(os.open("work", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=job_fd))
        pid = _fork_program(libc, own_namespaces)
        if pid == 0:
            _run_program(req, (*files, src), caps, libc, pidfd)  # never returns
        return pid
    finally:
        os.close(job_fd)
        for fd in files:
            os.close(fd)


def _fork_program(libc, own_namespaces: dict[int, int]) -> int:
    """fork(), the child in new pid and IPC namespaces where the machine allows them (it is its pid namespace's
    init), this server back in its own at once (`_probe_job_namespaces`). SysV shared memory, semaphores and
    message queues and POSIX message queues outlive their creator: in the job's own IPC namespace they die with its
    last process instead of waiting for the slot's next program (same uid) or piling up on the host.

    Why the server forks the program itself, rather than through a root job process and a separate init as it used
    to: every process of a job is a fork of this warm server, and each fork and exit of it costs milliseconds of
    kernel time (its page tables) plus copy-on-write faults; one process per job instead of three measured 20-30 ms
    less CPU per program (of ~180 on a busy 2-core machine, where single runs vary by +-15 ms)."""
    flags = 0
    for flag in own_namespaces:
        flags |= flag
    if flags:
        _check(libc.unshare(flags), "unshare")
    pid = os.fork()
    if pid:
        for flag, fd in own_namespaces.items():
            if libc.setns(fd, flag) != 0:  # not an OSError: nothing catches it, the server exits and is restarted
                raise RuntimeError(f"setns back to the server's own namespace: {os.strerror(ctypes.get_errno())}")
    return pid


def _run_program(req: dict, files: tuple, caps: dict, libc, pidfd: int | None) -> None:
    """The program's process, the init of the job's own pid namespace where there is one: slot cgroup, privileges
    dropped, rlimits, workdir, fds, exec, save. Exit 0 means the result file was written.

    As an init, a program that signals itself with a signal's default action is ignored (the kernel's rule for an
    init; signals the kernel raises, a segfault or the CPU limit's SIGKILL, still end it), its children's orphans
    are reparented to it, and its exit ends every process of the namespace (the tree kill)."""
    try:
        limits = req["limits"]
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if req.get("cgroup"):  # CPU fair share per slot: a fork bomb's 64 processes get one slot's share
            _join_cgroup(req["cgroup"])
        if caps["uid_drop"]:
            os.setgroups([])
            os.setgid(GID)
            os.setuid(int(req["uid"]))
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it
        if pidfd is not None and select.select([pidfd], [], [], 0)[0]:  # the server died before that
            os._exit(112)
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
            os.write(2, f"sandbox setup failed: {exception_line(exc)}\n".encode())
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
        status, error = "runtime_error", exception_line(exc)
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
            status, error = "no_image", "saving the figure failed: " + exception_line(exc)
    return status, error


def exception_line(exc: BaseException) -> str:
    """The exception's last formatted line, at most 500 characters: the `error` a result shows."""
    try:
        return traceback.format_exception_only(type(exc), exc)[-1].strip()[:500]
    except BaseException:  # noqa: BLE001
        return type(exc).__name__


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--serve":
    _serve(sys.argv[2], sys.argv[3] == "private-mounts")
