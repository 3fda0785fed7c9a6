"""The thread hop of the request path (``cocli_fs/offload.py``), with and without the queue
the patched receive loop drains between requests."""

from __future__ import annotations

import threading
import time

import pytest
import trio
import trio.testing

from cocli_fs import offload


def _fail() -> None:
    raise OSError(5, "disk on fire")


def test_results_and_errors_come_back_from_the_thread() -> None:
    async def main() -> None:
        main_thread = threading.get_ident()
        assert await offload.in_thread(threading.get_ident) != main_thread
        with pytest.raises(OSError, match="disk on fire"):
            await offload.in_thread(_fail)
        # many at once: each task gets its own result, once
        results: dict[int, int] = {}

        async def one(i: int) -> None:
            results[i] = await offload.in_thread(lambda: i * i)

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
        assert results == {i: i * i for i in range(50)}

    trio.run(main)


def test_a_drain_between_requests_wakes_the_task_before_trios_own_wakeup() -> None:
    """What the receive loop does after a request: ``drain`` makes the task runnable as soon
    as its call has ended; the ``run_sync_soon`` that follows finds nothing left to do."""

    async def main() -> None:
        completions = offload.completions()
        assert completions.drain() is False
        ended = threading.Event()
        release = threading.Event()

        def call() -> str:
            release.wait(5)
            return "done"

        got: list[str] = []

        async def waiter() -> None:
            got.append(await offload.in_thread(call))
            ended.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            release.set()
            deadline = time.monotonic() + 5
            while not completions.done:  # blocking, as a busy loop does: trio runs nothing
                assert time.monotonic() < deadline
                time.sleep(0.001)
            assert not got
            assert completions.drain() is True
            await trio.testing.wait_all_tasks_blocked()
            assert got == ["done"] and ended.is_set()
            assert completions.drain() is False

    trio.run(main)
