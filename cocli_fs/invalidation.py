"""Kernel cache invalidation for the mount: what changed behind the kernel's back, turned
into ``invalidate_inode``/``invalidate_entry`` calls.

The kernel caches names, attributes, file pages and folder listings (entry/attr timeouts,
``keep_cache``, listings without OPENDIR). Local writes through the mount change what it cached
only via journal records (an ``_index.md`` rendered from the overlay); peers' records, S3
pulls and compaction change it without the kernel knowing at all. ``NodeState`` listeners
report both here (``on_records``, ``on_files``); they may fire inside our own request handlers,
where libfuse must not be called back, so the calls are collected and made by a task of their
own (``run``), in a worker thread. ``wait`` lets a writer's ``close()`` return only once the
kernel has dropped what its write made stale, so a ``cat`` right after it sees the change.
"""

from __future__ import annotations

import contextlib
import os
from functools import partial
from typing import Any

import pyfuse3
import trio

from . import document as doc
from . import offload
from . import record as rec
from .inodes import InodeTable, Node
from .journal import journal_name
from .routing import Router, target_of
from .views import Views

Calls = list[tuple[int, str | None]]
"""(inode, None): drop its attributes and pages; (parent inode, name): drop the name."""


class Invalidator:
    def __init__(self, table: InodeTable, views: Views, router: Router, data: str) -> None:
        self.table = table
        self.views = views
        self.router = router
        self._data = data
        # target -> the fields whose records changed it (None: anything, e.g. its store files)
        self._targets: dict[str, set[str] | None] = {}
        self._paths: set[tuple[str, ...]] = set()
        self._gone: set[tuple[str, str]] = set()  # (target, field) deleted: drop the name
        # (target, field) whose _fields/ file the kernel holds right already (spare_written)
        self._spared: set[tuple[str, str]] = set()
        self._asked = 0
        self._done = 0
        self._calls: Calls = []  # collected, not yet sent
        self._busy = False  # the task is in its worker thread
        self._journals: set[str] = set()  # journal file names seen since wal/ was listed
        self._send, self._recv = trio.open_memory_channel[None](1)
        self._cond = trio.Condition()
        self._waiting = 0  # writers in wait() for the task (it notifies only when there are)
        # Entities with calls in ``_calls`` (collected, not sent), and those whose calls the
        # task is sending: a writer of one of those waits for the task.
        self._queued: set[str] = set()
        self._in_flight: set[str] = set()

    def on_records(self, targets: set[str], records: list[Any], local: bool) -> None:
        """``NodeState`` listener: records changed these entities' overlay. Local records (the
        mount's own writes) do not wake the task: their writer calls ``wait`` right after,
        which makes the kernel calls they need or wakes the task for them (a task switch per
        field write otherwise, nearly always for nothing)."""
        pending = self._targets
        for t in targets:
            self.views.drop(t, base=False)  # records change the overlay only
            if t not in pending:
                pending[t] = set()
        for r in records:
            if r.target in targets:
                self._spared.discard((r.target, r.field))  # a newer record: no longer right
                fields = pending[r.target]
                if fields is not None:
                    fields.add(r.field)
                if r.tombstone:
                    self._gone.add((r.target, r.field))
        self._new_journals(records)
        self._asked += 1
        if not local:
            self._wake_task()

    def _new_journals(self, records: list[Any]) -> None:
        """A record in a journal file ``wal/`` did not have (a new day, a new peer's replica):
        the journal writers do not go through the kernel, so a listing of ``wal/`` the kernel
        keeps is dropped. Only while it may keep one: nothing per record otherwise."""
        wal = self.table.known(("wal",))
        if wal is None or not wal.listed:
            self._journals.clear()
            return
        for r in records:
            name = journal_name(rec.hlc_day(r.hlc), r.node_id)
            if name not in self._journals:
                if len(self._journals) > 4096:
                    self._journals.clear()
                self._journals.add(name)
                self._paths.add(("wal", name))

    def on_files(self, paths: list[str]) -> None:
        """``NodeState`` listener: these store files changed (pulled, compacted)."""
        for p in paths:
            parts = tuple(x for x in p.split("/") if x)
            if len(parts) >= 2 and parts[0] in self.router.kinds:
                t = target_of(parts)
                self.views.drop(t)
                self._targets[t] = None
            self._paths.add(parts)
        self._asked += 1
        self._wake_task()

    def _wake_task(self) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait(None)  # bounded and coalescing: one wake-up is enough

    def _collect(self) -> None:
        """Turn what changed into kernel calls (cheap, no rendering; run on the loop)."""
        targets, self._targets = self._targets, {}
        paths, self._paths = self._paths, set()
        gone, self._gone = self._gone, set()
        spared, self._spared = self._spared, set()
        calls = self._calls  # (inode, None) or (parent inode, name)
        for t, fields in targets.items():
            n = len(calls)
            self._target(t, fields, calls, gone, spared)
            if len(calls) > n:
                self._queued.add(t)
        for p in paths:
            self._path(p, calls)

    async def run(self) -> None:
        """The task that makes the kernel calls (started in the mount's nursery)."""
        async for _ in self._recv:
            asked = self._asked
            self._collect()
            calls, self._calls = list(dict.fromkeys(self._calls)), []  # each call once
            self._in_flight, self._queued = self._queued, set()
            if calls:
                # In a thread: the kernel may wait for a page lock held by a writer that
                # waits for our reply to its WRITE, so the event loop must keep serving.
                self._busy = True
                try:
                    await offload.in_thread(partial(kernel_invalidate, calls))
                finally:
                    self._busy = False
            self._in_flight = set()
            self._done = max(self._done, asked)
            if self._waiting:
                async with self._cond:
                    self._cond.notify_all()

    async def wait(self, target: str | None = None) -> None:
        """Let the invalidation task catch up, so a ``cat`` right after our ``close()`` sees
        the change (bounded: a stuck kernel call must not hang the writer). When what changed
        needs no kernel call (the usual field write: the kernel holds nothing stale), this
        returns at once instead of waiting for the task.

        ``target``: the entity the caller changed, with no checkpoint since its records were
        applied (so its change is not collected yet). When other entities' calls are queued
        or being sent (a few writes of a busy mount change files the kernel caches), the
        caller need not wait for them if its own change needs no call. Without this the other
        writers queued behind each round: 300,000 entities, 16 writers, 5 % of the writes
        needing a call, the field writes waited 2 ms each on average."""
        want = self._asked
        if self._done >= want:
            return
        # Nothing of the caller's entity waits in ``_calls`` or is being sent: its change is
        # still pending here. If taking it (and whatever else is pending) adds no call, the
        # kernel holds nothing it made stale: other entities' calls, queued or in flight, are
        # no reason to wait.
        alone = (target is not None and target not in self._queued
                 and target not in self._in_flight)
        if alone or not self._busy:
            queued = len(self._calls)
            self._collect()
            if not self._busy and not self._calls:
                self._done = want  # everything asked so far needed no kernel call
                return
            if alone and len(self._calls) == queued:
                return
        self._wake_task()  # for local records nothing has woken it yet
        self._waiting += 1
        try:
            with trio.move_on_after(1.0):
                async with self._cond:
                    while self._done < want:
                        await self._cond.wait()
        finally:
            self._waiting -= 1

    def _target(
        self, target: str, fields: set[str] | None, calls: Calls,
        gone: set[tuple[str, str]], spared: set[tuple[str, str]],
    ) -> None:
        """Kernel calls for a changed entity; decided from the records, without rendering
        (a render here would cost a merge for every local write). ``fields``: the fields
        the records changed (None: anything may have changed). Only nodes the kernel knows
        and whose content changed are invalidated; ``_fields/``'s own attributes never
        depend on the overlay."""
        ent = self.table.known(tuple(target.split("/")))
        if ent is None:
            return
        if ent.listed and any(
            # the kernel may cache the entity's listing: a view-only file may (dis)appear
            (name == doc.INDEX or fields is None or doc.TAGS in fields)
            and not self._in_store(target, name)
            for name in (doc.INDEX, doc.TAGS_FILE)
        ):
            ent.listed = False
            calls.append((ent.ino, None))
        for name, child in list((ent.children or {}).items()):
            if name == doc.INDEX or (
                name == doc.TAGS_FILE and (fields is None or doc.TAGS in fields)
            ):
                calls.append((child.ino, None))
                if not self._in_store(target, name):
                    calls.append((ent.ino, name))  # a view-only file may have (dis)appeared
            elif name == "_fields":
                if fields is None or child.listed:
                    child.listed = False  # its listing may have gained or lost a name
                    calls.append((child.ino, None))
                for fname, f in list((child.children or {}).items()):
                    if (fields is None or fname in fields) and (target, fname) not in spared:
                        calls.append((f.ino, None))
                    if (target, fname) in gone:
                        calls.append((child.ino, fname))

    def _in_store(self, target: str, name: str) -> bool:
        """Is there a store file (not only a view-only one)? The parsed base knows, without a
        syscall per field write; the disk says otherwise."""
        known = self.views.in_store(target, name)
        return known if known is not None else os.path.exists(f"{self._data}/{target}/{name}")

    def _path(self, parts: tuple[str, ...], calls: Calls) -> None:
        """A store file changed: drop it, its name and its folder's listing. When the kernel
        does not know the folder (a pull brought a new entity, ``companies/new/_index.md``, or
        a new ``notes/``), the deepest folder it does know may keep a listing without the new
        one: that listing is dropped (folders are cached for ``dir_timeout``)."""
        node = self.table.known(parts)
        if node is not None:
            calls.append((node.ino, None))
        if not parts:
            return
        parent = self.table.known(parts[:-1])
        if parent is not None:
            calls.append((parent.ino, parts[-1]))
            calls.append((parent.ino, None))
            return
        for depth in range(len(parts) - 2, -1, -1):
            folder = self.table.known(parts[:depth])
            if folder is not None:
                if folder.listed:
                    folder.listed = False
                    calls.append((folder.ino, None))
                return

    def spare_written(self, node: Node, data: bytes) -> None:
        """The field file just written through this inode: if its committed value renders to
        the very bytes written, the kernel's view of it is already right (it dropped its
        cached size after the WRITE, and an open for reading drops the pages: generations),
        so no invalidation round trip for it. The field still counts as changed for the
        entity's other files (``_index.md``; ``tags.lst``, which may appear or go)."""
        target = target_of(node.parts)
        fields = self._targets.get(target)
        if not fields or node.parts[3] not in fields:
            return
        present, value = self.views.field_value(target, node.parts[3])
        if present and doc.field_text(node.parts[3], value).encode("utf-8") == data:
            self._spared.add((target, node.parts[3]))


def kernel_invalidate(calls: Calls) -> None:
    """Drop the kernel's cached attributes, data and names (run in a worker thread)."""
    for ino, name in calls:
        with contextlib.suppress(OSError):
            if name is None:
                pyfuse3.invalidate_inode(ino)
            else:
                pyfuse3.invalidate_entry(ino, name.encode("utf-8", "surrogateescape"))
