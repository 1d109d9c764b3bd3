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

Modules: :mod:`.client` (the parent: :class:`Sandbox`, :class:`SandboxLimits`, :class:`RenderResult`, cgroups, reading
the PNG) and :mod:`.server` (the fork server and everything below it, run as ``python -I server.py --serve``).
Import from here: ``from core.rewards.sandbox import Sandbox, SandboxLimits, RenderResult, STATUSES``.
"""

from core.rewards.sandbox.client import STATUSES, RenderResult, Sandbox, SandboxLimits, render_code_in_process

__all__ = ["STATUSES", "RenderResult", "Sandbox", "SandboxLimits", "render_code_in_process"]
