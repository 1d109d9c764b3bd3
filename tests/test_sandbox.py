"""core.sandbox: untrusted matplotlib programs rendered in a warm fork server, hostile programs classified."""

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from core import sandbox as sandbox_mod
from core.sandbox import STATUSES, RenderResult, Sandbox, SandboxLimits, render_code_in_process

HOSTILE = Path(__file__).parent / "fixtures" / "hostile"
REPO = Path(__file__).resolve().parents[1]
WALL_S = 2.0
TOKEN = uuid.uuid4().hex[:12]
SECRET = f"s3cr3t-{TOKEN}"

# fixture file -> expected status
EXPECTED = {
    "infinite_loop": "timeout",
    "fork_bomb": "timeout",
    "memory_bomb": "runtime_error",  # MemoryError under RLIMIT_AS
    "endless_output": "runtime_error",  # EFBIG once stdout reaches RLIMIT_FSIZE
    "huge_file": "runtime_error",  # EFBIG
    "huge_figure": "ok",  # dpi clamped to max_pixels
    "plt_show": "ok",
    "input_call": "runtime_error",  # EOFError: stdin is empty
    "sys_exit_after_plot": "ok",  # a figure was drawn before sys.exit: it is saved
    "sys_exit_no_figure": "no_image",
    "segfault": "killed",
    "symlink_output": "no_image",  # never followed
    "fifo_output": "no_image",  # never blocked on
    "png_bomb_output": "no_image",  # dimensions checked before decoding
    "write_outside": "ok",  # every write outside the job folder fails, then it draws
    "delete_parent": "runtime_error",  # PermissionError: the job folder is not the program's
    "read_environ": "no_image",  # prints what it could read: must not contain the secret
    "signal_parent": "runtime_error",  # ProcessLookupError / PermissionError
    "kill_everything": "runtime_error",  # kill(-1) reaches nothing: ESRCH (own uid, own pid namespace)
    "network": "runtime_error",  # no network in the namespace
    "setsid_daemon": "ok",  # the daemon dies with the job's pid namespace
    "setsid_then_loop": "timeout",
}

SIMPLE = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('simple')\n"


def _hostile_code(name: str) -> str:
    code = (HOSTILE / f"{name}.py").read_text()
    return code.replace("__TOKEN__", TOKEN).replace("__TRAINER_PID__", str(os.getpid())).replace("__REPO__", str(REPO))


def _escape_paths() -> list[Path]:
    return [Path(p) / f"sandbox_escape_{TOKEN}" for p in ("/tmp", "/var/tmp", "/dev/shm", tempfile_dir(), str(REPO))]


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def _leftover_processes(sb: Sandbox) -> list[str]:
    """Processes of the sandbox's uids, or whose cwd is inside its job folders."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
            with open(f"/proc/{name}/status") as f:
                uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
        except (OSError, StopIteration):
            continue
        if sb.uid_base <= uid < sb.uid_base + 256 or cwd.startswith(os.path.join(sb.jobs_root, "job")):
            found.append(f"{name} uid={uid} cwd={cwd}")
    return found


@pytest.fixture(scope="module")
def sb():
    os.environ["SANDBOX_TEST_SECRET"] = SECRET
    try:
        with Sandbox(SandboxLimits(wall_s=WALL_S, cpu_s=WALL_S, memory_mb=1024), workers=2) as box:
            yield box
    finally:
        os.environ.pop("SANDBOX_TEST_SECRET", None)


def test_simple_plot_ok_and_fast(sb):
    results = sb.render([SIMPLE])  # the first render after start-up
    t = time.monotonic()
    (r,) = sb.render([SIMPLE])
    elapsed = time.monotonic() - t
    for res in (results[0], r):
        assert isinstance(res, RenderResult) and res.status == "ok", res
        assert res.image is not None and res.image.size == (640, 480)
        assert len(res.image.convert("L").getcolors(256) or []) > 1  # something was drawn
    assert elapsed < 1.0


def test_syntax_and_runtime_errors(sb):
    syn, run, printed = sb.render(["plt.plot(", "raise ValueError('boom')", "print('hello')\nraise SystemExit"])
    assert syn.status == "syntax_error" and "SyntaxError" in syn.error and syn.seconds == 0.0
    assert run.status == "runtime_error" and run.error == "ValueError: boom"
    assert printed.status == "no_image" and printed.output == "hello\n"


def test_hostile_suite(sb):
    names = sorted(EXPECTED)
    assert {p.stem for p in HOSTILE.glob("*.py")} == set(names)
    t = time.monotonic()
    results = sb.render([_hostile_code(n) for n in names])
    total = time.monotonic() - t
    for name, res in zip(names, results, strict=True):
        assert res.status in STATUSES
        assert res.status == EXPECTED[name], (name, res)
        assert res.seconds < WALL_S + 2.0, (name, res.seconds)
        assert SECRET not in res.output and SECRET not in res.error, name
        assert len(res.output.encode()) <= 2 * sb.limits.max_output_bytes + 16, name
    by_name = dict(zip(names, results, strict=True))
    w, h = by_name["huge_figure"].image.size
    assert w * h <= sb.limits.max_pixels
    assert "refused" in by_name["read_environ"].output
    assert "wrote" not in by_name["write_outside"].output, by_name["write_outside"].output
    assert total < 4 * (WALL_S + 2.0)
    for path in _escape_paths():
        assert not path.exists(), path
    assert os.path.isdir(sb.jobs_root)
    deadline = time.monotonic() + 2.0
    while _leftover_processes(sb) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftover_processes(sb) == []
    assert os.listdir(sb.jobs_root) == ["server"]  # every job folder was deleted


def test_trainer_survives_signal_attempts(sb):
    handler = signal.getsignal(signal.SIGTERM)
    got = []
    signal.signal(signal.SIGTERM, lambda *a: got.append(a))
    try:
        (r,) = sb.render([_hostile_code("signal_parent")])
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert r.status == "runtime_error" and not got


def test_protections_reported(sb):
    p = sb.protections
    for key in ("network_namespace", "pid_namespace", "pid_namespace_per_job", "uid_drop", "rlimits", "scrubbed_env"):
        assert key in p and isinstance(p[key], bool)
    if os.geteuid() == 0:
        assert p["uid_drop"]


def test_state_does_not_leak_between_programs(sb):
    a = (
        "import matplotlib, numpy, matplotlib.pyplot as plt\n"
        "matplotlib.rcParams['lines.linewidth'] = 9\n"
        "numpy.mean = lambda *a, **k: 42\n"
        "plt.figure(); plt.plot([1, 2])\n"
        "import builtins; builtins.LEAK = 1\n"
    )
    b = (
        "import builtins, matplotlib, numpy, matplotlib.pyplot as plt\n"
        "assert matplotlib.rcParams['lines.linewidth'] == 1.5, matplotlib.rcParams['lines.linewidth']\n"
        "assert numpy.mean([1, 3]) == 2\n"
        "assert plt.get_fignums() == [], plt.get_fignums()\n"
        "assert not hasattr(builtins, 'LEAK')\n"
        "import os; assert os.listdir('.') == [], os.listdir('.')\n"
        "assert 'SANDBOX_TEST_SECRET' not in os.environ\n"
        "assert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'MPLBACKEND', 'MPLCONFIGDIR', 'LANG'}, os.environ\n"
        "plt.plot([1, 2])\n"
    )
    ra, rb = sb.render([a, b])
    assert ra.status == "ok"
    (rb,) = sb.render([b])  # strictly after A
    assert rb.status == "ok", rb


def test_parallel_render_keeps_order(sb):
    codes = [
        f"import matplotlib.pyplot as plt\nplt.figure(figsize=({2 + i}, 2), dpi=50)\nplt.plot([{i}])\n"
        for i in range(8)
    ]
    results = sb.render(codes)
    assert [r.status for r in results] == ["ok"] * 8
    assert [r.image.size for r in results] == [((2 + i) * 50, 100) for i in range(8)]


def test_timeout_is_bounded_and_sandbox_keeps_working(sb):
    t = time.monotonic()
    loop, ok = sb.render([_hostile_code("setsid_then_loop"), SIMPLE])
    assert loop.status == "timeout" and loop.seconds < WALL_S + 2.0
    assert ok.status == "ok"
    assert time.monotonic() - t < WALL_S + 2.0


def test_degraded_mode_without_namespaces(monkeypatch):
    """Where `unshare` is refused the sandbox still isolates by uid, rlimits and tree kill, and says so."""
    monkeypatch.setattr(sandbox_mod, "_probe_unshare", lambda: [])
    monkeypatch.setenv("SANDBOX_TEST_SECRET", SECRET)
    with Sandbox(SandboxLimits(wall_s=1.0), workers=2) as box:
        assert not box.protections["network_namespace"] and not box.protections["pid_namespace"]
        names = ["read_environ", "signal_parent", "setsid_daemon", "setsid_then_loop", "segfault"]
        results = box.render([_hostile_code(n) for n in names] + [SIMPLE])
        statuses = [r.status for r in results]
        assert statuses == ["no_image", "runtime_error", "ok", "timeout", "killed", "ok"], results
        for r in results:
            assert SECRET not in r.output
        deadline = time.monotonic() + 2.0
        while _leftover_processes(box) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _leftover_processes(box) == []


def test_close_stops_everything():
    box = Sandbox(SandboxLimits(wall_s=5.0), workers=1)
    root = box.jobs_root
    proc = box._proc
    box.close()
    assert proc.poll() is not None and not os.path.exists(root)
    with pytest.raises(RuntimeError):
        box.render([SIMPLE])


def test_render_code_in_process_baseline():
    image = render_code_in_process(SIMPLE)
    assert image is not None and image.size == (640, 480)
    assert render_code_in_process("x = 1") is None


def test_hung_server_is_replaced():
    """The parent's own backstop: a server that stops answering is killed and restarted; in-flight jobs time out."""
    with Sandbox(SandboxLimits(wall_s=0.5), workers=1) as box:
        assert box.render([SIMPLE])[0].status == "ok"
        old = box._proc
        server = sandbox_mod._children_of(old.pid) or [old.pid]  # the server under `unshare`, or itself
        os.kill(server[0], signal.SIGSTOP)
        t = time.monotonic()
        (r,) = box.render([SIMPLE])
        assert r.status == "timeout" and "unresponsive" in r.error
        assert time.monotonic() - t < 0.5 + 7.0
        assert box._proc is not old and old.poll() is not None
        assert box.render([SIMPLE])[0].status == "ok"
