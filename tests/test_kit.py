"""The servers a test starts end with the test process, even when it is killed with no tear-down.

A CI time-out or an OOM kill runs no fixture's finaliser; before `kit.dies_with_parent` the
`bwv server`, haproxy and radosgw processes of a killed run lived on, holding loopback ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from kit import wait_for

TESTS = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; it waits only for its (new) parent to reap it


def _runner(tmp_path: Path, *, from_thread: bool) -> tuple[subprocess.Popen, int]:
    """A stand-in test process that starts a long-lived child as the kits start servers; the child's pid,
    once the runner has seen it still running."""
    script = tmp_path / "runner.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys, threading, time
        sys.path.insert(0, {str(TESTS)!r})
        from kit import dies_with_parent

        started = []

        def start():
            started.append(subprocess.Popen(["sleep", "300"], preexec_fn=dies_with_parent()))
        if {from_thread!r}:
            worker = threading.Thread(target=start)
            worker.start()
            worker.join()
            time.sleep(1)  # time for a signal sent as the worker ended to arrive, were one sent
        else:
            start()
        print(started[0].pid, started[0].poll(), flush=True)
        time.sleep(300)
    """))
    runner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pid, status = runner.stdout.readline().split()
    assert status == "None", f"the child ended with status {status} while its test process ran"
    return runner, int(pid)


def test_a_child_started_by_the_main_thread_is_killed_when_the_test_process_is_killed(tmp_path):
    runner, child = _runner(tmp_path, from_thread=False)
    assert _alive(child)
    runner.send_signal(signal.SIGKILL)
    runner.wait(10)
    assert wait_for(lambda: not _alive(child), timeout=10)


def test_a_child_started_by_a_worker_thread_outlives_that_thread(tmp_path):
    # The kernel's parent-death signal follows the forking *thread*: armed from a worker thread that
    # ends, it would kill a server in the middle of its test; dies_with_parent does not arm it there.
    runner, child = _runner(tmp_path, from_thread=True)
    try:
        assert _alive(child)
    finally:
        runner.kill()
        runner.wait(10)
        os.kill(child, signal.SIGKILL)
