"""Small helpers shared by test folders (on the path through pytest's `pythonpath = tests`)."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, step: float = 0.02) -> bool:
    """Poll until `predicate()` holds; a generous timeout, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def dies_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for a server a test starts: the kernel SIGKILLs it when the test process ends.

    A test process that is killed (a CI time-out, Ctrl-C twice, an OOM kill) runs no fixture's
    tear-down, and the servers it started lived on, holding loopback ports, memory and temporary
    folders until someone found them.  Linux's PR_SET_PDEATHSIG sends its signal when the *thread*
    that forked the child ends, not the process, so it is only set for a child started from the main
    thread, which lives as long as the process; a server started from a worker thread that finishes
    early would otherwise be killed in the middle of its test (it is then started as before: None).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)
    return preexec


def systemd_verify_complaints(unit: Path, workdir: Path) -> list[str]:
    """What `systemd-analyze verify` says of a unit, less the one thing expected off a Pi or
    a server: the installed bwv executable is not on this machine."""
    copy = workdir / unit.name
    shutil.copy(unit, copy)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines()
            if line.strip() and "is not executable" not in line]


def server_kit():
    """tests/server/server_kit.py (a real server process, tus, sealed segments), for other folders:
    tests/ is no package, so it is imported by path, once, under one name."""
    import importlib.util
    import sys

    name = "openbwv_tests_server_kit"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "server" / "server_kit.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
