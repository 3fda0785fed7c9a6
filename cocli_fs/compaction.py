"""Hub compaction: fold journal records into the base ``_index.md`` / ``tags.lst`` files.

The steps, each a plain function so tests can drive them one by one:

1. ``read_wal``  — read every journal in ``wal/`` and keep the records above the checkpoint:
   per origin the ones with ``seq`` above its watermark; for records written by cocli itself
   (no ``seq``) the ones whose position in their node-day file is above the file's compacted
   position. Unreadable records are reported and skipped.
2. ``plan``      — per origin, the prefix that is contiguous above the watermark; a record whose
   entity has no base document yet (the new entity's files may still be on their way through
   S3) holds its origin back, until it is older than ``create_after`` (then we create it).
3. ``resolve``   — last-write-wins per ``(target, field)``; a winner is kept only if it is newer
   than the version the checkpoint already holds (a late, older record loses).
4. ``render_and_write`` — rewrite each touched entity's files through ``document.merge`` /
   ``render_index`` / ``render_tags``: temp files in the entity's folder, one ``syncfs`` for a
   batch of them, renames, and one more ``syncfs`` before the checkpoint. (A ``syncfs`` per batch
   gives the guarantee of "fsync each file and folder" at a fraction of the cost: 2 flushes per
   5,000 entities instead of 10,000.) Files are marked dirty (for S3 push) before their rename.
5. the checkpoint (``checkpoint.save``, atomic) — only after every base file is durable.
6. ``adopt_checkpoint`` — drop overlay entries at or below the compacted versions, after the
   base files are in place, and tell the mount; ``retirable_journals`` / ``retire_*`` — delete
   journals whose every record is compacted, only after all of the above (and after S3 push).

Crash safety: until step 5 nothing a re-run depends on has changed (journals and checkpoint are
as before), and step 4 is idempotent (it sets fields to the same winners), so a re-run after a
kill at any point ends in the state of an uninterrupted run. A reader never sees a value go back:
the mount shows base + overlay, and the overlay entries stay until the base holds their values.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from . import checkpoint as ckpt
from . import config as config_mod
from . import control
from .checkpoint import Checkpoint, Version, content_hash
from .document import (
    INDEX,
    TAGS,
    TAGS_FILE,
    DocumentError,
    load_base,
    merge,
    render_index,
    render_tags,
    same_value,
)
from .journal import journal_files, parse_journal, parse_journal_name
from .record import HLC_LOGICAL_BITS, KIND_TOMBSTONE, RS_B, Record, decode_value
from .routing import SLUG_RE
from .state import DataDir, NodeState

log = logging.getLogger(__name__)

CRASH_ENV = "COCLI_FS_COMPACT_CRASH_AFTER"  # tests: os._exit after the k-th file operation
CREATE_AFTER_S = 3600.0  # a record for an entity with no base waits this long for it
BATCH = 5000  # entities per temp-write / syncfs / rename round
IO_THREADS = 8
PARALLEL_MIN = 3000  # entities: below this, rendering in-process beats starting workers
RENDER_CHUNK = 500
LOCK_NAME = "compact.lock"
DEFAULT_KINDS = ("companies", "people")
TMP_SUFFIX = ".compact-tmp"

Progress = Callable[[str], None]


# --- test hook: die after the k-th file operation -----------------------------------------------

_ops = 0
_crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)
_ops_lock = threading.Lock()  # temp writes and renames run in threads


def _step() -> None:
    """Count one file operation; in crash tests, die right after the k-th one."""
    global _ops
    with _ops_lock:
        _ops += 1
        if _crash_after and _ops >= _crash_after:
            os._exit(77)


# --- durability helpers -------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: Path) -> None:
    """Flush every dirty page and metadata change of the file system holding ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _read(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


# --- 1. reading the journals --------------------------------------------------------------------


@dataclass
class Skipped:
    file: str
    offset: int
    reason: str


@dataclass
class WalScan:
    """Records above the checkpoint, as found in ``wal/``."""

    by_origin: dict[str, dict[int, Record]] = field(default_factory=dict)  # seq > watermark
    cocli: dict[str, list[Record]] = field(default_factory=dict)  # file -> records above position
    slots: dict[str, int] = field(default_factory=dict)  # file -> complete record slots
    read: int = 0
    files: int = 0
    skipped: list[Skipped] = field(default_factory=list)


def read_wal(wal_dir: Path, cp: Checkpoint, progress: Progress | None = None) -> WalScan:
    scan = WalScan()
    for path in journal_files(wal_dir):
        data = _read(path)
        if data is None:
            continue  # retired meanwhile
        res = parse_journal(data)
        scan.files += 1
        scan.read += len(res.records)
        for off, why in res.corrupt:
            scan.skipped.append(Skipped(path.name, off, why))
        if res.torn_tail:
            scan.skipped.append(
                Skipped(path.name, res.valid_end, f"torn last record ({res.torn_tail} bytes)")
            )
        done_pos = cp.positions.get(path.name, 0)
        for r in res.records:
            if r.seq:
                if r.seq > cp.watermarks.get(r.node_id, 0):
                    scan.by_origin.setdefault(r.node_id, {}).setdefault(r.seq, r)
            elif r.pos > done_pos:
                scan.cocli.setdefault(path.name, []).append(r)
        if path.name in scan.cocli or path.name in cp.positions:
            scan.slots[path.name] = data.count(RS_B, 0, res.valid_end)
        if progress and scan.files % 50 == 0:
            progress(f"read {scan.read:,} records from {scan.files} journals")
    for s in scan.skipped:
        log.error("%s: skipping unreadable record at byte %d: %s", s.file, s.offset, s.reason)
    return scan


# --- 2. what may be compacted -------------------------------------------------------------------


@dataclass
class Plan:
    records: list[Record] = field(default_factory=list)
    watermarks: dict[str, int] = field(default_factory=dict)  # new watermarks
    positions: dict[str, int] = field(default_factory=dict)  # new cocli file positions
    held: dict[str, str] = field(default_factory=dict)  # origin / file -> why it stops early
    pending: int = 0  # records read but not compacted this time


def _hlc_ms(hlc: int) -> int:
    return hlc >> HLC_LOGICAL_BITS


def plan(
    scan: WalScan,
    cp: Checkpoint,
    has_base: Callable[[str], bool],
    create_after: float = CREATE_AFTER_S,
    now_ms: int | None = None,
    blocked: Mapping[str, str] | None = None,
    ignore: Container[str] = frozenset(),
) -> Plan:
    """Contiguous prefixes above the watermarks, cut before records that must wait for their
    entity's base document (or whose entity is ``blocked``: its base does not parse).
    Records for ``ignore``d targets (invalid ones) never wait."""
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    wait_ms = int(create_after * 1000)
    base_cache: dict[str, bool] = {}
    blocked = blocked or {}

    def must_wait(r: Record) -> bool:
        if r.target in blocked:
            return True
        if r.target in ignore:
            return False  # taken, never written (compact() reports it)
        ok = base_cache.get(r.target)
        if ok is None:
            ok = base_cache[r.target] = has_base(r.target)
        return not ok and now - _hlc_ms(r.hlc) < wait_ms

    p = Plan(watermarks=dict(cp.watermarks), positions=dict(cp.positions))
    for origin, recs in scan.by_origin.items():
        wm = cp.watermarks.get(origin, 0)
        seq = wm + 1
        while seq in recs:
            r = recs[seq]
            if must_wait(r):
                p.held[origin] = f"seq {seq}: {r.target} " + (
                    "has a broken base document" if r.target in blocked else "has no base yet"
                )
                break
            p.records.append(r)
            seq += 1
        taken = seq - 1 - wm
        if taken < len(recs) and origin not in p.held:
            p.held[origin] = f"seq {seq} missing (a gap: not received yet)"
        p.watermarks[origin] = seq - 1
        p.pending += len(recs) - taken
    for name, crecs in scan.cocli.items():
        upto = scan.slots.get(name, 0)
        for i, r in enumerate(crecs):
            if must_wait(r):
                p.held[name] = f"position {r.pos}: {r.target} waits for its base document"
                upto = r.pos - 1
                p.pending += len(crecs) - i
                break
            p.records.append(r)
        p.positions[name] = max(upto, cp.positions.get(name, 0))
    return p


def valid_target(target: str, kinds: Iterable[str] = DEFAULT_KINDS) -> bool:
    """``<kind>/<slug>`` and nothing else: a target comes from journals written elsewhere
    (untrusted), and compaction writes files under it."""
    kind, sep, slug = target.partition("/")
    return bool(sep) and kind in kinds and SLUG_RE.fullmatch(slug) is not None


# --- 3. last-write-wins against the checkpoint --------------------------------------------------


def resolve(records: Iterable[Record], cp: Checkpoint) -> dict[str, dict[str, Record]]:
    """Per target, the fields whose winner is newer than what the base already holds."""
    best: dict[str, dict[str, Record]] = {}
    for r in records:
        fields = best.get(r.target)
        if fields is None:
            fields = best[r.target] = {}
        cur = fields.get(r.field)
        if cur is None or r.order > cur.order:
            fields[r.field] = r
    out: dict[str, dict[str, Record]] = {}
    for target, fields in best.items():
        have = cp.fields.get(target, {})
        keep = {}
        for name, r in fields.items():
            v = have.get(name)
            if v is None or r.order > v:
                keep[name] = r
        if keep:
            out[target] = keep
    return out


# --- 4. rendering and writing entities ----------------------------------------------------------


def render_entity(
    index_bytes: bytes | None, tags_bytes: bytes | None, winners: Mapping[str, Record]
) -> dict[str, bytes | None]:
    """The entity's new ``_index.md`` / ``tags.lst`` with ``winners`` folded in (raises
    DocumentError for a base that does not parse). Only files the winners touch are returned."""
    index_text = index_bytes.decode("utf-8") if index_bytes is not None else None
    tags_text = tags_bytes.decode("utf-8") if tags_bytes is not None else None
    base = load_base(index_text, tags_text)
    merged = merge(base, winners)
    tags_in_front = TAGS in base.front
    out: dict[str, bytes | None] = {}
    if any(name != TAGS or tags_in_front for name in winners) or index_bytes is None:
        out[INDEX] = render_index(base, merged).encode("utf-8")
    if TAGS in winners and not tags_in_front:
        out[TAGS_FILE] = render_tags(merged[TAGS]).encode("utf-8") if TAGS in merged else None
    return out


@dataclass
class Written:
    entities: int = 0  # entities whose files changed
    files: int = 0
    unchanged: int = 0  # entities already holding the result (a re-run after a crash)
    hashes: dict[str, str] = field(default_factory=dict)  # rel path -> content hash ("" deleted)


Marker = Callable[[list[tuple[str, bool]]], None]  # [(rel path, exists)] -> dirty set


@dataclass
class Rendered:
    """One entity's files to change: name -> (new bytes or None to delete, old bytes)."""

    target: str
    files: dict[str, tuple[bytes | None, bytes | None]]


_readers: ThreadPoolExecutor | None = None


def _read_many(paths: list[Path | None]) -> list[bytes | None]:
    """Read files concurrently: on a cold cache each read waits on the disk, and a 300,000
    folder tree is mostly cold. One pool per process (render workers are processes)."""
    global _readers
    if _readers is None:
        _readers = ThreadPoolExecutor(IO_THREADS)
    return list(_readers.map(lambda p: None if p is None else _read(p), paths))


def _render_chunk(
    root: Path, items: list[tuple[str, Mapping[str, Record]]]
) -> tuple[list[Rendered], dict[str, str]]:
    out: list[Rendered] = []
    broken: dict[str, str] = {}
    paths: list[Path | None] = []
    for target, fields in items:
        d = root / target
        paths.append(d / INDEX)
        # tags.lst matters only when `tags` changes (one cold read saved per entity otherwise)
        paths.append(d / TAGS_FILE if TAGS in fields else None)
    data = _read_many(paths)
    for n, (target, fields) in enumerate(items):
        index_bytes, tags_bytes = data[2 * n], data[2 * n + 1]
        try:
            files = render_entity(index_bytes, tags_bytes, fields)
        except (DocumentError, UnicodeDecodeError) as exc:
            broken[target] = str(exc)
            continue
        olds = {INDEX: index_bytes, TAGS_FILE: tags_bytes}  # tags_bytes read if it is written
        out.append(Rendered(target, {k: (v, olds[k]) for k, v in files.items()}))
    return out, broken


def render_iter(
    root: Path, winners: Mapping[str, Mapping[str, Record]], workers: int = 0
) -> Iterator[tuple[list[Rendered], dict[str, str]]]:
    """New contents for every touched entity, in chunks, with the entities whose base does not
    parse. YAML parsing is the CPU cost of a compaction (~1 ms an entity), so big runs render in
    worker processes (``spawn``: forking a mount's multi-threaded process is unsafe), ahead of
    the caller, who writes one chunk while the next ones render."""
    items = [(t, winners[t]) for t in sorted(winners)]
    workers = workers or min(os.cpu_count() or 1, 4)
    if workers <= 1 or len(items) < PARALLEL_MIN:
        yield _render_chunk(root, items)
        return
    chunks = [items[i : i + RENDER_CHUNK] for i in range(0, len(items), RENDER_CHUNK)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(_render_chunk, [root] * len(chunks), chunks)


def render_and_write(
    root: Path,
    winners: Mapping[str, Mapping[str, Record]],
    mark: Marker | None = None,
    progress: Progress | None = None,
    batch: int = BATCH,
) -> tuple[Written, dict[str, str]]:
    """Rewrite every touched entity (all durable when this returns); returns what was written
    and the entities left alone because their base does not parse."""
    out = Written()
    broken: dict[str, str] = {}
    total = len(winners)
    pending: list[Rendered] = []
    seen = 0
    with ThreadPoolExecutor(IO_THREADS) as io:
        for part, bad in render_iter(root, winners):
            broken.update(bad)
            pending += part
            seen += len(part) + len(bad)
            while len(pending) >= batch or (pending and seen == total):
                _write_batch(root, pending[:batch], mark, out, io)
                del pending[:batch]
                if progress:
                    progress(f"entities written {seen - len(pending):,}/{total:,}")
    syncfs(root)  # every rename durable before the checkpoint says so
    return out, broken


def _write_temp(plan: tuple[Path, str, bytes | None]) -> None:
    d, name, data = plan
    if data is not None:
        d.mkdir(parents=True, exist_ok=True)
        _write_file(d / f".{name}{TMP_SUFFIX}", data)
        _step()


def _put_in_place(plan: tuple[Path, str, bytes | None]) -> None:
    d, name, data = plan
    if data is not None:
        os.replace(d / f".{name}{TMP_SUFFIX}", d / name)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(d / name)
    _step()


def _write_batch(
    root: Path,
    entities: list[Rendered],
    mark: Marker | None,
    out: Written,
    io: ThreadPoolExecutor,
) -> None:
    plans: list[tuple[Path, str, bytes | None]] = []  # (entity dir, name, data)
    for ent in entities:
        d = root / ent.target
        changed = False
        for name, (data, old) in ent.files.items():
            out.hashes[f"{ent.target}/{name}"] = content_hash(data) if data is not None else ""
            if old != data:
                plans.append((d, name, data))
                changed = True
        if changed:
            out.entities += 1
        else:
            out.unchanged += 1
    if not plans:
        return
    # Temp files first (content), then the dirty marks, one flush for all, then renames: a
    # file is never renamed into place before its content and its dirty mark are durable.
    # File creation and rename wait on the disk and the file system's journal, not on the
    # CPU: a few threads overlap those waits.
    list(io.map(_write_temp, plans))
    if mark is not None:
        mark([(f"{d.relative_to(root).as_posix()}/{n}", x is not None) for d, n, x in plans])
    syncfs(root)
    list(io.map(_put_in_place, plans))
    out.files += len(plans)


# --- the whole run ------------------------------------------------------------------------------


@dataclass
class Result:
    checkpoint: Checkpoint
    winners: dict[str, dict[str, Record]]
    read: int = 0
    compacted: int = 0
    pending: int = 0
    written: Written = field(default_factory=Written)
    skipped: list[Skipped] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step

    @property
    def changed(self) -> bool:
        return bool(self.compacted)

    def summary(self) -> dict[str, Any]:
        return {
            "records_read": self.read,
            "records_compacted": self.compacted,
            "pending_records": self.pending,
            "entities_touched": len(self.winners),
            "entities_written": self.written.entities,
            "files_written": self.written.files,
            "skipped": [f"{s.file} @ byte {s.offset}: {s.reason}" for s in self.skipped],
            "held_back": dict(self.held),
            "generation": self.checkpoint.generation,
            "seconds": round(self.seconds, 3),
            "phases": self.phases,
        }


def has_base_in(root: Path, targets: Iterable[str] = ()) -> Callable[[str], bool]:
    """Whether an entity has its ``_index.md``; ``targets`` are looked up ahead, concurrently
    (a stat of a cold folder waits on the disk)."""
    todo = list(targets)
    with ThreadPoolExecutor(IO_THREADS) as pool:
        known = dict(
            zip(todo, pool.map(lambda t: os.path.exists(root / t / INDEX), todo), strict=True)
        )

    def has_base(target: str) -> bool:
        ok = known.get(target)
        return ok if ok is not None else os.path.exists(root / target / INDEX)

    return has_base


def _drop_invalid(records: list[Record], bad: set[str], skipped: list[Skipped]) -> list[Record]:
    """Records naming a target outside ``<kind>/<slug>`` are compacted into nothing (they
    must not hold their origin back forever) and reported."""
    if not bad:
        return records
    for r in records:
        if r.target in bad:
            where = f"{r.node_id} seq {r.seq}" if r.seq else f"{r.node_id} position {r.pos}"
            skipped.append(Skipped(where, 0, f"invalid target {r.target!r}: not written"))
    return [r for r in records if r.target not in bad]


def _targets(scan: WalScan) -> set[str]:
    out = {r.target for recs in scan.by_origin.values() for r in recs.values()}
    out.update(r.target for recs in scan.cocli.values() for r in recs)
    return out


def compact(
    root: Path,
    cp: Checkpoint | None = None,
    mark: Marker | None = None,
    progress: Progress | None = None,
    create_after: float = CREATE_AFTER_S,
    now_ms: int | None = None,
    batch: int = BATCH,
    kinds: Iterable[str] = DEFAULT_KINDS,
) -> Result:
    """One compaction of the data folder ``root`` (blocking; the caller holds the lock).
    Leaves base files and checkpoint durable; does not touch the overlay or retire journals."""
    t0 = time.monotonic()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        phases[name] = round(time.monotonic() - t0 - sum(phases.values()), 3)

    wal = root / "wal"
    cp = cp if cp is not None else ckpt.load(wal)
    scan = read_wal(wal, cp, progress)
    lap("read")
    if progress:
        progress(f"read {scan.read:,} records from {scan.files} journals")
    targets = _targets(scan)
    bad = {t for t in targets if not valid_target(t, kinds)}
    has_base = has_base_in(root, targets - bad)
    p = plan(scan, cp, has_base, create_after, now_ms, ignore=bad)
    p.records = _drop_invalid(p.records, bad, scan.skipped)
    winners = resolve(p.records, cp)
    lap("plan")
    written, broken = render_and_write(root, winners, mark, progress, batch)
    if broken:
        # A base that does not parse cannot take its records: hold them back like a missing
        # base (never clobber a file a human has to repair), and compact the rest. Entities
        # already written with records beyond the new cut are harmless: those records stay in
        # the journals, so every later run folds them in again.
        p = plan(scan, cp, has_base, create_after, now_ms, broken, bad)
        for t, why in broken.items():
            p.held[t] = f"base document does not parse: {why}"
        p.records = _drop_invalid(p.records, bad, [])
        winners = resolve(p.records, cp)
        written, _ = render_and_write(root, winners, mark, progress, batch)
    lap("write")
    new = Checkpoint(
        generation=cp.generation,
        compacted_at=cp.compacted_at,
        watermarks=p.watermarks,
        positions=p.positions,
        fields=cp.fields,
        written=cp.written,
        max_hlc=max([cp.max_hlc, *(r.hlc for r in p.records)]),
    )
    if p.records or p.watermarks != cp.watermarks or p.positions != cp.positions:
        # A new mapping (the old one may be a running mount's overlay floor): shallow copy,
        # and new inner dicts only for the touched entities.
        new.fields = dict(cp.fields)
        for target, fields in winners.items():
            have = new.fields[target] = dict(cp.fields.get(target, {}))
            for name, r in fields.items():
                have[name] = r.order
        new.generation += 1
        new.compacted_at = datetime.now(UTC).isoformat(timespec="seconds")
        new.written = written.hashes
        if mark is not None:
            mark([(f"wal/{ckpt.CHECKPOINT_NAME}", True)])
            syncfs(root)  # the mark is durable before the checkpoint it announces
        ckpt.save(wal, new)
        _step()
    lap("checkpoint")
    return Result(
        checkpoint=new,
        winners=winners,
        read=scan.read,
        compacted=len(p.records),
        pending=p.pending,
        written=written,
        skipped=scan.skipped,
        held=p.held,
        seconds=time.monotonic() - t0,
        phases=phases,
    )


# --- 6. adoption and retirement -----------------------------------------------------------------


@dataclass
class Adopted:
    dropped: int = 0
    stale: list[str] = field(default_factory=list)  # targets whose base is not the new one yet
    targets: set[str] = field(default_factory=set)


def raise_origin(state: NodeState, origin: str, wm: int) -> None:
    """Every seq of ``origin`` up to ``wm`` is now in the base files: count it as held, so
    anti-entropy does not ask peers for records that were retired."""
    from .overlay import OriginSeqs

    seqs = state.overlay.origins.setdefault(origin, OriginSeqs())
    if seqs.contiguous >= wm:
        return
    seqs.contiguous = wm
    seqs.above = {s for s in seqs.above if s > wm}
    while seqs.contiguous + 1 in seqs.above:
        seqs.contiguous += 1
        seqs.above.discard(seqs.contiguous)


def adopt_checkpoint(state: NodeState, cp: Checkpoint, verify: bool = True) -> Adopted:
    """Make ``cp`` this node's checkpoint: call it once the new base files are in the data
    folder (S3 pull puts them there before it pulls ``wal/checkpoint.json``, or passes the
    downloaded checkpoint here after the files). Overlay entries at or below a compacted version
    are dropped only where the base already shows them (``verify``: by the content hashes of
    the last generation and by comparing the winner's value with the base), so a reader never
    sees a value go back in time. Then the mount is told which files and entities changed."""
    res = Adopted()
    root = state.data.root
    stale: set[str] = set()
    kinds = state.config.mount.kinds
    # The checkpoint may come from S3: only entity files under <kind>/<slug> are looked at.
    written = {
        rel: h
        for rel, h in cp.written.items()
        if rel.rpartition("/")[2] in (INDEX, TAGS_FILE)
        and valid_target(rel.rpartition("/")[0], kinds)
    }
    if verify:
        for rel, h in written.items():
            data = _read(root / rel)
            if (data is None and h) or (data is not None and content_hash(data) != h):
                stale.add(rel.rsplit("/", 1)[0])
    overlay = state.overlay
    for origin, wm in cp.watermarks.items():
        raise_origin(state, origin, wm)
    overlay.compacted = cp.fields
    for target in [t for t in overlay.by_target if t in cp.fields]:
        if target in stale:
            continue
        versions = cp.fields[target]
        base_fields: dict[str, Any] | None = None
        for name, cur in list(overlay.by_target.get(target, {}).items()):
            v = versions.get(name)
            if v is None or cur.order > v:
                continue
            if verify and cur.order == v:
                if base_fields is None:
                    try:
                        base_fields = state.base(target).fields()
                    except DocumentError:
                        base_fields = {}
                if not _base_shows(base_fields, cur):
                    stale.add(target)
                    break
            if overlay.drop(target, name, v):
                res.dropped += 1
                res.targets.add(target)
    state.checkpoint = cp
    res.stale = sorted(stale)
    paths = [rel for rel in written if rel.rsplit("/", 1)[0] not in stale]
    if paths:
        state.notify_files(paths)
    if res.targets:
        state._notify(res.targets, [], False)
    return res


def _base_shows(base_fields: Mapping[str, Any], r: Record) -> bool:
    if r.kind == KIND_TOMBSTONE:
        return r.field not in base_fields
    value = decode_value(r.kind, r.value)
    return r.field in base_fields and same_value(base_fields[r.field], value)


def journal_compacted(cp: Checkpoint, name: str, data: bytes) -> bool:
    """True when every record of the journal ``name`` (its bytes) is in the base files per
    ``cp``. A journal with an unreadable or torn record is never compacted (kept for a human).
    The S3 sync may use this to decide whether a remote journal object can be deleted."""
    res = parse_journal(data)
    if res.corrupt or res.torn_tail:
        return False
    pos_done = cp.positions.get(name, 0)
    for r in res.records:
        if r.seq:
            if r.seq > cp.watermarks.get(r.node_id, 0):
                return False
        elif r.pos > pos_done:
            return False
    return True


def retirable_journals(cp: Checkpoint, wal_dir: Path) -> list[tuple[Path, int]]:
    """Journal files (with the size they had when checked) whose records are all compacted.
    Delete one only if it still has that size (a late record may have been appended since)."""
    out = []
    for path in journal_files(wal_dir):
        data = _read(path)
        if data is not None and journal_compacted(cp, path.name, data):
            out.append((path, len(data)))
    return out


def uploads_pending(cp: Checkpoint, dirty_paths: Iterable[str]) -> bool:
    """With S3, journals are retired only once the files of the last compaction are pushed."""
    dirty = set(dirty_paths)
    return f"wal/{ckpt.CHECKPOINT_NAME}" in dirty or any(p in dirty for p in cp.written)


def retire_offline(root: Path, cp: Checkpoint, s3: bool) -> list[str]:
    """Retire compacted journals of a data folder no mount is using (``cocli-fs compact``)."""
    if s3:
        from .dirty import DirtySet

        ds = DirtySet(root / ".cocli-fs")
        try:
            if uploads_pending(cp, (e.path for e in ds.snapshot())):
                return []
        finally:
            ds.close()
    done = []
    for path, size in retirable_journals(cp, root / "wal"):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_size == size:
                os.unlink(path)
                _step()
                done.append(path.name)
    if done:
        from .journal import fsync_dir

        fsync_dir(root / "wal")
    return done


async def retire_in_mount(state: NodeState) -> list[str]:
    """Retire compacted journals inside a running mount, without racing its writers. The S3
    sync service may call this after a push (it does nothing while uploads are pending)."""
    cp = state.checkpoint
    if state.config.s3 is not None and uploads_pending(
        cp, (e.path for e in state.dirty.snapshot())
    ):
        return []
    found = await trio.to_thread.run_sync(retirable_journals, cp, state.data.wal)
    own = [(p, s) for p, s in found if (parse_journal_name(p.name) or ("", ""))[1] == state.node]
    done: list[str] = []
    if own and state.journal is not None:
        done += [p.name for p in await state.journal.retire(own)]
    # Replica writes happen in this (trio) thread: no await between the check and the unlink.
    for p, size in found:
        if (p, size) in own:
            continue
        with contextlib.suppress(FileNotFoundError):
            if os.stat(p).st_size != size:
                continue
            if state.replicas is not None:
                state.replicas.release(p.name)
            os.unlink(p)
            done.append(p.name)
    if done:
        state.notify_files([f"wal/{n}" for n in done])  # a listing of wal/ may show them
    return done


# --- pending records ----------------------------------------------------------------------------

_cocli_cache: dict[str, tuple[int, int, list[int]]] = {}  # path -> (size, mtime, seq-0 positions)


def pending_records(state: NodeState) -> int:
    """Records this node holds that are not compacted yet: per origin the held sequence numbers
    above the checkpoint's watermark, plus cocli's own records above their file's position."""
    cp = state.checkpoint
    n = 0
    for origin, seqs in state.overlay.origins.items():
        wm = cp.watermarks.get(origin, 0)
        n += max(0, seqs.contiguous - wm) + sum(1 for s in seqs.above if s > wm)
    for path in journal_files(state.data.wal):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        key = str(path)
        hit = _cocli_cache.get(key)
        if hit is None or hit[0] != st.st_size or hit[1] != st.st_mtime_ns:
            data = _read(path) or b""
            positions = [r.pos for r in parse_journal(data).records if not r.seq]
            hit = _cocli_cache[key] = (st.st_size, st.st_mtime_ns, positions)
        done = cp.positions.get(path.name, 0)
        n += sum(1 for p in hit[2] if p > done)
    return n


# --- one compaction with exclusion, for the CLI and the service --------------------------------


@contextlib.contextmanager
def _locked(private: Path) -> Any:
    """One compaction at a time per data folder (CLI and mount alike)."""
    private.mkdir(parents=True, exist_ok=True)
    fd = os.open(private / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError("another compaction of this data folder is running") from None
        yield
    finally:
        os.close(fd)


def compact_offline(
    root: Path,
    s3: bool,
    progress: Progress | None = None,
    create_after: float = CREATE_AFTER_S,
    kinds: Iterable[str] = DEFAULT_KINDS,
) -> dict[str, Any]:
    """``cocli-fs compact DATA`` with no mount running: compact, then retire."""
    from .dirty import DirtySet

    with _locked(root / ".cocli-fs"):
        ds = DirtySet(root / ".cocli-fs")
        try:
            res = compact(
                root, mark=_marker(ds), progress=progress, create_after=create_after, kinds=kinds
            )
        finally:
            ds.close()
        retired = retire_offline(root, res.checkpoint, s3)
    out = res.summary()
    out["retired"] = retired
    return out


def _marker(ds: Any) -> Marker:
    """Mark a batch with one flush: the caller's ``syncfs`` makes the marks durable."""

    def mark(items: list[tuple[str, bool]]) -> None:
        old, ds.fsync = ds.fsync, False
        try:
            for path, exists in items:
                ds.mark(path, exists)
        finally:
            ds.fsync = old

    return mark


class CompactionService:
    """Runs in the hub's mount (``[hub] enabled``): the ``compact`` control command for
    ``cocli-fs compact DATA`` while the mount runs, and periodic compaction if ``interval > 0``."""

    name = "compaction"

    def __init__(self, state: NodeState, ctl: control.ControlServer | None) -> None:
        self.state = state
        self.interval = state.config.hub.interval
        self._lock = trio.Lock()
        self.last: dict[str, Any] = {}
        self.runs = 0
        if ctl is not None:
            ctl.register("compact", self._handle)

    async def _handle(self, args: dict[str, Any], progress: control.Progress) -> dict[str, Any]:
        return await self.compact_once(progress)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.interval <= 0:
            await trio.sleep_forever()
        while True:
            await trio.sleep(self.interval)
            try:
                await self.compact_once(None)
            except Exception:
                log.exception("periodic compaction failed")

    async def compact_once(self, progress: control.Progress | None) -> dict[str, Any]:
        state = self.state
        token = trio.lowlevel.current_trio_token()

        def report(line: str) -> None:
            if progress is not None:
                trio.from_thread.run(progress, line, trio_token=token)

        def mark(items: list[tuple[str, bool]]) -> None:
            # The dirty set belongs to the trio thread (the mount marks it there too).
            trio.from_thread.run_sync(_marker(state.dirty), items, trio_token=token)

        def work() -> Result:
            with _locked(state.data.private):
                return compact(
                    state.data.root, mark=mark, progress=report, kinds=state.config.mount.kinds
                )

        async with self._lock:
            res = await trio.to_thread.run_sync(work)
            # Base files are durable: now (and only now) the overlay may let go of them.
            adopted = adopt_checkpoint(state, res.checkpoint, verify=False)
            retired = await retire_in_mount(state)
        out = res.summary()
        out["overlay_dropped"] = adopted.dropped
        out["retired"] = retired
        self.last = out
        self.runs += 1
        return out

    def status(self) -> dict[str, Any]:
        return {
            "pending_records": pending_records(self.state),
            "compaction": {
                "runs": self.runs,
                "generation": self.state.checkpoint.generation,
                "last": {k: v for k, v in self.last.items() if k not in ("skipped", "held_back")},
            },
        }


# --- the command --------------------------------------------------------------------------------


def _terminal_progress() -> Progress:
    tty = sys.stderr.isatty()

    def show(line: str) -> None:
        if tty:
            sys.stderr.write("\r\x1b[2K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return show


def render_summary(s: dict[str, Any]) -> str:
    lines = [
        f"records read       {s['records_read']:,}",
        f"records compacted  {s['records_compacted']:,}",
        f"records pending    {s['pending_records']:,}",
        f"entities touched   {s['entities_touched']:,}",
        f"entities written   {s['entities_written']:,} ({s['files_written']:,} files)",
        f"checkpoint         generation {s['generation']}",
        f"journals retired   {len(s.get('retired', []))}",
        f"time               {s['seconds']:.2f} s",
    ]
    for origin, why in sorted(s["held_back"].items()):
        lines.append(f"held back          {origin}: {why}")
    for line in s["skipped"]:
        lines.append(f"skipped record     {line}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, args.node)
    if not cfg.hub.enabled and not getattr(args, "force", False):
        print(
            "cocli-fs compact: this node is not the hub ([hub] enabled = false); use --force",
            file=sys.stderr,
        )
        return 2
    data = DataDir.check(args.data, cfg.mount.kinds)
    progress = _terminal_progress()
    try:
        summary = control.request(data.private, "compact", {}, on_progress=progress)
        if summary is None:
            summary = compact_offline(
                data.root, cfg.s3 is not None, progress, kinds=cfg.mount.kinds
            )
    except control.ControlError as exc:
        print(
            f"\ncocli-fs compact: the running mount of {data.root} refused: {exc}", file=sys.stderr
        )
        if "does not handle" in str(exc):
            print("(mount it with [hub] enabled = true to compact)", file=sys.stderr)
        return 1
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"\ncocli-fs compact: {exc}", file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(render_summary(summary))
    return 0


__all__ = [
    "CompactionService",
    "Result",
    "Version",
    "adopt_checkpoint",
    "compact",
    "journal_compacted",
    "main",
    "pending_records",
    "retirable_journals",
    "retire_in_mount",
    "retire_offline",
]
