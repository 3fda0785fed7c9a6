"""Which kernel calls a change makes (no mount): only nodes the kernel may hold, only what the
change made stale."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from cocli_fs import record as rec
from cocli_fs.inodes import InodeTable, Node
from cocli_fs.invalidation import Calls, Invalidator
from cocli_fs.routing import Router
from cocli_fs.views import Views


class _Views:
    """What the invalidator asks of the views: drop a target (recorded); whether a store file
    is there (not known: the invalidator looks on disk)."""

    def __init__(self) -> None:
        self.dropped: list[tuple[str, bool]] = []

    def drop(self, target: str, base: bool = True) -> None:
        self.dropped.append((target, base))

    def in_store(self, target: str, name: str) -> bool | None:
        return None


def _setup(tmp_path: Path) -> tuple[Invalidator, InodeTable, _Views, dict[str, Node]]:
    (tmp_path / "companies" / "acme").mkdir(parents=True)
    (tmp_path / "companies" / "acme" / "_index.md").write_text("---\nname: Acme\n---\n")
    router = Router(["companies"])
    table = InodeTable(router)
    views = _Views()
    inv = Invalidator(table, cast(Views, views), router, str(tmp_path))
    kind = table.child(table.root, "companies")
    ent = table.child(kind, "acme")
    nodes = {
        "ent": ent,
        "index": table.child(ent, "_index.md"),
        "fields": table.child(ent, "_fields", virtual=True),
    }
    nodes["email"] = table.child(nodes["fields"], "email", virtual=True)
    nodes["phone"] = table.child(nodes["fields"], "phone", virtual=True)
    return inv, table, views, nodes


def _record(field: str, value: Any = "x", tombstone: bool = False, target: str = "companies/acme"
            ) -> rec.Record:
    return rec.make(hlc=1 << 20, node_id="a", seq=1, target=target, field=field,
                    value=None if tombstone else value, tombstone=tombstone)


def _calls(inv: Invalidator) -> Calls:
    inv._collect()
    calls, inv._calls = inv._calls, []
    return calls


def test_a_field_change_drops_that_field_and_the_rendered_index(tmp_path: Path) -> None:
    inv, _, views, n = _setup(tmp_path)
    inv.on_records({"companies/acme"}, [_record("email")], True)
    assert views.dropped == [("companies/acme", False)]  # the parsed base is kept
    assert sorted(_calls(inv)) == sorted([(n["index"].ino, None), (n["email"].ino, None)])


def test_a_deleted_field_also_drops_its_name(tmp_path: Path) -> None:
    inv, _, _, n = _setup(tmp_path)
    inv.on_records({"companies/acme"}, [_record("phone", tombstone=True)], False)
    assert (n["fields"].ino, "phone") in _calls(inv)


def test_a_listed_fields_folder_is_dropped_when_any_field_changes(tmp_path: Path) -> None:
    inv, _, _, n = _setup(tmp_path)
    n["fields"].listed = True
    inv.on_records({"companies/acme"}, [_record("website")], False)  # a new name
    calls = _calls(inv)
    assert (n["fields"].ino, None) in calls
    assert not n["fields"].listed  # until the kernel lists it again


def test_an_entity_the_kernel_does_not_hold_costs_no_call(tmp_path: Path) -> None:
    inv, _, _, _ = _setup(tmp_path)
    inv.on_records({"companies/other"}, [_record("email", target="companies/other")], False)
    assert _calls(inv) == []


def test_a_pulled_store_file_drops_itself_its_name_and_its_folder(tmp_path: Path) -> None:
    inv, table, views, n = _setup(tmp_path)
    notes = table.child(n["ent"], "notes")
    inv.on_files(["companies/acme/notes"])
    calls = _calls(inv)
    assert views.dropped == [("companies/acme", True)]  # store files: parse again
    for call in [(notes.ino, None), (n["ent"].ino, "notes"), (n["ent"].ino, None)]:
        assert call in calls


def test_a_record_in_a_new_journal_drops_a_kept_listing_of_wal(tmp_path: Path) -> None:
    inv, table, _, _ = _setup(tmp_path)
    inv.on_records({"companies/acme"}, [_record("email")], True)
    _calls(inv)  # wal/ not known to the kernel: nothing about it
    wal = table.child(table.root, "wal")
    wal.listed = True
    inv.on_records({"companies/acme"}, [_record("email")], True)
    assert (wal.ino, None) in _calls(inv)
    inv.on_records({"companies/acme"}, [_record("phone")], True)  # the same journal file
    assert (wal.ino, None) not in _calls(inv)


def test_local_records_are_sent_by_the_writers_wait_and_others_by_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio
    import trio.testing

    from cocli_fs import invalidation

    sent: list[Calls] = []
    monkeypatch.setattr(invalidation, "kernel_invalidate", lambda calls: sent.append(calls))
    inv, _, _, n = _setup(tmp_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inv.run)
            await trio.testing.wait_all_tasks_blocked()
            # A local write: nothing happens until its writer waits (no task switch for it)...
            inv.on_records({"companies/acme"}, [_record("email")], True)
            await trio.testing.wait_all_tasks_blocked()
            assert sent == []
            with trio.fail_after(5):
                await inv.wait()  # ...which has the task send what the write made stale
            assert sorted(sent.pop()) == sorted([(n["index"].ino, None), (n["email"].ino, None)])
            # A peer's record: no writer waits for it, the task sends it by itself.
            inv.on_records({"companies/acme"}, [_record("phone")], False)
            with trio.fail_after(5):
                while not sent:
                    await trio.sleep(0.01)
            assert sorted(sent.pop()) == sorted([(n["index"].ino, None), (n["phone"].ino, None)])
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_writer_whose_change_needs_no_call_does_not_queue_behind_another_entitys_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the task sends one entity's calls (here held in the kernel), a write to an entity
    the kernel holds nothing of returns at once; a second write to the entity whose calls are
    in flight waits for them."""
    import threading

    import trio
    import trio.testing

    from cocli_fs import invalidation

    held = threading.Event()
    release = threading.Event()
    sent: list[Calls] = []

    def slow_kernel(calls: Calls) -> None:
        held.set()
        release.wait(10)
        sent.append(calls)

    monkeypatch.setattr(invalidation, "kernel_invalidate", slow_kernel)
    inv, table, _, n = _setup(tmp_path)
    table.child(table.known(("companies",)) or table.root, "beta")  # known, nothing cached
    acme, beta = "companies/acme", "companies/beta"

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inv.run)
            await trio.testing.wait_all_tasks_blocked()
            first_done = trio.Event()

            async def first_writer() -> None:
                inv.on_records({acme}, [_record("email")], True)
                await inv.wait(acme)
                first_done.set()

            nursery.start_soon(first_writer)
            with trio.fail_after(5):
                while not held.is_set():
                    await trio.sleep(0.005)  # the acme round is in the kernel now
            inv.on_records({beta}, [_record("email", target=beta)], True)
            with trio.fail_after(1):
                await inv.wait(beta)  # nothing of beta is cached: no wait for acme's round
            assert not first_done.is_set() and sent == []
            inv.on_records({acme}, [_record("phone")], True)
            with trio.move_on_after(0.3) as waited:
                await inv.wait(acme)  # acme's calls are in flight: this one waits
            assert waited.cancelled_caught
            release.set()
            with trio.fail_after(5):
                await first_done.wait()
                await inv.wait(acme)  # the next round sends the phone change's calls
            assert (n["phone"].ino, None) in [c for calls in sent for c in calls]
            nursery.cancel_scope.cancel()

    trio.run(main)
