"""Waiting for another process to end (the demo's stop, the tests' daemon checks)."""

from __future__ import annotations

import os
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
