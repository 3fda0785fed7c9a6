"""Waiting for another process to end (the demo's stop, the tests' daemon checks, the mount's
child processes)."""

from __future__ import annotations

import os
import subprocess
import time


def wait_exit(pid: int, timeout: float) -> bool:
    """True once ``pid`` no longer exists, False if it still runs after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def reap_child(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Wait for a child asked to end (its pipe or socket closed); kill it if it does not."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
