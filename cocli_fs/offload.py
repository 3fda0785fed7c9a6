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

import contextlib
import os
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import outcome
import trio

from . import pagecache
from .document import BaseDoc, shown_base_of
from .helper import THREADS, Bell, Declined, Helper, HelperLost, read_file

T = TypeVar("T")


class Completions:
    """Calls that ended, whose tasks the event loop has yet to make runnable.

    ``run_sync_soon`` alone reaches the waiting task only after a byte on trio's wake-up
    socket, the busy loop's next yield and trio's entry-queue task. The patched pyfuse3
    receive loop checks this object's truth after every request instead
    (``fusepatch.set_wakeup_hook``) and calls ``drain``; the ``run_sync_soon`` stays for when
    the loop is idle. Measured: more writes/s and less loop CPU per write
    (``docs/benchmarks.md``, session 8).

    It also holds the run's helper process (``helper``), whose replies the same checks find:
    the truth test reads the helper's reply counter, and a system task wakes an idle loop
    when the helper's socket becomes readable."""

    def __init__(self) -> None:
        self.done: deque[tuple[trio.lowlevel.Task, outcome.Outcome[Any]]] = deque()
        self.helper: Helper | None = None
        # Counts the calls that ended, in shared memory: the receive loop's poll for the next
        # request watches it (``fusepatch.set_spin_watch``, pyfuse3 patch change 8).
        self.bell = Bell()

    def __bool__(self) -> bool:
        """Something to drain (asked after every request: keep it cheap)."""
        if self.done:
            return True
        helper = self.helper
        return helper is not None and helper.ready()

    def drain(self) -> bool:
        """Make the tasks of ended calls runnable (in the trio thread). True if there were."""
        helper = self.helper
        woke = helper is not None and bool(helper.pending) and self._wake(helper)
        done = self.done
        while done:
            try:
                task, res = done.popleft()
            except IndexError:  # emptied
                break
            woke = True
            trio.lowlevel.reschedule(task, res)
        return woke

    @staticmethod
    def _wake(helper: Helper) -> bool:
        """Make the tasks of the helper's replies runnable. True if there were."""
        woke = False
        for task, result in helper.collect():
            woke = True
            assert isinstance(task, trio.lowlevel.Task)
            trio.lowlevel.reschedule(task, outcome.Error(result)
                                     if isinstance(result, BaseException)
                                     else outcome.Value(result))
        return woke

    async def start_helper(self) -> None:
        """Start the helper process for this run (the mount does; other runs use threads),
        and a system task that drains when the helper replies to an idle loop. The helper
        is stopped when the run ends."""
        if self.helper is not None or os.environ.get("COCLI_FS_NO_HELPER") == "1":
            return
        helper = Helper(self.bell)
        if not helper.start():
            return
        self.helper = helper
        trio.lowlevel.spawn_system_task(self._serve_helper, helper, name="offload.helper")

    async def _serve_helper(self, helper: Helper) -> None:
        try:
            while True:
                if helper.alive:
                    await trio.lowlevel.wait_readable(helper.fileno())
                    self._wake(helper)  # also with nothing pending: it may have ended
                    continue
                # Lost (collect saw it end; its callers redo their calls in threads).
                helper.stop()
                await trio.sleep(helper.restart_wait())
                helper.restart()  # on failure, tried again a minute later
        finally:
            self.helper = None
            helper.stop()


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
    done, drain, ring = c.done, c.drain, c.bell.ring

    def deliver(result: outcome.Outcome[T]) -> None:  # in the worker thread
        done.append((task, result))
        ring(THREADS)  # ends the receive loop's poll, which checks nothing else meanwhile
        token.run_sync_soon(drain)  # an idle loop checks nothing between requests

    trio.lowlevel.start_thread_soon(fn, deliver)
    result: T = await trio.lowlevel.wait_task_rescheduled(refuse_abort)
    return result


def helper_running() -> bool:
    """This run has a helper process (``fdatasync`` and ``load_base`` need no thread)."""
    helper = completions().helper
    return helper is not None and helper.alive


async def _via_helper(submit: Callable[[Helper, object], None]) -> Any:
    """``submit(helper, key)`` one call to the run's helper and wait for its reply;
    HelperLost when there is no helper or it could not take the call."""
    helper = completions().helper
    if helper is None or not helper.alive:
        raise HelperLost()
    try:
        submit(helper, trio.lowlevel.current_task())
    except OSError:
        raise HelperLost() from None  # its queue is full, or it is gone
    return await trio.lowlevel.wait_task_rescheduled(refuse_abort)


async def fdatasync(fd: int) -> None:
    """``os.fdatasync(fd)`` without stopping the event loop: in the helper process when the
    run has one (``helper``), else in a worker thread. Not cancellable, as ``in_thread``."""
    with contextlib.suppress(HelperLost):
        await _via_helper(lambda helper, key: helper.submit_sync(fd, key))
        return
    await in_thread(partial(os.fdatasync, fd))


async def load_base(paths: list[str], tags: bool) -> tuple[BaseDoc, list[tuple[str, str]]]:
    """``document.shown_base_of`` for an entity's base files (``NodeState.base_paths``),
    without stopping the event loop for the disk: read and parsed here when the kernel's
    caches hold them (``pagecache``), else read and parsed in the helper process, else read
    in a worker thread and parsed here. Raises OSError."""
    with contextlib.suppress(pagecache.NotCached):
        return shown_base_of(pagecache.read_files(paths), tags)
    try:
        res: tuple[BaseDoc, list[tuple[str, str]]] = await _via_helper(
            lambda helper, key: helper.submit_base(paths, tags, key))
        return res
    except (HelperLost, Declined):
        pass
    return shown_base_of(await in_thread(partial(_read_files, paths)), tags)


def _read_files(paths: list[str]) -> list[bytes | None]:
    return [read_file(p) for p in paths]
