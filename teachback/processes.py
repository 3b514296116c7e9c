"""Child processes that end with their parent, whether a process recorded earlier still runs, a free port.

    subprocess.Popen(command, preexec_fn=die_with_parent())   # Linux: SIGTERM to it when we die
    me = this_process()                                        # {"pid": 4242, "host": "box", "started": 981}
    running(me)                                                # True while that very process runs
    port = free_port()                                         # for a server we are about to start

A managed server (llama.cpp, the batch's memory server) or a batch's run must not outlive its parent: an
atexit hook covers a normal exit and Ctrl-C, `die_with_parent` the rest (SIGKILL, a crash, the OOM killer).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that asks Linux to send `sig` to the child when its parent dies; None elsewhere.

    Linux sends it when the *thread* that started the child ends, so start children from a thread that
    lives as long as they should (the main thread). The child checks its parent once armed: a parent that
    died between the fork and the `prctl` sends nothing, so the child signals itself.
    """
    if sys.platform != "linux":
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: nothing is imported between fork and exec
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return arm


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` nobody listens on right now (the OS picks it), for a server we are about to start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def started_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (/proc/PID/stat); None off Linux, if it is
    gone, or if it is a zombie (ended, not yet reaped by its parent).

    With the pid it names one process: a pid reused after the process ended has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (command) ": the command may hold spaces
    try:
        return None if fields[0] == "Z" else int(fields[19])  # fields 3 and 22 of proc(5)
    except (IndexError, ValueError):
        return None


def this_process() -> dict[str, Any]:
    """This process, as `running` recognises it later: pid, host name and start time."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": started_ticks(os.getpid())}


def running(process: Any) -> bool:
    """Whether the process `this_process()` described still runs. A process of another host counts as
    running (nothing here can tell); one without a pid, or whose pid is gone or reused, does not."""
    if not isinstance(process, dict) or not isinstance(process.get("pid"), int):
        return False
    if process.get("host") not in (None, socket.gethostname()):
        return True
    pid = process["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process holds the pid: alive, and not ours, which the start time tells
    if sys.platform != "linux":
        return True
    started = process.get("started")
    now = started_ticks(pid)
    return now is not None and (started is None or now == started)


def marked_processes(mark: str) -> list[int]:
    """The pids (this one excepted) whose environment holds `mark`: what a process started with that
    mark in its environment, and what those started in turn (Linux /proc; empty elsewhere)."""
    from pathlib import Path

    pids = []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if mark.encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
