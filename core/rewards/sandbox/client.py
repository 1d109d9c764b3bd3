"""The sandbox's parent side: :class:`Sandbox` starts the fork server (core.rewards.sandbox.server) under ``unshare``,
hands each program to a free slot (own uid, own CPU cgroup), enforces a backstop wall time, and reads the PNG back;
:class:`SandboxLimits` and :class:`RenderResult` are what callers pass and get."""

from __future__ import annotations

import io
import json
import logging
import os
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
import uuid
import weakref
from dataclasses import dataclass

from PIL import Image

from core.rewards.sandbox import server
from core.rewards.sandbox.server import GID, OUTPUT_NAME, exception_line, kill_uids

__all__ = ["STATUSES", "RenderResult", "Sandbox", "SandboxLimits", "render_code_in_process"]

logger = logging.getLogger(__name__)

STATUSES = ("ok", "syntax_error", "runtime_error", "timeout", "killed", "no_image")

_UID_BASE = 2_147_000_000  # far from real users and from the usual subuid ranges (100000+)
_UID_BLOCK = 256  # uids per Sandbox: at most this many slots, the rest replace uids retired with leftover processes
_UID_BLOCKS = 8_000_000  # blocks to draw from: uids stay below 2**32 - 2
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RESULT_CAP = 16384
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
                results[i] = RenderResult("syntax_error", None, exception_line(exc), 0.0)
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
                    stuck = kill_uids(set(self._slot_uids), self.limits.cleanup_s)
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
            os.chown(work, self._uid(slot), GID)
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
            return None, f"output PNG undecodable: {exception_line(exc)}"
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
