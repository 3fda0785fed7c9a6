"""When Python's cyclic garbage collector may stop the event loop of a long-running node.

CPython starts a full collection whenever the objects promoted to its oldest generation since
the last one reach a quarter of that generation. A mount of 300,000 entities holds about half a
million tracked objects (inode nodes, parsed documents, records). Over two minutes of listing,
``find`` and field writes, 7 full collections ran, 0.82 s in all; each stopped the event loop,
so every request (the one amid the writes: 0.27 s; ``docs/mount.md``). Nearly everything such a
node frees goes by reference counting; the few cycles (tracebacks, trio's internals) die young
and the young collections, which stay automatic, find them.

So while the service runs:
- what the node loaded at start (the replayed journals) is frozen out of every collection
  (``gc.freeze``): it is freed by reference counting when replaced;
- automatic collections stop at the middle generation;
- a full collection runs on a timer (``period`` seconds), so its pause comes that seldom
  instead of every few tens of seconds under load.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import trio

FULL_EVERY_S = 600.0
NEVER = 1 << 30  # a threshold the oldest generation's counter does not reach
_running: list[tuple[int, int, int]] = []  # thresholds before each running collector (a stack)


class Collector:
    name = "gc"

    def __init__(self, period: float = FULL_EVERY_S) -> None:
        self.period = period
        self.full = 0  # full collections run by the timer
        self.last_pause_ms = 0.0
        self.frozen = 0  # objects frozen at start

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        before = gc.get_threshold()
        if not _running:  # the process's first (nodes of a test may share one process)
            gc.collect()  # the start's garbage, before the survivors are frozen
            gc.freeze()
        _running.append(before)
        self.frozen = gc.get_freeze_count()
        gc.set_threshold(before[0], before[1], NEVER)
        task_status.started()
        try:
            while True:
                await trio.sleep(self.period)
                t = time.perf_counter()
                gc.collect()
                self.last_pause_ms = (time.perf_counter() - t) * 1000
                self.full += 1
        finally:
            _running.remove(before)
            if not _running:
                gc.set_threshold(*before)
                gc.unfreeze()  # a later full collection may look at them again

    def status(self) -> dict[str, Any]:
        return {"gc_full_collections": self.full, "gc_last_full_pause_ms":
                round(self.last_pause_ms, 1), "gc_frozen_objects": self.frozen}
