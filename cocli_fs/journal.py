"""Node-day journals: ``wal/<YYYYMMDD>_<node>.usv``.

Each node appends only to its own journals; records received from peers go to local replicas
with the same names, so a ``wal/`` folder looks the same on every node and in S3.

Writing is durable when ``append`` returns: records are written with one ``write`` and one
``fsync`` per batch, and concurrent appenders share a batch (group commit).  Reading tolerates
what crashes and bit rot leave behind: a torn last record is skipped (and truncated away before
the next append), a record failing its checksum is reported and skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from . import offload
from . import record as rec
from .record import Record, RecordError

log = logging.getLogger(__name__)

NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_NAME_RE = re.compile(r"^(\d{8})_(.+)\.usv$")


def journal_name(day: str, node: str) -> str:
    return f"{day}_{node}.usv"


def parse_journal_name(name: str) -> tuple[str, str] | None:
    """``20261125_pi-1.usv`` -> ``("20261125", "pi-1")``; None for anything else."""
    m = _NAME_RE.match(name)
    return (m.group(1), m.group(2)) if m else None


def check_node_name(node: str) -> str:
    if not NODE_RE.match(node):
        raise ValueError(
            f"invalid node name {node!r}: use letters, digits, '.', '_' or '-' (max 63)"
        )
    return node


# --- reading ------------------------------------------------------------------------------------


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    corrupt: list[tuple[int, str]] = field(default_factory=list)  # (byte offset, reason)
    torn_tail: int = 0  # bytes after the last separator (an append cut short by a crash)
    valid_end: int = 0  # offset just after the last complete record


def parse_journal(data: bytes) -> ReadResult:
    """Decode a whole journal. Never raises on bad content: it reports and skips."""
    res = ReadResult()
    end = data.rfind(rec.RS_B) + 1  # 0 when there is no complete record at all
    res.valid_end = end
    res.torn_tail = len(data) - end
    # cocli's writer and hand edits may leave newlines between records: the decoder strips.
    # What follows the last separator is the torn tail, already accounted for.
    res.records, bad = rec.decode_buffer(data, end, first_pos=1)
    if bad:
        chunks = data[:end].split(rec.RS_B)
        starts = [0]
        for chunk in chunks:
            starts.append(starts[-1] + len(chunk) + 1)
        for i in bad:
            chunk = chunks[i]
            raw = chunk.strip(b"\r\n") if chunk[:1] in (b"\n", b"\r") else chunk
            try:
                rec.decode_untrusted(raw, i + 1)
                why = "record does not decode"  # not reached: decode_chunks agrees with it
            except RecordError as exc:
                why = str(exc)
            res.corrupt.append((starts[i], why))
    return res


def read_journal(path: Path) -> ReadResult:
    with open(path, "rb") as f:
        return parse_journal(f.read())


def journal_files(wal_dir: Path) -> list[Path]:
    """Journal files in name order (day, then node)."""
    try:
        names = os.listdir(wal_dir)
    except FileNotFoundError:
        return []
    return [wal_dir / n for n in sorted(names) if parse_journal_name(n)]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_for_append(path: Path) -> int:
    """Open a journal for appending, first cutting off a torn tail so the next record does not
    get glued to half of a previous one."""
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    size = os.fstat(fd).st_size
    if size:
        # Only the tail can be torn; look back far enough to find the last separator.
        back = min(size, 1 << 16)
        while True:
            tail = os.pread(fd, back, size - back)
            cut = tail.rfind(rec.RS_B)
            if cut >= 0 or back == size:
                break
            back = min(size, back * 4)
        keep = size - back + cut + 1 if cut >= 0 else 0
        if keep != size:
            log.warning("%s: cutting %d bytes of a torn record", path, size - keep)
            os.ftruncate(fd, keep)
            os.fsync(fd)
    if created:
        fsync_dir(path.parent)
    return fd


class _FileSet:
    """Open append descriptors keyed by file name (one per node-day)."""

    def __init__(self, wal_dir: Path) -> None:
        self.wal_dir = wal_dir
        self._fds: dict[str, int] = {}

    def fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            if len(self._fds) > 32:  # old days: close them, they are rarely written again
                self.close()
            fd = self._fds[name] = _open_for_append(self.wal_dir / name)
        return fd

    def opened(self, names: Iterable[str]) -> bool:
        """Each of these files has its descriptor open already (``fd`` would not open one)."""
        return all(n in self._fds for n in names)

    def write(self, by_name: dict[str, list[bytes]], sync: bool) -> list[int]:
        """Append each file's chunks; returns the descriptors written."""
        fds = []
        for name, chunks in by_name.items():
            fd = self.fd(name)
            fds.append(fd)
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            n = os.write(fd, data)
            if n < len(data):  # a short write (rare: disk full, signal): write the rest
                view = memoryview(data)[n:]
                while view:
                    view = view[os.write(fd, view):]
            if sync:
                os.fdatasync(fd)
        return fds

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def release(self, name: str) -> None:
        """Close the descriptor of one file (it is about to be deleted: appending to an
        unlinked inode would lose records). The next write reopens, creating a new file."""
        fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)


def _group(records: Iterable[Record]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    encode = rec.encode
    day = rec.hlc_day
    for r in records:
        name = journal_name(day(r.hlc), r.node_id)
        chunks = out.get(name)
        if chunks is None:
            out[name] = [encode(r)]
        else:
            chunks.append(encode(r))
    return out


# --- writing our own journal --------------------------------------------------------------------


_INLINE_YIELDS = 6  # scheduler passes an inline batch waits for more appenders
_INLINE_RETRY = 16


class JournalWriter:
    """Appends this node's records. Sequence numbers are assigned in append order, so the file
    order of one node's records is its sequence order."""

    def __init__(self, wal_dir: Path, node: str, next_seq: int = 1) -> None:
        self.wal_dir = wal_dir
        self.node = check_node_name(node)
        self.next_seq = next_seq
        wal_dir.mkdir(parents=True, exist_ok=True)
        self._files = _FileSet(wal_dir)
        self._pending: list[Record] = []
        self._issued = 0  # ticket of the newest append
        self._durable = 0  # every ticket up to here is on disk
        self._failed: dict[int, OSError] = {}
        # A batch is being written (by one of the appenders); the others wait in _parked (with
        # their tickets) for it to end. Those it made durable are woken together, and one more
        # to write the next batch. (A trio.Lock wakes one waiter per scheduler pass, each only
        # to see that its records were in the batch: 16 writers, 16 passes per batch.)
        self._busy = False
        self._parked: list[tuple[int, trio.lowlevel.Task]] = []
        self.batches = 0  # fsync'ed batches (group commit makes this < appends)
        self.appends = 0  # append() calls that wrote records
        # When the previous batch held one append and its write+fsync took less than this
        # (seconds), the next is written on the event loop itself; 0 (the default) always uses
        # a worker thread. Why: the thread hop (two wake-ups, and the GIL back after each
        # syscall) cost a sequential writer more than the 0.2-0.4 ms fdatasync itself. A slow
        # disk (one sync over the bound) goes back to the
        # thread; every _INLINE_RETRY-th threaded batch tries the loop again (a sync timed in a
        # thread includes its GIL waits, so it alone might never look fast again).
        self.inline_sync_under = 0.0
        self._last_sync = 0.0
        self._threaded = 0
        self._last_batch = 0  # appends in the last batch
        # Set by the mount: are other writers about to append (files open for writing)? None:
        # nobody knows, so an inline batch waits a few scheduler passes for them.
        self.company: Callable[[], bool] | None = None

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def write_sync(self, records: list[Record]) -> None:
        """Write and fsync records in the calling thread (CLI tools without a trio loop)."""
        self._files.write(_group(records), sync=True)
        self.batches += 1

    async def append(self, records: list[Record]) -> None:
        """Durably append records (already stamped with our seq). Returns once they are fsynced;
        appenders that arrive while a flush is running are written together in the next one."""
        if not records:
            return
        self._pending.extend(records)
        self._issued += 1
        self.appends += 1
        ticket = self._issued
        # Not cancellable from here on: once queued, the records carry sequence numbers and
        # some batch will write them. Letting a cancelled appender walk away would leave them
        # unwritten until the next append (a gap in our sequence that peers would ask for) or
        # written but never applied. So every wait below ignores cancellation (_park,
        # _write_off_loop, the inline path's yields), which is cheaper than entering a
        # shielded CancelScope for every append.
        while self._durable < ticket:
            if self._busy:
                await self._park(ticket)
                continue
            self._busy = True
            try:
                await self._write_batch(ticket)
            finally:
                self._unpark()
        if self._failed and ticket in self._failed:
            raise self._failed.pop(ticket)

    async def _park(self, ticket: int) -> None:
        """Wait, not cancellable, until a batch ends that wrote ``ticket`` or that leaves us to
        write the next one (``_unpark``)."""
        self._parked.append((ticket, trio.lowlevel.current_task()))
        await trio.lowlevel.wait_task_rescheduled(offload.refuse_abort)

    def _unpark(self) -> None:
        """End of a batch: wake the appenders it made durable (or failed), and the first one
        still waiting, which writes the next batch for everyone queued by then. Waking the
        rest too would only have them park again."""
        self._busy = False
        parked = self._parked
        if not parked:
            return
        durable = self._durable
        reschedule = trio.lowlevel.reschedule
        keep = []
        writer = False
        for ticket, task in parked:
            if ticket <= durable:
                reschedule(task)
            elif not writer:
                reschedule(task)
                writer = True
            else:
                keep.append((ticket, task))
        self._parked = keep

    async def _write_batch(self, ticket: int) -> None:
        slow = self._last_sync >= self.inline_sync_under
        if slow:
            self._threaded += 1
        # Inline only for a lone appender: with several, the loop has requests to serve while
        # a worker thread syncs, and that overlap is worth more than the saved thread hop.
        company = self.company() if self.company is not None else None
        alone = self._last_batch <= 1 if company is None else not company
        inline = self.inline_sync_under > 0 and alone and (
            not slow or self._threaded % _INLINE_RETRY == 0
        )
        if inline and company is None:
            # Let appenders already on their way (requests the loop has read) join us.
            for _ in range(_INLINE_YIELDS):
                await trio.lowlevel.cancel_shielded_checkpoint()
        batch, self._pending = self._pending, []
        upto = self._issued
        self._last_batch = upto - self._durable
        try:
            if inline:
                self._timed_write(batch)
            else:
                await self._write_off_loop(batch)
        except OSError as exc:
            # Every appender in this batch gets the error; none of them was acknowledged.
            for t in range(self._durable + 1, upto + 1):
                if t != ticket:
                    self._failed[t] = exc
            self._durable = upto
            raise
        self._durable = upto

    async def _write_off_loop(self, batch: list[Record]) -> None:
        """Write and fsync a batch without stopping the event loop, waited for without
        cancellation (see append). With the mount's helper process the loop appends to the page
        cache (microseconds) and the helper syncs (``offload.fdatasync``): no thread of ours
        waits for the GIL (300,000 entities, 16 writers: a batch took ~3.5 ms in a thread, for
        a ~0.2 ms sync). Without, or when a file is still to be opened (that may sync its
        folder), all of it runs in a worker thread."""
        by_name = _group(batch)
        if not offload.helper_running() or not self._files.opened(by_name):
            await offload.in_thread(partial(self._timed_write, batch))  # raises what it raised
            return
        t = time.perf_counter()
        for fd in self._files.write(by_name, sync=False):
            await offload.fdatasync(fd)
        self.batches += 1
        self._last_sync = time.perf_counter() - t

    def _timed_write(self, batch: list[Record]) -> None:
        t = time.perf_counter()
        self.write_sync(batch)
        self._last_sync = time.perf_counter() - t

    async def retire(self, files: list[tuple[Path, int]]) -> list[Path]:
        """Delete fully compacted journal files, each only if it still has the size it had when
        it was found compacted. Runs between batches (none is being written; the deleting
        itself does not yield, so none can start) and drops our descriptor first, so no append
        can land in an unlinked file. Returns what it deleted."""
        await trio.lowlevel.checkpoint()
        while self._busy:
            await self._park(0)  # woken when this batch ends
        done = []
        for p, size in files:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(p).st_size != size:
                    continue
                self._files.release(p.name)
                os.unlink(p)
                done.append(p)
        return done

    def close(self) -> None:
        self._files.close()


# --- replicas of peers' journals ----------------------------------------------------------------


class ReplicaWriter:
    """Keeps records received from peers in ``wal/<day>_<origin>.usv`` so a restart needs no
    re-gossip and the hub can compact a node whose own disk died. The caller de-duplicates
    (the overlay knows which ``(origin, seq)`` it has)."""

    def __init__(self, wal_dir: Path) -> None:
        wal_dir.mkdir(parents=True, exist_ok=True)
        self._files = _FileSet(wal_dir)

    def write(self, records: list[Record], sync: bool = True) -> None:
        if records:
            self._files.write(_group(records), sync=sync)

    def release(self, name: str) -> None:
        """Close our descriptor of one replica file before it is deleted (see _FileSet)."""
        self._files.release(name)

    async def flush(self) -> None:
        """fsync what ``write(sync=False)`` left in the page cache, in a worker thread. It syncs
        duplicated descriptors, so a concurrent close of an old day's file is harmless."""
        fds = [os.dup(fd) for fd in self._files._fds.values()]

        def run() -> None:
            for fd in fds:
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)

        await trio.to_thread.run_sync(run)

    def close(self) -> None:
        self._files.close()


# --- start-up scan ------------------------------------------------------------------------------


@dataclass
class ScanReport:
    files: int = 0
    records: int = 0
    corrupt: list[tuple[str, int, str]] = field(default_factory=list)
    torn: list[tuple[str, int]] = field(default_factory=list)


def scan_wal_files(wal_dir: Path, report: ScanReport | None = None) -> Iterator[list[Record]]:
    """The readable records of each journal in ``wal/``, one list per file, in file order;
    problems go into ``report``."""
    report = report if report is not None else ScanReport()
    for path in journal_files(wal_dir):
        res = read_journal(path)
        report.files += 1
        report.records += len(res.records)
        for off, why in res.corrupt:
            log.error("%s: skipping corrupt record at byte %d: %s", path.name, off, why)
            report.corrupt.append((path.name, off, why))
        if res.torn_tail:
            log.warning("%s: ignoring %d bytes of a torn last record", path.name, res.torn_tail)
            report.torn.append((path.name, res.torn_tail))
        yield res.records


def scan_wal(wal_dir: Path, report: ScanReport | None = None) -> Iterator[Record]:
    """Every readable record in ``wal/``, file by file; problems go into ``report``."""
    for records in scan_wal_files(wal_dir, report):
        yield from records
