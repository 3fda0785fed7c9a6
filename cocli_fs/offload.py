"""Blocking calls on the request path, run in a worker thread without the price of
``trio.to_thread.run_sync``.

The event loop serves every FUSE request; a call that may wait for the disk (a cold read, an
``fsync``) stops them all while it waits, and the kernel's share of its CPU is spent on the
loop's thread. A worker thread takes both away from the loop. ``trio.to_thread.run_sync`` does
that with a limiter, a context copy and a cancel scope per call; what is left here is a fifth of
its cost on the loop (measured for a journal batch).

The wait ignores cancellation: callers use it for work that must finish once started (records
that carry sequence numbers) or that is short and harmless to finish (a file read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import outcome
import trio

T = TypeVar("T")


def refuse_abort(_: object) -> trio.lowlevel.Abort:
    """``wait_task_rescheduled``'s abort function for a wait that cancellation must not end."""
    return trio.lowlevel.Abort.FAILED


async def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread; returns what it returned or raises what it raised."""
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(result: outcome.Outcome[T]) -> None:  # in the worker thread
        token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    trio.lowlevel.start_thread_soon(fn, deliver)
    result: T = await trio.lowlevel.wait_task_rescheduled(refuse_abort)
    return result
