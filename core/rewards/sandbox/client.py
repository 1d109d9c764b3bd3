"""The sandbox's parent side: :class:`Sandbox` starts the fork server (core.rewards.sandbox.server) under ``unshare``,
hands each distinct program to a free slot (own uid, own CPU cgroup), enforces a backstop wall time, reads the PNG
back and post-processes each result (`Sandbox.map`) in a thread pool while the other programs still run;
:class:`SandboxLimits` and :class:`RenderResult` are what callers pass and get, :func:`default_workers` the node
share every rank runs at once."""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from core.rewards.sandbox import server
from core.rewards.sandbox.results import STATUSES, RenderResult, SandboxLimits, read_result, render_code_in_process
from core.rewards.sandbox.server import GID, exception_line, kill_uids

__all__ = ["STATUSES", "RenderResult", "Sandbox", "SandboxLimits", "default_workers", "render_code_in_process"]

logger = logging.getLogger(__name__)

_UID_BASE = 2_147_000_000  # far from real users and from the usual subuid ranges (100000+)
_UID_BLOCK = 256  # uids per Sandbox: at most this many slots, the rest replace uids retired with leftover processes
_UID_BLOCKS = 8_000_000  # blocks to draw from: uids stay below 2**32 - 2
_warned = False
T = TypeVar("T")


def default_workers() -> int:
    """Programs one rank runs at once: the CPUs this process may use (`os.sched_getaffinity`, which a container's
    cpuset or a launcher's pinning narrows, unlike `os.cpu_count`) divided by the ranks on this node
    (`LOCAL_WORLD_SIZE`, set by torchrun and accelerate), at least 1. Every rank of a node runs its own Sandbox, so
    this is each rank's share: together they use every core, and no more (a render is CPU-bound)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cpus // ranks)


def _make_cgroups(workers: int) -> tuple[str | None, list[str]]:
    """One CPU cgroup per worker slot (equal weights), so CPU is shared per program, not per process.

    The slots' parent group weighs as much as `workers` ordinary processes: at the default weight the whole sandbox
    would compete for CPU like ONE process, so any other busy process on the node (a data loader, another rank's
    trainer, a neighbour's job) would take a `workers`-times larger share than all its programs together."""
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
            weight, value = ("cpu.weight", min(10000, 100 * workers)) if v2 else ("cpu.shares", 1024 * workers)
            with open(os.path.join(root, weight), "w") as f:
                f.write(str(value))
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
    """Warm fork server that renders matplotlib programs in isolated, resource-limited children.

    `workers` (default `default_workers()`: the node's CPUs / its ranks) programs run at once, and as many threads
    read their results and run `map`'s post-processing. `jobs` counts the programs actually run (identical programs
    of one call run once)."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), workers: int | None = None):
        self.limits = limits
        self.workers = min(_UID_BLOCK, max(1, workers or default_workers()))  # no two slots share a uid
        self.jobs = 0
        self.uid_base = _UID_BASE + secrets.randbelow(_UID_BLOCKS) * _UID_BLOCK
        # A slot's uid is retired (replaced by a spare one) when processes of it could not be killed; a slot with no
        # spare uid left is taken out of service.
        self._slot_uids = [self.uid_base + slot for slot in range(self.workers)]
        self._spare_uids = list(range(self.uid_base + _UID_BLOCK - 1, self.uid_base + self.workers - 1, -1))
        self._out_of_service: set[int] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox-results")
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
        cmd = [*prefix, sys.executable, "-I", os.path.abspath(server.__file__), "--serve", self.jobs_root]
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
            kill_uids(set(range(uid_base, uid_base + _UID_BLOCK)), 1.0)
        shutil.rmtree(jobs_root, ignore_errors=True)
        _remove_cgroups(cgroup_root)

    def close(self) -> None:
        with self._lock:
            self._stop()
            self._finalizer()
            self._pool.shutdown()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- rendering
    def render(self, codes: Sequence[str]) -> list[RenderResult]:
        """One result per code, in order; identical codes run once and share their result object."""
        return self.map(codes, _result_itself)

    def map(self, codes: Sequence[str], then: Callable[[int, RenderResult], T]) -> list[T]:
        """`[then(i, result of codes[i]) for i in range(len(codes))]`, in order.

        Each distinct program runs once. As soon as one ends and its slot is empty, the slot takes the next program
        and the pool reads the result back (the guarded PNG decode) and runs `then` for every position holding it,
        while the other programs still run: post-processing (scoring the image) overlaps rendering instead of
        following it, and this call returns once the slowest program is rendered and processed. `then` runs in
        the pool's threads, so it must be thread-safe; what it raises is raised here, once every result is done.
        """
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("Sandbox is closed")
            if self._proc is None:  # a restart after an interrupted call failed: try again now
                self._start()
            positions: dict[str, list[int]] = {}
            for i, code in enumerate(codes):
                positions.setdefault(code, []).append(i)
            where = list(positions.values())
            out: list = [None] * len(codes)
            futures: list[Future] = []

            def done(k: int, read: Callable[[], RenderResult]) -> None:
                futures.append(self._pool.submit(_deliver, read, where[k], then, out))

            try:
                self._render(list(positions), done)
            finally:
                for future in futures:
                    future.exception()  # waits: nothing of this call outlives it
            for future in futures:
                future.result()
            return out

    def _render(self, codes: list[str], done: Callable[[int, Callable[[], RenderResult]], None]) -> None:
        """Run `codes` in the free slots, `workers` at a time, and call `done(k, read)` for each as soon as it ended
        (and the next program is on its way), `read()` giving codes[k]'s result and deleting its job folder."""
        finished: list[tuple[int, Callable[[], RenderResult]]] = []
        pending: list[int] = []
        for k, code in enumerate(codes):
            try:
                compile(code, "<program>", "exec")
                pending.append(k)
            except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
                finished.append((k, _ready(RenderResult("syntax_error", None, exception_line(exc), 0.0))))
        pending.reverse()
        free_slots = [slot for slot in range(self.workers - 1, -1, -1) if slot not in self._out_of_service]
        inflight: dict[int, tuple[int, int, str, float]] = {}  # job id -> (index, slot, dir, start)
        backstop = self.limits.wall_s + self.limits.cleanup_s + 5.0
        try:
            while pending or inflight:
                if pending and not free_slots and not inflight:
                    raise RuntimeError(
                        f"every sandbox slot is out of service: processes of all {_UID_BLOCK} uids of this Sandbox "
                        "could not be killed (see the errors logged above)"
                    )
                while pending and free_slots:
                    k = pending.pop()
                    slot = free_slots.pop()
                    job_id, job_dir = self._prepare(codes[k], slot)
                    inflight[job_id] = (k, slot, job_dir, time.monotonic())
                    req = {"id": job_id, "dir": os.path.basename(job_dir), "uid": self._uid(slot)}
                    req["limits"] = self._limits()
                    req["cgroup"] = self._cgroups[slot] if self._cgroups else None
                    self._send(req)
                # Handed over once the free slots are busy again: the pool's threads then compete for the GIL with
                # reading the next reply, not with starting the next program.
                for item in finished:
                    done(*item)
                finished.clear()
                deadline = min(start for _, _, _, start in inflight.values()) + backstop
                reply = self._read_line(deadline)
                if reply is None:  # server dead or hung: restart it, everything in flight timed out
                    logger.warning("sandbox fork server unresponsive; restarting it")
                    self._stop(force=True)
                    # Without a pid namespace the programs outlive the killed server; with one they may still be
                    # dying.
                    stuck = set()
                    if self.protections["uid_drop"]:
                        stuck = kill_uids(set(self._slot_uids), self.limits.cleanup_s)
                    for k, slot, job_dir, start in inflight.values():
                        seconds = time.monotonic() - start
                        finished.append(
                            (k, _ready(RenderResult("timeout", None, "sandbox server unresponsive", seconds)))
                        )
                        shutil.rmtree(job_dir, ignore_errors=True)
                        free_slots.append(slot)
                    inflight.clear()
                    for slot in list(free_slots):
                        if self._slot_uids[slot] in stuck and not self._retire(
                            slot, "processes left by the killed server"
                        ):
                            free_slots.remove(slot)
                    self._start()
                    continue
                k, slot, job_dir, start = inflight.pop(reply["id"])
                self._seal(job_dir)
                finished.append((k, partial(self._read_job, reply, job_dir, time.monotonic() - start)))
                leftovers = int(reply.get("leftovers", 0))
                if not leftovers or self._retire(slot, f"{leftovers} process(es) of its last program"):
                    free_slots.append(slot)
        except BaseException:
            if inflight:
                self._abandon(inflight)
            raise
        finally:
            for item in finished:
                done(*item)

    def _abandon(self, inflight: dict[int, tuple[int, int, str, float]]) -> None:
        """After an interrupted call (KeyboardInterrupt, an error sending a job), programs are still running whose
        replies the next call would misread and whose slots (and uids) it would hand to new programs: stop the server
        with them, kill what is left under the slots' uids, delete their folders, and start a fresh server."""
        logger.warning("sandbox call interrupted with %d program(s) running; restarting the fork server", len(inflight))
        self._stop(force=True)
        if self.protections.get("uid_drop"):
            stuck = kill_uids(set(self._slot_uids), self.limits.cleanup_s)
            for slot, uid in enumerate(self._slot_uids):
                if uid in stuck:
                    self._retire(slot, "processes of an interrupted call")
        for _, _, job_dir, _ in inflight.values():
            shutil.rmtree(job_dir, ignore_errors=True)
        inflight.clear()
        try:
            self._start()
        except Exception as err:  # the interruption is what the caller must see; the next call reports this
            logger.error("sandbox fork server could not restart: %s", err)

    def _seal(self, job_dir: str) -> None:
        """Take an ended job's workdir from the slot's uid before the slot's next program (same uid) starts, so that
        program cannot read what this one left, though the folder is read and deleted only later, in the pool. The
        program may have opened up its mode, so both owner and mode are reset."""
        if self.protections.get("uid_drop"):
            try:
                fd = os.open(os.path.join(job_dir, "work"), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                try:
                    os.fchmod(fd, 0o700)
                    os.fchown(fd, 0, 0)
                finally:
                    os.close(fd)
            except OSError:
                shutil.rmtree(job_dir, ignore_errors=True)  # then nothing is left to read: a "killed" result

    def _read_job(self, reply: dict, job_dir: str, seconds: float) -> RenderResult:
        try:
            return read_result(reply, job_dir, seconds, self.limits)
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)

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
        self.jobs += 1
        job_dir = os.path.join(self.jobs_root, f"job{self.jobs}")
        os.mkdir(job_dir, 0o755)
        work = os.path.join(job_dir, "work")
        os.mkdir(work, 0o700)
        if self.protections.get("uid_drop"):
            os.chown(work, self._uid(slot), GID)
        # 0600: read by the server as root; the programs of other slots, running meanwhile, cannot read it.
        fd = os.open(os.path.join(job_dir, "program.py"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with open(fd, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(code)
        return self.jobs, job_dir


def _result_itself(index: int, result: RenderResult) -> RenderResult:
    return result


def _ready(result: RenderResult) -> Callable[[], RenderResult]:
    return lambda: result


def _deliver(
    read: Callable[[], RenderResult], where: list[int], then: Callable[[int, RenderResult], T], out: list
) -> None:
    """Pool task: read one program's result, then `then` it for every position of the batch that holds it."""
    result = read()
    for i in where:
        out[i] = then(i, result)
