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

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")


class Completions:
    """Thread calls that ended, whose tasks the event loop has yet to make runnable.

    ``run_sync_soon`` alone reaches the waiting task only after a byte on trio's wake-up
    socket, the busy loop's next yield and trio's entry-queue task. The patched pyfuse3
    receive loop checks ``done`` after every request instead (``fusepatch.set_wakeup_hook``)
    and calls ``drain``; the ``run_sync_soon`` stays for when the loop is idle. Measured:
    more writes/s and less loop CPU per write (``docs/benchmarks.md``, session 8)."""

    def __init__(self) -> None:
        self.done: deque[tuple[trio.lowlevel.Task, outcome.Outcome[Any]]] = deque()

    def drain(self) -> bool:
        """Make the tasks of ended calls runnable (in the trio thread). True if there were."""
        done = self.done
        if not done:
            return False
        reschedule = trio.lowlevel.reschedule
        while True:
            try:
                task, result = done.popleft()
            except IndexError:  # emptied
                return True
            reschedule(task, result)


_COMPLETIONS: trio.lowlevel.RunVar[Completions | None] = trio.lowlevel.RunVar(
    "completions", default=None)


def completions() -> Completions:
    """The ``Completions`` through which ``in_thread`` hands results over in this trio run."""
    c = _COMPLETIONS.get()
    if c is None:
        c = Completions()
        _COMPLETIONS.set(c)
    return c


def refuse_abort(_: object) -> trio.lowlevel.Abort:
    """``wait_task_rescheduled``'s abort function for a wait that cancellation must not end."""
    return trio.lowlevel.Abort.FAILED


async def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread; returns what it returned or raises what it raised."""
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    c = completions()
    done, drain = c.done, c.drain

    def deliver(result: outcome.Outcome[T]) -> None:  # in the worker thread
        done.append((task, result))
        token.run_sync_soon(drain)  # an idle loop checks nothing between requests

    trio.lowlevel.start_thread_soon(fn, deliver)
    result: T = await trio.lowlevel.wait_task_rescheduled(refuse_abort)
    return result
