"""core.rewards.sandbox: untrusted matplotlib programs rendered in a warm fork server, hostile programs classified."""

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from core.rewards.sandbox import (
    STATUSES,
    RenderResult,
    Sandbox,
    SandboxLimits,
    default_workers,
    render_code_in_process,
)
from core.rewards.sandbox import client as sandbox_client
from core.rewards.sandbox import server as sandbox_server

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
LOOP = "while True:\n    pass\n"


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
        allowed = {EXPECTED[name]}
        if name == "memory_bomb":
            # On a loaded machine (two test workers on 2 cores) the allocation loop can take longer than the 2 s
            # wall before it reaches RLIMIT_AS; stopped by the wall clock is still contained (seen in CI once).
            allowed.add("timeout")
        assert res.status in allowed, (name, res)
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
    keys = ("network_namespace", "pid_namespace", "pid_namespace_per_job", "ipc_namespace_per_job", "uid_drop")
    for key in (*keys, "rlimits", "scrubbed_env"):
        assert key in p and isinstance(p[key], bool)
    if os.geteuid() == 0:
        assert p["uid_drop"] and p["ipc_namespace_per_job"] == p["pid_namespace_per_job"]  # both need CAP_SYS_ADMIN


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


def _sized(width: int, sleep_s: float = 0.0) -> str:
    """A program drawing a width x 50 figure (so its result says which program it was), after sleeping."""
    figure = f"plt.figure(figsize=({width / 50}, 1), dpi=50)"
    return f"import time\ntime.sleep({sleep_s})\nimport matplotlib.pyplot as plt\n{figure}\n"


def test_identical_programs_run_once_and_share_their_result(sb):
    codes = [_sized(100), _sized(150), _sized(100), "plt.plot(", _sized(150), _sized(100)]
    jobs = sb.jobs
    results = sb.render(codes)
    assert sb.jobs - jobs == 2  # two distinct programs ran; the syntax error needs no job
    assert [r.status for r in results] == ["ok", "ok", "ok", "syntax_error", "ok", "ok"]
    assert [r.image.size[0] for i, r in enumerate(results) if i != 3] == [100, 150, 100, 150, 100]
    assert results[0] is results[2] is results[5] and results[1] is results[4]


def test_map_post_processes_each_result_as_it_ends_in_parallel_and_in_order():
    """`then` of a quick program runs while a slow one is still running, the pool's threads overlap, and the
    values come back in input order whatever order the programs ended in."""
    calls: dict[int, tuple[float, float]] = {}

    def then(i: int, result: RenderResult) -> tuple[int, int]:
        start = time.monotonic()
        time.sleep(1.0)
        calls[i] = (start, time.monotonic())
        return i, result.image.size[0]

    with Sandbox(SandboxLimits(wall_s=10.0), workers=2) as box:
        values = box.map([_sized(100), _sized(150, sleep_s=3.0), _sized(200)], then)
        end = time.monotonic()
    assert values == [(0, 100), (1, 150), (2, 200)]
    assert calls[0][1] < end - 1.5  # the quick program was post-processed before the slow one ended
    assert calls[2][0] < calls[0][1]  # the two quick ones were post-processed at the same time (2 workers)


def test_map_raises_what_then_raised_once_every_result_is_done(sb):
    seen = []

    def then(i: int, result: RenderResult) -> str:
        if i == 0:
            raise ValueError("scoring failed")
        seen.append(i)
        return result.status

    with pytest.raises(ValueError, match="scoring failed"):
        sb.map([SIMPLE, _sized(100), _sized(150)], then)
    assert sorted(seen) == [1, 2]  # one failure costs only its own value
    assert os.listdir(sb.jobs_root) == ["server"]  # nothing of that call is left behind
    assert sb.render([SIMPLE])[0].status == "ok"


# Run in the same slot right after WRITE_AND_OPEN_UP, while that job's folder still exists (the test delays its
# read-back): tries to list the previous job's workdir, whose path it derives from its own.
PEEK_PREVIOUS = """
import os
here = os.getcwd()
job = here.rsplit('/', 2)[-2]
previous = here.replace(f'/{job}/', f'/job{int(job[3:]) - 1}/')
try:
    print('listed', os.listdir(previous), open(os.path.join(previous, 'secret.txt')).read())
except OSError as exc:
    print('refused', type(exc).__name__)
"""
WRITE_AND_OPEN_UP = "import os\nos.chmod('.', 0o777)\nwith open('secret.txt', 'w') as f:\n    f.write('s3cr3t')\n"


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no_unshare"])
def test_ended_workdir_is_taken_from_the_slot_before_its_next_program(namespaces, monkeypatch):
    """The pool reads a job's folder back after its slot took the next program (same uid): the workdir is root's
    0700 by then, even when the program had opened it up. (In the server's private mount namespace the jobs' folder,
    under the hidden /tmp, cannot even be named.)"""
    if os.geteuid() != 0:
        pytest.skip("one uid per slot needs root")
    if not namespaces:
        monkeypatch.setattr(sandbox_client, "_probe_unshare", lambda: [])
    read_job = Sandbox._read_job

    def slow_read_job(self, *args):
        time.sleep(1.0)  # the next program runs meanwhile, the previous job's folder still there
        return read_job(self, *args)

    monkeypatch.setattr(Sandbox, "_read_job", slow_read_job)
    with Sandbox(SandboxLimits(wall_s=5.0), workers=1) as box:
        first, peek = box.render([WRITE_AND_OPEN_UP, PEEK_PREVIOUS])
    assert first.status == "no_image" and peek.status == "no_image", (first, peek)
    assert peek.output in ("refused PermissionError\n", "refused FileNotFoundError\n" if namespaces else ""), peek


def test_the_sandbox_weighs_as_much_cpu_as_its_workers():
    """Under CPU contention all slots together get the share of `workers` processes, not of one (the default weight
    of their parent group), each slot an equal part of it."""
    with Sandbox(SandboxLimits(wall_s=2.0), workers=3) as box:
        if not box.protections["cpu_fair_share"]:
            pytest.skip("no writable cgroup cpu controller here")
        v1 = os.path.isfile(os.path.join(box._cgroup_root, "cpu.shares"))
        name, unit = ("cpu.shares", 1024) if v1 else ("cpu.weight", 100)
        weights = [Path(group, name).read_text().strip() for group in (box._cgroup_root, *box._cgroups)]
    assert weights == [str(3 * unit), str(unit), str(unit), str(unit)]


def test_default_workers_is_the_rank_share_of_usable_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert default_workers() == 1  # never 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with Sandbox(SandboxLimits(wall_s=2.0)) as box:  # the default of every Sandbox (train.py, evaluate.py)
        assert box.workers == 5
        assert box.render([SIMPLE])[0].status == "ok"


def test_timeout_is_bounded_and_sandbox_keeps_working(sb):
    t = time.monotonic()
    loop, ok = sb.render([_hostile_code("setsid_then_loop"), SIMPLE])
    assert loop.status == "timeout" and loop.seconds < WALL_S + 2.0
    assert ok.status == "ok"
    assert time.monotonic() - t < WALL_S + 2.0


def test_degraded_mode_without_namespaces(monkeypatch):
    """Where `unshare` is refused the sandbox still isolates by uid, rlimits and tree kill, and says so."""
    monkeypatch.setattr(sandbox_client, "_probe_unshare", lambda: [])
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
    with Sandbox(SandboxLimits(wall_s=0.5, cleanup_s=0.5), workers=1) as box:
        assert box.render([SIMPLE])[0].status == "ok"
        old = box._proc
        server = sandbox_server._children_of(old.pid) or [old.pid]  # the server under `unshare`, or itself
        os.kill(server[0], signal.SIGSTOP)
        t = time.monotonic()
        (r,) = box.render([SIMPLE])
        assert r.status == "timeout" and "unresponsive" in r.error
        # the backstop (wall_s + cleanup_s + 5 s), then a restart (up to ~2 s; 10 s allowed on a loaded machine)
        assert time.monotonic() - t < 0.5 + 0.5 + 5.0 + 10.0
        assert box._proc is not old and old.poll() is not None
        assert box.render([SIMPLE])[0].status == "ok"


# Run right after a fork bomb in the same slot: counts the processes of its own uid that are neither itself nor its
# parent (the job's init), as seen in /proc at the moment it starts, then draws a known figure (100x50, red).
COUNT_SLOT_PROCESSES = """
import os
me = int(os.readlink('/proc/self'))
with open('/proc/self/status') as f:
    parent = int(next(line for line in f if line.startswith('PPid:')).split()[1])
others = []
for name in os.listdir('/proc'):
    if name.isdigit() and int(name) not in (me, parent):
        try:
            with open(f'/proc/{name}/status') as f:
                uid = int(next(line for line in f if line.startswith('Uid:')).split()[1])
        except (OSError, StopIteration):
            continue
        if uid == os.getuid():
            others.append(name)
print('leftover', len(others))
import matplotlib.pyplot as plt
fig = plt.figure(figsize=(2, 1), dpi=50)
fig.patch.set_facecolor('red')
"""


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no_unshare"])
def test_slot_is_empty_before_its_next_job(namespaces, monkeypatch):
    """A fork bomb's processes are all gone before the same slot (same uid, same cgroup) runs the next program."""
    if os.geteuid() != 0:
        pytest.skip("one uid per slot needs root")
    if not namespaces:
        monkeypatch.setattr(sandbox_client, "_probe_unshare", lambda: [])
    limits = SandboxLimits(wall_s=1.0, cpu_s=1.0, processes=16)  # the bomb is capped by the sandbox's own RLIMIT_NPROC
    with Sandbox(limits, workers=1) as box:  # one slot: the second program runs where the bomb ran
        bomb, plot = box.render([_hostile_code("fork_bomb"), COUNT_SLOT_PROCESSES])
        assert bomb.status == "timeout", bomb
        assert plot.status == "ok", plot
        assert plot.output == "leftover 0\n", plot.output
        assert plot.image.size == (100, 50)
        assert plot.image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
        assert _leftover_processes(box) == []


# Leaves state behind in every place a program of the same slot (same uid) could look next: files in the shared
# temporary folders (writable only where there is no private mount namespace), its workdir, a SysV shared memory
# segment (survives its creator unless the job has its own IPC namespace).
LEAVE_STATE = """
import ctypes, os
for path in ('/tmp', '/var/tmp', '/dev/shm'):
    try:
        with open(f'{path}/sandbox_slot_state___TOKEN__', 'w') as f:
            f.write('left')
    except OSError:
        pass
open('left_in_workdir', 'w').close()
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
shm = libc.shmget(__KEY__, 4096, 0o1000 | 0o600)  # IPC_CREAT
assert shm >= 0, os.strerror(ctypes.get_errno())
addr = libc.shmat(shm, None, 0)
ctypes.memmove(addr, b'left', 4)
libc.shmdt(ctypes.c_void_p(addr))
"""
FIND_STATE = """
import ctypes, os
found = [p for p in ('/tmp', '/var/tmp', '/dev/shm') if os.path.exists(f'{p}/sandbox_slot_state___TOKEN__')]
found += os.listdir('.')
if ctypes.CDLL(None).shmget(__KEY__, 0, 0) >= 0:
    found.append('shm')
print('found', found)
"""


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no_unshare"])
def test_no_state_passes_to_the_next_job_in_a_slot(namespaces, monkeypatch):
    """Files in /tmp-like folders, the workdir and SysV IPC objects of a job are gone before its slot's next job."""
    if os.geteuid() != 0:
        pytest.skip("one uid per slot needs root")
    if not namespaces:
        monkeypatch.setattr(sandbox_client, "_probe_unshare", lambda: [])
    key = int(TOKEN[:7], 16)
    leave, find = (c.replace("__TOKEN__", TOKEN).replace("__KEY__", str(key)) for c in (LEAVE_STATE, FIND_STATE))
    try:
        with Sandbox(SandboxLimits(wall_s=5.0), workers=1) as box:
            left, found = box.render([leave, find])
            assert left.status == "no_image", left
            assert found.status == "no_image" and found.output == "found []\n", found
        assert not any(Path(p, f"sandbox_slot_state_{TOKEN}").exists() for p in ("/tmp", "/var/tmp", "/dev/shm"))
        assert f" {key} " not in Path("/proc/sysvipc/shm").read_text()  # nothing left on the host either
    finally:  # the code before the fix left both behind
        for p in ("/tmp", "/var/tmp", "/dev/shm"):
            Path(p, f"sandbox_slot_state_{TOKEN}").unlink(missing_ok=True)
        subprocess.run(["ipcrm", "-M", str(key)], capture_output=True)


def test_slot_with_unkillable_leftovers_gets_a_fresh_uid(monkeypatch, caplog):
    """A process of the slot's uid that cannot be killed (here a zombie whose parent, this test, does not reap it)
    outlives `cleanup_s`: the slot's uid is retired and its next program runs under a spare one; with no spare left
    the slot goes out of service and a render says so instead of hanging. The slot is searched after a job the server
    could not prove empty, here a timeout (a job whose pid namespace's init was reaped is empty: no search)."""
    if os.geteuid() != 0:
        pytest.skip("one uid per slot needs root")
    monkeypatch.setattr(sandbox_client, "_probe_unshare", lambda: [])  # the server sees this test's processes
    with Sandbox(SandboxLimits(wall_s=2.0, cleanup_s=0.3), workers=1) as box:
        uid = box._uid(0)
        zombie = subprocess.Popen(["true"], user=uid, group=65534, extra_groups=[])
        try:
            deadline = time.monotonic() + 5.0
            while Path(f"/proc/{zombie.pid}/stat").read_text().split()[2] != "Z" and time.monotonic() < deadline:
                time.sleep(0.01)
            t = time.monotonic()
            first, second = box.render([LOOP, "import os\nprint(os.getuid())"])
            assert time.monotonic() - t < 2 * (2.0 + 0.3)
            assert first.status == "timeout" and second.status == "no_image", (first, second)
            assert int(second.output) == box._uid(0) != uid
            assert f"uid {uid} retired" in caplog.text
        finally:
            zombie.wait()
    monkeypatch.setattr(sandbox_client, "_UID_BLOCK", 1)  # one uid per Sandbox: no spare
    with Sandbox(SandboxLimits(wall_s=2.0, cleanup_s=0.3), workers=1) as box:
        zombie = subprocess.Popen(["true"], user=box._uid(0), group=65534, extra_groups=[])
        try:
            deadline = time.monotonic() + 5.0
            while Path(f"/proc/{zombie.pid}/stat").read_text().split()[2] != "Z" and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(RuntimeError, match="out of service"):
                box.render([LOOP, SIMPLE])
        finally:
            zombie.wait()


def test_an_interrupted_call_leaves_no_running_program_behind(monkeypatch):
    """A call cut short while programs run (Ctrl-C, an error handing over a job) must not leave them to the next call:
    their replies would be misread (KeyError) and their slots, with their uids, handed to new programs."""
    slow = "import time\ntime.sleep(3)\n" + SIMPLE
    with Sandbox(SandboxLimits(wall_s=10.0), workers=2) as sandbox:
        send = sandbox._send
        sent = []

        def send_then_fail(req: dict) -> None:
            if sent:
                raise OSError("pipe broke")
            sent.append(req)
            send(req)

        monkeypatch.setattr(sandbox, "_send", send_then_fail)
        with pytest.raises(OSError, match="pipe broke"):
            sandbox.render([slow, slow + "#2"])
        monkeypatch.setattr(sandbox, "_send", send)
        assert sorted(os.listdir(sandbox.jobs_root)) == ["server"]  # the running program's folder is gone
        start = time.monotonic()
        for _ in range(2):  # a stale reply would surface here as a KeyError or a wrong result
            (result,) = sandbox.render([SIMPLE])
            assert result.status == "ok" and result.image is not None
        assert time.monotonic() - start < 3.0  # not queued behind the interrupted 3 s program
