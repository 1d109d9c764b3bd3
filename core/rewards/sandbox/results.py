"""What a sandbox job gives back: the limits a caller sets (`SandboxLimits`), the result it gets (`RenderResult`,
`STATUSES`), and the reading of a finished job's files, which the program controlled and so are opened without
following links, size-capped and type-checked (`read_result`, `read_png`, `read_capped`). Also the bare in-process
render the benchmarks compare against."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
from dataclasses import dataclass

from PIL import Image

from core.rewards.sandbox.server import OUTPUT_NAME, exception_line

__all__ = [
    "STATUSES",
    "RenderResult",
    "SandboxLimits",
    "read_capped",
    "read_png",
    "read_result",
    "render_code_in_process",
]

STATUSES = ("ok", "syntax_error", "runtime_error", "timeout", "killed", "no_image")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RESULT_CAP = 16384


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


def read_result(reply: dict, job_dir: str, seconds: float, limits: SandboxLimits) -> RenderResult:
    """What a finished job left in `job_dir` (the server's `reply` for it), as a RenderResult; every file the
    program could have written is opened without following links, capped and type-checked."""
    cap = limits.max_output_bytes
    output = "".join(
        read_capped(os.path.join(job_dir, n), cap).decode("utf-8", "replace") for n in ("stdout.txt", "stderr.txt")
    )
    if reply.get("timeout"):
        return RenderResult("timeout", None, f"wall time {limits.wall_s:g} s exceeded", seconds, output)
    code = reply.get("code", 128 + reply.get("signal", 0))
    if code != 0:
        sig = code - 128
        name = signal.Signals(sig).name if 0 < sig < 65 and sig in signal.valid_signals() else ""
        error = f"killed by signal {name or sig}" if name else f"process exited with code {code}"
        return RenderResult("killed", None, error, seconds, output)
    try:
        meta = json.loads(read_capped(os.path.join(job_dir, "result.json"), _RESULT_CAP))
        status, error = str(meta["status"]), str(meta.get("error", ""))[:500]
    except (ValueError, KeyError, TypeError):
        return RenderResult("killed", None, "the program ended before the sandbox could report", seconds, output)
    if status not in STATUSES:
        status, error = "runtime_error", f"invalid status from the program: {status[:50]}"
    if status != "ok":
        return RenderResult(status, None, error, seconds, output)
    image, why = read_png(os.path.join(job_dir, "work"), limits.max_pixels)
    if image is None:
        return RenderResult("no_image", None, why, seconds, output)
    return RenderResult("ok", image, "", seconds, output)


def read_png(work: str, max_pixels: int) -> tuple[Image.Image | None, str]:
    """The figure the program saved in `work`, if it is a regular file holding a PNG of at most `max_pixels`."""
    max_bytes = max_pixels * 4 + (1 << 20)
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
        if w * h > max_pixels or w <= 0 or h <= 0:
            return None, f"output image too large ({w}x{h})"
        image.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means no usable image
        return None, f"output PNG undecodable: {exception_line(exc)}"
    return image, ""


def read_capped(path: str, cap: int) -> bytes:
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
