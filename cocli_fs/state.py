"""One node's live state: its data folder, clock, journal, replicas and overlay.

This is the domain core that the mount, gossip, sync and compaction share. It knows nothing of
FUSE or sockets: local edits come in through ``write_fields``, peers' records through
``receive``, and whoever needs to react (kernel cache invalidation, gossip push) registers a
listener.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import record as rec
from .checkpoint import Checkpoint
from .checkpoint import load as load_checkpoint
from .config import Config
from .dirty import DirtySet
from .document import (
    INDEX,
    TOMBSTONE,
    BaseDoc,
    Change,
    DocumentError,
    decode_tags,
    merge,
    parse_tags,
    shown_base_of,
)
from .helper import read_file
from .hlc import HybridClock
from .journal import JournalWriter, ReplicaWriter, ScanReport, scan_wal_files
from .overlay import Applied, OriginSeqs, Overlay
from .record import Record

log = logging.getLogger(__name__)

PRIVATE_DIR = ".cocli-fs"


@dataclass(frozen=True)
class DataDir:
    """The backing store: cocli's layout plus our private folder."""

    root: Path

    @property
    def wal(self) -> Path:
        return self.root / "wal"

    @property
    def private(self) -> Path:
        return self.root / PRIVATE_DIR

    def entity(self, target: str) -> Path:
        return self.root / target

    @staticmethod
    def check(root: Path, kinds: Iterable[str] = ("companies", "people")) -> DataDir:
        """A data folder is a directory that is empty or holds cocli's layout."""
        if not root.is_dir():
            raise NotADirectoryError(f"{root} is not a directory")
        names = set(os.listdir(root))
        known = {*kinds, "wal", PRIVATE_DIR}
        if names and not names & known:
            raise ValueError(
                f"{root} does not look like a cocli data folder (no {', '.join(sorted(known))})"
            )
        return DataDir(root)


# (changed targets, the records behind the change, True when written on this node)
Listener = Callable[[set[str], list[Record], bool], None]
# (paths relative to the data folder that something other than the mount changed in the store)
FileListener = Callable[[list[str]], None]


class NodeState:
    def __init__(self, data: DataDir, config: Config) -> None:
        self.data = data
        self.config = config
        self.node = config.node
        self.overlay = Overlay()
        self.clock = HybridClock(max_skew_ms=int(config.gossip.max_skew * 1000))
        self.listeners: list[Listener] = []
        self.file_listeners: list[FileListener] = []
        self.scan = ScanReport()
        self.journal: JournalWriter | None = None
        self.replicas: ReplicaWriter | None = None
        self.floor_seq = 0  # own seq already compacted away (set by the compaction checkpoint)
        self.checkpoint = Checkpoint()  # the last compaction checkpoint this node adopted
        self._dirty: DirtySet | None = None

    @property
    def dirty(self) -> DirtySet:
        """The persisted set of files to push to S3: ONE instance per data folder and process,
        shared by the mount (marks) and S3 sync (snapshot/clear) — two instances over the same
        log would not see each other's marks and clears."""
        if self._dirty is None:
            self._dirty = DirtySet(self.data.private)
        return self._dirty

    # -- start-up --------------------------------------------------------------------------------

    def load(self) -> ScanReport:
        """Replay every journal in ``wal/`` (own and replicas) into the overlay, and recover
        our next sequence number and the clock's floor from what is on disk."""
        self.data.private.mkdir(parents=True, exist_ok=True)
        report = ScanReport()
        overlay = self.overlay
        # What compaction folded into the base files (and may have retired from wal/): our own
        # numbering continues above its watermark, and records at or below it (or older than
        # a compacted field version) never become overlay entries again.
        cp = self.checkpoint = load_checkpoint(self.data.wal)
        self.floor_seq = max(self.floor_seq, cp.watermarks.get(self.node, 0))
        for origin, wm in cp.watermarks.items():
            overlay.origins.setdefault(origin, OriginSeqs()).contiguous = wm
        overlay.compacted = cp.fields
        own_seq = self.floor_seq
        max_hlc = cp.max_hlc
        node = self.node
        # Replay allocates a million long-lived objects; the cyclic GC would walk the growing
        # heap again and again meanwhile (a third of the replay time) and find nothing to free.
        with _gc_paused():
            for records in scan_wal_files(self.data.wal, report):
                if not records:
                    continue
                overlay.apply_all(records)
                max_hlc = max(max_hlc, max(r.hlc for r in records))
                own_seq = max(own_seq, max((r.seq for r in records if r.node_id == node),
                                           default=0))
        self.scan = report
        self.clock.update(max_hlc)
        self.journal = JournalWriter(self.data.wal, self.node, next_seq=own_seq + 1)
        self.replicas = ReplicaWriter(self.data.wal)
        return report

    def close(self) -> None:
        if self.journal:
            self.journal.close()
        if self.replicas:
            self.replicas.close()
        if self._dirty is not None:
            self._dirty.close()
            self._dirty = None

    # -- local writes ----------------------------------------------------------------------------

    def stamp(self, target: str, changes: Mapping[str, Change]) -> list[Record]:
        """Turn field changes into records of ours (validated; raises RecordError)."""
        assert self.journal is not None, "load() first"
        first = self.journal.next_seq
        now = self.clock.now
        node = self.node
        campaign = self.config.campaign
        environment = self.config.environment
        out = [
            rec.make(
                hlc=now(),
                node_id=node,
                seq=first + i,
                target=target,
                field=name,
                value=None if value is TOMBSTONE else value,
                tombstone=value is TOMBSTONE,
                campaign_name=campaign,
                environment=environment,
            )
            for i, (name, value) in enumerate(changes.items())
        ]
        # The numbers are taken only once every record is known to be valid (make raised
        # otherwise), so a refused write leaves no gap in our sequence.
        self.journal.next_seq = first + len(out)
        return out

    async def write_fields(self, target: str, changes: Mapping[str, Change]) -> list[Record]:
        """Durably journal field changes, then make them visible. Returns the records."""
        records = self.stamp(target, changes)
        if records:
            assert self.journal is not None
            await self.journal.append(records)
            self._applied_local(records)
        return records

    def write_fields_sync(self, target: str, changes: Mapping[str, Change]) -> list[Record]:
        records = self.stamp(target, changes)
        if records:
            assert self.journal is not None
            self.journal.write_sync(records)
            self._applied_local(records)
        return records

    def _applied_local(self, records: list[Record]) -> None:
        apply = self.overlay.apply
        for r in records:
            apply(r)
        self._notify({r.target for r in records}, records, True)

    # -- records from elsewhere ------------------------------------------------------------------

    def receive(
        self, records: Iterable[Record], peer: str | None = None, sync: bool = False
    ) -> list[Record]:
        """Merge records from a peer, a replica download or S3. Returns those that were new
        (they were also written to the local replica journals)."""
        assert self.replicas is not None, "load() first"
        new: list[Record] = []
        changed: set[str] = set()
        for r in records:
            if (
                r.node_id == self.node
                and self.journal is not None
                and r.seq >= self.journal.next_seq
            ):
                # Our own records coming back from a time before a lost disk: keep numbering
                # after them, never reuse a sequence number.
                self.journal.next_seq = r.seq + 1
            self.clock.update(r.hlc, peer or r.node_id)
            res = self.overlay.apply(r)
            if res is Applied.DUPLICATE:
                continue
            new.append(r)
            if res is Applied.WON:
                changed.add(r.target)
        own = [r for r in new if r.node_id == self.node]
        if own and self.journal is not None:
            self.journal.write_sync(own)  # our own lost records go back into our journal
        self.replicas.write([r for r in new if r.node_id != self.node], sync=sync)
        if changed:
            self._notify(changed, new, False)
        return new

    def _notify(self, targets: set[str], records: list[Record], local: bool) -> None:
        for fn in tuple(self.listeners):  # a copy: a listener may remove itself
            try:
                fn(targets, records, local)
            except Exception:  # a listener's bug must not undo a durable write
                log.exception("listener %r failed", fn)

    def notify_files(self, paths: list[str]) -> None:
        """Tell the mount that files in the store changed behind its back (S3 pull, compaction),
        so it drops cached names, attributes and contents for them. Called from trio tasks,
        never from inside a FUSE request handler's own call chain."""
        for fn in list(self.file_listeners):
            try:
                fn(paths)
            except Exception:
                log.exception("file listener %r failed", fn)

    # -- reading ---------------------------------------------------------------------------------

    def base(self, target: str, tags: bool = True) -> BaseDoc:
        """The entity's base document from the store (raises DocumentError if ``_index.md`` is
        broken). ``tags=False``: without reading tags.lst (``BaseDoc.tags_read`` is then
        False)."""
        base, problems = self._read_base(target, tags)
        for name, why in problems:
            if name == INDEX:
                raise DocumentError(why)
        log_base_problems(target, problems)
        return base

    def base_paths(self, target: str, tags: bool = True) -> list[str]:
        """The files of an entity's base: ``_index.md`` and, with ``tags``, ``tags.lst`` (for
        a caller that reads and parses them elsewhere: ``offload.load_base``)."""
        d = f"{self.data.root}/{target}/"  # str paths: pathlib costs microseconds per join
        return [d + "_index.md", d + "tags.lst"] if tags else [d + "_index.md"]

    def base_tags(self, target: str) -> list[str] | None:
        """tags.lst's tags (None: no tags.lst, or one that is not text), for a base read
        without them."""
        problems: list[tuple[str, str]] = []
        text = decode_tags(read_file(f"{self.data.root}/{target}/tags.lst"), problems)
        log_base_problems(target, problems)
        return parse_tags(text) if text is not None else None

    def shown_base(self, target: str, tags: bool = True) -> BaseDoc:
        """The base document to show (``document.shown_base_of``: a broken one counts as
        empty, so it does not hide the overlay), read in the calling thread; the log says
        what was broken."""
        base, problems = self._read_base(target, tags)
        log_base_problems(target, problems)
        return base

    def _read_base(self, target: str, tags: bool) -> tuple[BaseDoc, list[tuple[str, str]]]:
        return shown_base_of([read_file(p) for p in self.base_paths(target, tags)], tags)

    def merged(self, target: str) -> tuple[BaseDoc, dict[str, Any]]:
        base = self.shown_base(target)
        return base, merge(base, self.overlay.get(target))

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "digest": self.overlay.digest(),
            "sequence": (self.journal.next_seq - 1) if self.journal else 0,
            "overlay_entries": self.overlay.entries,
            "overlay_targets": len(self.overlay.by_target),
            "origins": self.overlay.contiguous(),
            "clock_skew_ms": {p: r.skew_ms for p, r in self.clock.peers.items()},
            "skewed_peers": self.clock.skewed_peers(),
            "corrupt_records": len(self.scan.corrupt),
            "dirty": len(self.dirty),  # files not pushed to S3 yet (the sync service agrees)
            # group commit at work: fsync'ed batches vs appends (equal: no batching)
            "journal_appends": self.journal.appends if self.journal else 0,
            "journal_batches": self.journal.batches if self.journal else 0,
        }


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Suspend automatic cyclic garbage collection (reference counting still frees)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def log_base_problems(target: str, problems: list[tuple[str, str]]) -> None:
    """Log what ``document.shown_base_of`` found broken in an entity's base files."""
    for name, why in problems:
        log.error("%s/%s: %s", target, name, why)
