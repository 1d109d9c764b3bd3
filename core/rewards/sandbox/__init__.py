"""Render untrusted, model-written matplotlib programs to PNGs, safely and fast (the image2code reward).

A GRPO step asks for thousands of renders, and every program is hostile until proven otherwise. Layout::

    trainer (Sandbox)                    parent: prepares job dirs, enforces a backstop wall time; its pool
      │                                  reads each PNG back and post-processes it (`map`: the image2code score)
      └─ unshare --net --pid --fork --mount-proc   (when the OS allows it; the trainer's pid is invisible inside)
           └─ fork server (pid 1 there)  imported matplotlib/numpy once, scrubbed env; mounts read-only empty
                │                        tmpfs over /tmp, /var/tmp, /run/lock, /dev/shm; enforces wall time;
                │                        opens the job's files as root, then unshare(CLONE_NEWPID|CLONE_NEWIPC),
                │                        fork, and setns() back to its own namespaces
                └─ program (pid 1)       init of its own pid namespace, with its own SysV/POSIX IPC namespace:
                                         joins its slot's CPU cgroup, setgid/setuid to a per-slot uid,
                                         no_new_privs, parent-death SIGKILL, rlimits, fresh workdir,
                                         stdin=/dev/null, exec(code), save the figure

* **One fork per program** from a pristine server: rcParams, monkey-patched numpy, open figures and anything else a
  program changes die with its process; nothing is `exec`ed twice in one interpreter. Only one: a fork and an exit
  of the warm server cost milliseconds of kernel time each, so no helper process stands between the server and the
  program (the program is its namespace's init: a signal it sends itself with the default action is ignored, as the
  kernel does for any init; the kernel's own, a segfault or the CPU limit's SIGKILL, still end it).
* **Identical programs run once** per `render`/`map` call and share their result; `Sandbox.jobs` counts the runs.
* **Tree kill**: at timeout the server SIGKILLs the program; when a pid namespace's init dies the kernel kills every
  process in it, `setsid` or not. Without pid namespaces the server is a child subreaper: the program's orphans
  reach it, and it kills them.
* **A slot is empty before its next program**: the kernel kills a pid namespace's processes asynchronously, and a
  timed-out fork bomb's processes, rationed to one slot's CPU share, can take a second or more to exit, while they
  keep the slot's uid (its RLIMIT_NPROC count, its files) and cgroup. So the server answers for a job only once no
  process of it is left: at once for a program that was its namespace's init and ended by itself (the kernel lets an
  init exit only after every other process of its namespace is gone, and nothing leaves a pid namespace), else
  (timeout, no pid namespace) once no process of the slot's uid is left (without the uid drop: once no orphan is),
  SIGKILLing leftovers every few ms and moving them to its own CPU cgroup to let them exit; the parent hands the
  slot its next program only after that answer, and takes the ended job's `work/` from the slot's uid first (it is
  read and deleted later, by the pool). What cannot be killed within `cleanup_s` (uninterruptible sleep, a zombie
  nobody reaps) retires the slot's uid: the slot goes on under a spare uid of the Sandbox's block, or out of service
  when none is left (a render with every slot out of service raises). After a killed, unresponsive server and at
  `close()` the parent kills what is left of the block's uids the same way.
* **Privileges**: as root, each concurrently running program gets its own uid (`uid_base + slot`, gid nogroup; every
  Sandbox draws its own random block of uids, so trainer ranks sharing a node never share one), so
  RLIMIT_NPROC is per program (a fork bomb cannot starve its neighbours) and programs cannot signal or read each
  other, the server or the trainer. The job dir is root-owned; only its `work/` subfolder belongs to the program.
  The server opens the job's files as root before the fork, and the program closes every other descriptor it
  inherited before its code runs.
* **Files**: programs write only in `work/` (fresh per job, deleted after it); in the server's private mount
  namespace /tmp, /var/tmp, /run/lock and /dev/shm are read-only empty tmpfs, and a 0700 directory on the
  interpreter's path (pyenv under /root) is covered by a tmpfs with only the interpreter's entries bound back, so its
  other contents (tokens, caches) stay hidden. Where those folders stay writable (no mount namespace), what the
  slot's uid left at their top is deleted once the slot is empty, before its next program (same uid) could read it.
* **IPC**: SysV shared memory, semaphores and message queues and POSIX message queues outlive their creator; each
  job's own IPC namespace takes them along when its last process exits.
* **CPU**: as root with a writable cgroup cpu controller (v1 or v2), each slot is a cgroup of equal weight, so a
  fork bomb's processes together get one program's share of the CPU, not most of the machine. A Sandbox runs
  `default_workers()` programs at once unless told otherwise: the CPUs this rank may use divided by the ranks on
  the node (`LOCAL_WORLD_SIZE`), so the ranks of a node together use every core once.
* **Output**: the program's own `savefig` calls are intercepted (recorded, not written); afterwards the sandbox saves
  the last figure the program saved, else the current figure (`plt.gcf()` if any figure is open), with dpi clamped so
  that width*height <= `max_pixels`, to `work/_sandbox_output.png`. The parent opens it with
  O_NOFOLLOW|O_NONBLOCK, requires a regular file of bounded size with a PNG signature and checks the PNG's
  dimensions before decoding (in its pool's threads, each as soon as the program's slot is free again, while the
  others run; `Sandbox.map` then runs the caller's post-processing, e.g. scoring, there too).
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
Import from here: ``from core.rewards.sandbox import Sandbox, SandboxLimits, RenderResult, STATUSES, default_workers``.
"""

from core.rewards.sandbox.client import (
    STATUSES,
    RenderResult,
    Sandbox,
    SandboxLimits,
    default_workers,
    render_code_in_process,
)

__all__ = ["STATUSES", "RenderResult", "Sandbox", "SandboxLimits", "default_workers", "render_code_in_process"]
