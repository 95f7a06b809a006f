"""Small helpers shared by test folders (on the path through pytest's `pythonpath = tests`)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, step: float = 0.02) -> bool:
    """Poll until `predicate()` holds; a generous timeout, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    raise AssertionError("condition not reached in time")


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
