"""Errors a person can act on: printed as one message without a traceback, once, and last.

A user-facing error is one the start-up checks raise about what the person gave: bad data, a bad config value, a
missing file, a refused combination (ValueError and its subclasses such as `core.data.records.DataError` and
`ConfigError`,
FileNotFoundError, FileExistsError, ...). A traceback only buries such a message; it helps with bugs. So
`install_error_hook` (called by `core.training.config.parse_config`, the first thing every train.py does) replaces
`sys.excepthook`:

* user-facing error, direct run (`python recipes/<r>/train.py ...`): the message on stderr, no traceback, exit
  status `USER_ERROR_EXIT` (2, argparse's status for a bad command line). `VLM_GRPO_TRACEBACK=1` prints the traceback
  too.
* user-facing error under `core/tools/launch.sh` (which sets `VLM_GRPO_ERROR_FILE` and `VLM_GRPO_LOG`): nothing on the
  console; the traceback is appended to the run's training.log and the message written to the error file (rank 0's
  wins), which the launcher prints as its last lines after the run stops, then exits with `USER_ERROR_EXIT`.
  `monitor_and_run.sh` does not relaunch such a run: it cannot succeed until the person fixes something.
* anything else (a bug, or a library failing in the middle of training): Python's own traceback, as before.

Under the launcher each worker also asks the kernel to kill it when its parent (torch's elastic agent) dies
(`die_with_parent`), so no worker outlives a killed launch.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import traceback
from pathlib import Path
from types import TracebackType

USER_ERROR_EXIT = 2
ERROR_FILE_ENV = "VLM_GRPO_ERROR_FILE"
LOG_FILE_ENV = "VLM_GRPO_LOG"
TRACEBACK_ENV = "VLM_GRPO_TRACEBACK"
_PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Frames of these functions mean "training had started": a ValueError raised by a library from there is a bug or a
# numerical failure, not a setting the person can fix before launching, so it keeps its traceback.
_TRAINING_FRAMES = {("trainer.py", "_inner_training_loop"), ("trainer.py", "train")}


class ConfigError(ValueError):
    """A config key, flag or value the parser refuses (unknown key, out-of-range number, bad flag value)."""


class UserFacingError(Exception):
    """Mixin for project errors that are not ValueError/OSError but still mean "the person must change something"
    (e.g. a missing optional backend)."""


USER_ERROR_TYPES: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    UserFacingError,
)


def _in_project(filename: str) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(_PROJECT_ROOT)
    except (OSError, ValueError):
        return False


def is_user_error(exc: BaseException) -> bool:
    """True for a user-facing error (see the module docstring): a user-error type raised before training started,
    or raised by the project's own code (core/, recipes/) at any time. A plain ValueError counts only when a `raise`
    statement raised it (a check refusing a value), not when the interpreter did (a failed unpacking is a bug)."""
    if not isinstance(exc, USER_ERROR_TYPES):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and type(exc) is ValueError and not (frames[-1].line or "").lstrip().startswith("raise"):
        return False  # the interpreter's own ValueError (unpacking, int("x")): a bug, not a refused input
    if not frames or _in_project(frames[-1].filename):
        return True
    return not any((Path(f.filename).name, f.name) in _TRAINING_FRAMES for f in frames)


def user_message(exc: BaseException) -> str:
    """`Type: message`, as the last line of a traceback reads, without the traceback."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _write_error_file(path: str, message: str, rank: int) -> None:
    """Rank 0's message replaces the file; another rank's is kept only when no message is there yet (a rank that
    failed alone still explains the stop)."""
    target = Path(path)
    if rank == 0:
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        tmp.write_text(message + "\n")
        os.replace(tmp, target)
        return
    with contextlib.suppress(FileExistsError), open(target, "x") as f:
        f.write(message + "\n")


def report_user_error(exc: BaseException) -> None:
    """Print or record `exc` as described in the module docstring (no exit)."""
    message = user_message(exc)
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    rank = _rank()
    error_file, log_file = os.environ.get(ERROR_FILE_ENV), os.environ.get(LOG_FILE_ENV)
    show_trace = os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
    if error_file:
        try:
            _write_error_file(error_file, message, rank)
            if log_file:
                with open(log_file, "a") as log:
                    log.write(f"[rank {rank}] {trace}")
        except OSError:  # the output folder is not writable: fall back to the console
            error_file = None
    if show_trace:
        sys.stderr.write(trace)
    elif not error_file and rank == 0:
        sys.stderr.write(f"{message}\n(set {TRACEBACK_ENV}=1 for the full traceback)\n")


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if not is_user_error(exc):
        sys.__excepthook__(exc_type, exc, tb)
        return
    report_user_error(exc)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    # The interpreter's own exit status after an uncaught exception is always 1; this one says "fix and rerun".
    os._exit(USER_ERROR_EXIT)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: have the kernel send `sig` to this process when its parent dies (PR_SET_PDEATHSIG), and exit now if
    the parent is already gone. Used by workers under core/tools/launch.sh: torch starts them in their own sessions, so
    without it a killed agent leaves them running."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if parent == 1 or os.getppid() != parent:
        os._exit(128 + int(sig))


def install_error_hook() -> None:
    """Route uncaught exceptions through `_excepthook`; under the launcher, also `die_with_parent`."""
    sys.excepthook = _excepthook
    if os.environ.get(ERROR_FILE_ENV) and "LOCAL_RANK" in os.environ:
        die_with_parent()
