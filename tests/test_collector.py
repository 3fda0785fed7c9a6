"""The garbage-collection policy of a running node (``cocli_fs.collector``)."""

from __future__ import annotations

import gc
import weakref

import trio

from cocli_fs.collector import NEVER, Collector


class Cyclic:
    def __init__(self) -> None:
        self.me = self


def old_cyclic_garbage() -> weakref.ref[Cyclic]:
    """A reference cycle that became garbage after reaching the oldest generation, where only
    a full collection finds it."""
    obj = Cyclic()
    gc.collect(1)  # survives: promoted to the oldest generation
    ref = weakref.ref(obj)
    del obj
    return ref


def test_full_collections_come_from_the_timer_only() -> None:
    before = gc.get_threshold()
    seen: dict[str, object] = {}

    async def main() -> None:
        c = Collector(period=0.3)
        async with trio.open_nursery() as n:
            await n.start(c.run)
            seen["threshold"] = gc.get_threshold()
            seen["frozen"] = gc.get_freeze_count()
            ref = old_cyclic_garbage()
            # Young collections run as usual and do not reach it...
            junk = [[i] for i in range(200_000)]
            del junk
            gc.collect(1)
            seen["after young"] = ref() is not None
            # ...the timer's full collection does.
            with trio.fail_after(5):
                while ref() is not None:
                    await trio.sleep(0.05)
            seen["status"] = c.status()
            n.cancel_scope.cancel()

    trio.run(main)
    assert seen["threshold"] == (before[0], before[1], NEVER)
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 0
    assert seen["after young"] is True
    status = seen["status"]
    assert isinstance(status, dict) and status["gc_full_collections"] >= 1
    # Stopped: the interpreter's own policy again, nothing left frozen.
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_two_collectors_in_one_process_restore_once_both_stop() -> None:
    before = gc.get_threshold()

    async def main() -> None:
        async with trio.open_nursery() as outer:
            a, b = Collector(period=60), Collector(period=60)
            await outer.start(a.run)
            async with trio.open_nursery() as inner:
                await inner.start(b.run)
                inner.cancel_scope.cancel()
            assert gc.get_threshold()[2] == NEVER  # a still runs
            outer.cancel_scope.cancel()

    trio.run(main)
    assert gc.get_threshold() == before
