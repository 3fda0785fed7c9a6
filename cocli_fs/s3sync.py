"""S3 sync without LIST storms: ``cocli-fs sync DATA`` and the mount's periodic SyncService.

Bucket layout (under the optional ``[s3] prefix``) mirrors the data folder, so ``aws s3 sync``
and cocli see ordinary files::

    companies/<slug>/_index.md, companies/<slug>/notes/...   plain files (whoever created them)
    wal/<YYYYMMDD>_<node>.usv                                each node's own journals
    wal/checkpoint.json                                      the hub's compaction checkpoint
    manifests/<YYYYMMDD>_<node>.tsv                          per-node-day change manifests

**Push** uploads exactly the dirty set (what the mount wrote), appends ``+<TAB>path`` /
``-<TAB>path`` lines to this node's manifest of the day, re-uploads that manifest and any own
journal that grew, then clears the pushed dirty entries. No LIST, no tree walk.

S3 has no append, so a grown journal or manifest is re-uploaded whole (one PUT of the day's
object). Cost per push: the new files + one day's journal + one day's manifest. A day journal of
50,000 records is ~10 MB: tolerable at a 60 s interval on a LAN; the alternative (numbered part
objects) would keep PUTs small but break "the bucket mirrors the data folder" for cocli and
``aws s3``, and make pull LIST grow with pushes instead of with nodes × days.

**Pull** LISTs only ``wal/`` and ``manifests/`` (O(nodes × days) keys, ListObjectsV2 pages),
and for each object that changed (ETag) reads only the new bytes (a ranged GET from the offset
it reached last time). New manifest lines name files to GET (written by temp file + rename,
never marked dirty); new journal bytes are records for ``NodeState.receive`` (which de-duplicates
by (origin, seq) and writes the local replica file, so downloaded journals never overwrite
``wal/`` files directly and gossip-received replicas stay consistent). Then the mount is told
which files changed (``notify_files``).

Faults: botocore's ``standard`` retries (503 SlowDown, 5xx, dropped connections) plus our own
retry of whole transfers (a body cut mid-download); positions (``.cocli-fs/s3sync.json``) and
the dirty set are persisted atomically and only advanced after the work they describe is
durable, so a killed sync redoes at most one batch (idempotent: PUT again, receive duplicates).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import trio

from . import config as config_mod
from .control import ControlError, ControlServer, Progress, request
from .dirty import DirtyEntry
from .journal import parse_journal, parse_journal_name
from .state import PRIVATE_DIR, DataDir, NodeState
from .storage import NotFound, Stats, Storage, StorageError, from_config

log = logging.getLogger(__name__)

STATE_NAME = "s3sync.json"
LOCK_NAME = "s3sync.lock"
TMP_DIR = "tmp"  # under .cocli-fs: downloads land here first, then rename into place
MANIFEST_PREFIX = "manifests/"
WAL_PREFIX = "wal/"
CHECKPOINT_KEY = "wal/checkpoint.json"
PACK_PREFIX = "packs/"  # never listed: only manifest lines name pack objects
PACK_MAX_FILE = 256 * 1024  # files up to this size also travel inside the push's pack
PACK_MAX = 16 * 1024 * 1024
WORKERS = 16  # parallel transfers (boto3 clients are thread-safe)
TRANSFER_TRIES = 4  # our own retries of a transfer after botocore's have given up

T = TypeVar("T")
Call = Callable[..., Any]  # runs a function on the thread that owns NodeState


def _direct(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


def manifest_name(day: str, node: str) -> str:
    return f"{day}_{node}.tsv"


def parse_manifest_name(name: str) -> tuple[str, str] | None:
    stem, dot, ext = name.rpartition(".")
    if ext != "tsv" or not dot:
        return None
    return parse_journal_name(stem + ".usv")


def today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


def check_data_path(path: str) -> str:
    """A path named by a manifest (untrusted: another node wrote it) must stay inside the data
    folder and out of the journals and our private state."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or parts[0] in (PRIVATE_DIR, "wal", "manifests", "packs")
        or "\x00" in path
    ):
        raise ValueError(f"refusing path {path!r}")
    return path


PackRef = tuple[str, int, int]  # pack object key, offset, length


def parse_manifest_line(line: str) -> tuple[str, bool, PackRef | None]:
    """``+<TAB>path[<TAB>pack<TAB>offset<TAB>length]`` or ``-<TAB>path`` (untrusted: written
    by another node). Raises ValueError."""
    parts = line.split("\t")
    if parts[0] not in ("+", "-") or len(parts) not in (2, 5):
        raise ValueError(line)
    path = check_data_path(parts[1])
    ref = None
    if len(parts) == 5:
        pack, off, n = parts[2], int(parts[3]), int(parts[4])
        if not pack.startswith(PACK_PREFIX) or ".." in pack.split("/") or off < 0 or n < 0:
            raise ValueError(line)
        ref = (pack, off, n)
    return path, parts[0] == "+", ref


def _slice(packs: dict[str, bytes], ref: PackRef | None) -> bytes | None:
    if ref is None or ref[0] not in packs:
        return None
    blob = packs[ref[0]]
    if ref[1] + ref[2] > len(blob):
        return None  # a damaged pack: fetch the file itself
    return blob[ref[1] : ref[1] + ref[2]]


# --- persisted positions ------------------------------------------------------------------------


@dataclass
class SyncPositions:
    """What this node has read from and pushed to the bucket (``.cocli-fs/s3sync.json``)."""

    read: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> offset, etag, size
    pushed: dict[str, int] = field(default_factory=dict)  # own journal/manifest key -> bytes
    last_push: float = 0.0
    last_pull: float = 0.0
    bootstrapped: bool = False

    @classmethod
    def load(cls, path: Path) -> SyncPositions:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except ValueError:
            log.error("%s is unreadable; pull restarts from the beginning (idempotent)", path)
            return cls()
        return cls(
            read=dict(raw.get("read", {})),
            pushed={k: int(v) for k, v in raw.get("pushed", {}).items()},
            last_push=float(raw.get("last_push", 0.0)),
            last_pull=float(raw.get("last_pull", 0.0)),
            bootstrapped=bool(raw.get("bootstrapped", False)),
        )

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "read": self.read,
                    "pushed": self.pushed,
                    "last_push": self.last_push,
                    "last_pull": self.last_pull,
                    "bootstrapped": self.bootstrapped,
                },
                f,
                sort_keys=True,
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


@dataclass
class Summary:
    uploaded: int = 0
    deleted_remote: int = 0
    downloaded: int = 0
    deleted_local: int = 0
    records_in: int = 0
    skipped_dirty: int = 0
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "uploaded": self.uploaded,
            "deleted_remote": self.deleted_remote,
            "downloaded": self.downloaded,
            "deleted_local": self.deleted_local,
            "records_in": self.records_in,
            "skipped_dirty": self.skipped_dirty,
            "seconds": round(self.seconds, 3),
            **self.stats,
        }


def render_summary(s: dict[str, Any]) -> str:
    reqs = ", ".join(f"{k} {v}" for k, v in s.get("requests", {}).items()) or "none"
    return (
        f"sync: up {s['uploaded']} objects ({_size(s.get('bytes_up', 0))}), "
        f"down {s['downloaded']} objects ({_size(s.get('bytes_down', 0))}), "
        f"deleted {s['deleted_remote']} remote / {s['deleted_local']} local, "
        f"{s['records_in']} new records; requests: {reqs}; "
        f"{s.get('retries', 0)} failed attempts retried; {s['seconds']:.2f} s"
    )


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


class ProgressBar:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, label: str, total: int, enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._shown = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._shown > 0.1 or self.done >= self.total):
            self._shown = now
            width = 30
            frac = self.done / self.total if self.total else 1.0
            bar = "#" * int(width * frac)
            sys.stderr.write(
                f"\r{self.label} [{bar:<{width}}] {self.done}/{self.total} ({frac:4.0%})"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.total:
            sys.stderr.write("\n")
            sys.stderr.flush()


# --- the sync logic -----------------------------------------------------------------------------


class Syncer:
    """One push and/or pull of one node against one store. Blocking (run it in a thread inside
    the mount); every call into ``NodeState`` goes through ``call`` so that, in the mount, it
    runs on the trio thread that owns the state."""

    def __init__(
        self,
        state: NodeState,
        store: Storage,
        call: Call = _direct,
        progress: Callable[[str], None] | None = None,
        bar: bool | None = None,
    ) -> None:
        self.state = state
        self.store = store
        self.call = call
        self.progress = progress or (lambda line: None)
        self.bar = bar
        self.node = state.node
        self.private = state.data.private
        self.root = state.data.root
        self.positions_path = self.private / STATE_NAME
        self.positions = SyncPositions.load(self.positions_path)
        self.summary = Summary()
        self.changed_paths: list[str] = []
        self._lock = threading.Lock()  # transfers run on a thread pool

    def _add(self, counter: str, path: str | None = None) -> None:
        with self._lock:
            setattr(self.summary, counter, getattr(self.summary, counter) + 1)
            if path is not None:
                self.changed_paths.append(path)

    # -- entry point -----------------------------------------------------------------------------

    def run(self, push: bool = True, pull: bool = True, bootstrap: bool = False) -> Summary:
        t0 = time.monotonic()
        self.store.stats = Stats()
        with _locked(self.private / LOCK_NAME):
            self._clean_tmp()
            self.store.check()
            try:
                if push:
                    self.push()
                if pull or bootstrap:
                    self.pull(bootstrap=bootstrap)
            finally:
                if self.changed_paths:
                    self.call(self.state.notify_files, self.changed_paths)
                    self.call(_readopt, self.state, self.changed_paths)
                    self.changed_paths = []
        self.summary.seconds = time.monotonic() - t0
        self.summary.stats = self.store.stats.as_dict()
        return self.summary

    def _clean_tmp(self) -> None:
        tmp = self.private / TMP_DIR
        tmp.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(tmp):  # leftovers of a killed sync: never visible in DATA
            with contextlib.suppress(OSError):
                os.unlink(tmp / name)

    def _save(self) -> None:
        self.positions.save(self.positions_path)

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        """Our retry around botocore's: covers a body cut mid-download and a throttling storm
        that outlasted botocore's attempts. Fatal errors (credentials, bucket) go straight up."""
        for attempt in range(TRANSFER_TRIES):
            try:
                return fn()
            except NotFound:
                raise
            except StorageError as exc:
                if exc.fatal or attempt == TRANSFER_TRIES - 1:
                    raise
                log.warning("%s: %s (retrying)", what, exc)
                time.sleep(min(2.0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")

    # -- push ------------------------------------------------------------------------------------

    def push(self) -> None:
        dirty: list[DirtyEntry] = self.call(self.state.dirty.snapshot)
        files = self._expand([e for e in dirty if self._pushable(e.path)])
        checkpoint = [e for e in dirty if e.path == CHECKPOINT_KEY]
        if files:
            self.progress(f"pushing {len(files)} changed files")
            bar = ProgressBar("push", len(files), self.bar)
            pushed = self._transfer(self._push_one, files, bar)
            # The manifest names files only once they (and their pack) are in the bucket.
            self._append_manifest(self._pack(pushed))
        self._push_own_objects()
        if checkpoint:  # last: other nodes adopt it only after the base files it implies
            self._push_one(checkpoint[0])
        self.call(self.state.dirty.clear, dirty)
        if self.state.config.hub.enabled and not checkpoint:
            self._retire_remote()
        self.positions.last_push = time.time()
        self._save()

    def _retire_remote(self) -> None:
        """Hub only: journals that compaction retired here (every record in the base files,
        the checkpoint and base files pushed) are deleted from the bucket too, so pulls and
        bootstraps stop reading them. Only an object we have read (or written) to its end is
        deleted: if its origin appended since (HEAD shows another size), it stays for the next
        compaction. No LIST: the candidates are the journals we know from pulls and pushes.
        Only past days: a node appends only to today's journal (its clock is monotonic), so a
        deleted past-day object is never re-created under a reader's remembered offset."""
        known = {k: int(p.get("size", -1)) for k, p in self.positions.read.items()}
        known.update(self.positions.pushed)
        for key, size in sorted(known.items()):
            name = key[len(WAL_PREFIX) :]
            parsed = parse_journal_name(name)
            if not key.startswith(WAL_PREFIX) or not parsed or parsed[0] >= today():
                continue
            if (self.state.data.wal / name).exists():
                continue
            info = self._retry(f"HEAD {key}", lambda key=key: self.store.head(key))  # type: ignore[misc]
            if info is not None and info.size != size:
                continue
            if info is not None:
                self._retry(f"DELETE {key}", lambda key=key: self.store.delete(key))  # type: ignore[misc]
                self._add("deleted_remote")
            self.positions.read.pop(key, None)
            self.positions.pushed.pop(key, None)
            self._save()

    def _expand(self, entries: list[DirtyEntry]) -> list[DirtyEntry]:
        """A marked folder (a whole folder moved in from elsewhere) stands for its files."""
        out: list[DirtyEntry] = []
        for e in entries:
            full = self.root / e.path
            if not (e.exists and full.is_dir()):
                out.append(e)
                continue
            for dirpath, dirnames, names in os.walk(full):
                dirnames.sort()
                for n in sorted(names):
                    rel = Path(dirpath, n).relative_to(self.root).as_posix()
                    out.append(DirtyEntry(rel, True, e.gen))
        return out

    def _pushable(self, path: str) -> bool:
        try:
            check_data_path(path)
        except ValueError:
            if path != CHECKPOINT_KEY:
                log.warning("not pushing %r (journals and private state travel otherwise)", path)
            return False
        return True

    def _push_one(self, e: DirtyEntry) -> tuple[str, bytes | None]:
        """Upload one file (or delete its object). Returns (path, content or None)."""
        full = self.root / e.path
        if e.exists:
            try:
                data = full.read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                data = None  # gone since it was marked: push the deletion
            if data is not None:
                self._retry(f"PUT {e.path}", lambda: self.store.put(e.path, data))
                self._add("uploaded")
                return e.path, data
        self._retry(f"DELETE {e.path}", lambda: self.store.delete(e.path))
        self._add("deleted_remote")
        return e.path, None

    def _pack(self, pushed: list[tuple[str, bytes | None]]) -> list[str]:
        """Manifest lines for a push. Small files also go, concatenated, into one pack object
        per push (``packs/<node>/<day>/<ns>.pack``), named with offset and length by their
        line: a puller then makes one GET per push instead of one per file. The per-file
        objects stay the truth for ordinary S3 tools (and the fallback if a pack is gone)."""
        name = f"{PACK_PREFIX}{self.node}/{today()}/{time.time_ns():x}.pack"
        offsets: dict[int, int] = {}  # index in ``pushed`` -> offset in the pack
        size = 0
        for i, (_path, data) in enumerate(pushed):
            if data is not None and len(data) <= PACK_MAX_FILE and size + len(data) <= PACK_MAX:
                offsets[i] = size
                size += len(data)
        if len(offsets) > 1:
            blob = b"".join(pushed[i][1] or b"" for i in offsets)
            self._retry(f"PUT {name}", lambda: self.store.put(name, blob))
        else:
            offsets = {}  # a pack of one file saves nothing
        lines: list[str] = []
        for i, (path, data) in enumerate(pushed):
            if data is None:
                lines.append(f"-\t{path}\n")
            elif i in offsets:
                lines.append(f"+\t{path}\t{name}\t{offsets[i]}\t{len(data)}\n")
            else:
                lines.append(f"+\t{path}\n")
        return lines

    def _append_manifest(self, lines: list[str]) -> None:
        if not lines:
            return
        mdir = self.private / "manifests"
        mdir.mkdir(exist_ok=True)
        path = mdir / manifest_name(today(), self.node)
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())

    def _push_own_objects(self) -> None:
        """Upload this node's journals and manifests that grew since the last push (whole
        objects: S3 has no append). Only our own: replicas of peers' journals never go up."""
        uploads: list[tuple[str, Path]] = []
        for name in sorted(os.listdir(self.state.data.wal)) if self.state.data.wal.is_dir() else []:
            parsed = parse_journal_name(name)
            if parsed and parsed[1] == self.node:
                uploads.append((WAL_PREFIX + name, self.state.data.wal / name))
        mdir = self.private / "manifests"
        for name in sorted(os.listdir(mdir)) if mdir.is_dir() else []:
            parsed = parse_manifest_name(name)
            if parsed and parsed[1] == self.node:
                uploads.append((MANIFEST_PREFIX + name, mdir / name))
        # Manifests after journals: a manifest line must not name what is not up yet; the
        # journals carry no such dependency, so their order does not matter.
        for key, path in uploads:
            size = path.stat().st_size
            if size == self.positions.pushed.get(key, -1):
                continue
            data = path.read_bytes()
            if key.startswith(WAL_PREFIX):
                data = data[: data.rfind(b"\x1e") + 1]  # never a torn last record
            else:
                data = data[: data.rfind(b"\n") + 1]
            if len(data) == self.positions.pushed.get(key, -1):
                continue
            self._retry(f"PUT {key}", lambda key=key, data=data: self.store.put(key, data))  # type: ignore[misc]
            self.summary.uploaded += 1
            self.positions.pushed[key] = len(data)
            self._save()

    # -- pull ------------------------------------------------------------------------------------

    def pull(self, bootstrap: bool = False) -> None:
        # wal/ before manifests/: a checkpoint seen in the first listing has its base files in
        # manifests that the second (later) listing is sure to show.
        wal = list(self.store.list(WAL_PREFIX))
        manifests = list(self.store.list(MANIFEST_PREFIX))
        if bootstrap:
            self._bootstrap(manifests)
        listed = {o.key for o in wal} | {o.key for o in manifests}
        for key in [k for k in self.positions.read if k not in listed]:
            del self.positions.read[key]  # retired by compaction
        for o in manifests:
            parsed = parse_manifest_name(o.key[len(MANIFEST_PREFIX) :])
            if parsed and parsed[1] != self.node and self._changed(o.key, o.etag):
                self._pull_manifest(o.key, o.etag, o.size)
        for o in wal:
            name = o.key[len(WAL_PREFIX) :]
            parsed = parse_journal_name(name)
            if parsed and self._wants_journal(parsed[1], name) and self._changed(o.key, o.etag):
                self._pull_journal(o.key, o.etag, o.size)
        for o in wal:
            if o.key == CHECKPOINT_KEY and self._changed(o.key, o.etag):
                self._pull_checkpoint(o.etag, o.size)
        self.positions.last_pull = time.time()
        self.positions.bootstrapped = self.positions.bootstrapped or bootstrap
        self._save()

    def _wants_journal(self, origin: str, name: str) -> bool:
        if origin != self.node:
            return True
        # Our own journal: only when our disk lost it (then the records come back to us).
        return not (self.state.data.wal / name).exists() and WAL_PREFIX + name not in (
            self.positions.pushed
        )

    def _changed(self, key: str, etag: str) -> bool:
        pos = self.positions.read.get(key)
        return pos is None or pos.get("etag") != etag

    def _start(self, key: str, size: int) -> int:
        offset = int(self.positions.read.get(key, {}).get("offset", 0))
        return 0 if size < offset else offset  # shrunk: rewritten, read again (idempotent)

    def _pull_manifest(self, key: str, etag: str, size: int) -> None:
        offset = self._start(key, size)
        data = self._retry(f"GET {key}", lambda: self.store.get(key, offset))
        end = data.rfind(b"\n") + 1
        ops: dict[str, tuple[bool, PackRef | None]] = {}
        for line in data[:end].decode("utf-8", "replace").splitlines():
            try:
                path, exists, ref = parse_manifest_line(line)
            except ValueError:
                log.error("%s: ignoring bad manifest line %r", key, line[:200])
                continue
            ops.pop(path, None)
            ops[path] = (exists, ref)  # the last line for a path wins
        if ops:
            self.progress(f"{key}: {len(ops)} changed files")
            packs = self._fetch_packs({r[0] for e, r in ops.values() if e and r is not None})
            bar = ProgressBar("pull", len(ops), self.bar)
            self._transfer(
                self._pull_one, [(p, e, _slice(packs, r)) for p, (e, r) in ops.items()], bar
            )
        self.positions.read[key] = {"offset": offset + end, "etag": etag, "size": size}
        self._save()

    def _fetch_packs(self, names: set[str]) -> dict[str, bytes]:
        """The packs these manifest lines name (one GET each); a missing one is skipped (its
        files are then fetched one by one)."""

        def one(name: str) -> tuple[str, bytes] | None:
            try:
                return name, self._retry(f"GET {name}", lambda: self.store.get(name))
            except NotFound:
                return None

        got = self._transfer(one, sorted(names), ProgressBar("packs", 0, False))
        return dict(x for x in got if x is not None)

    def _pull_one(self, item: tuple[str, bool, bytes | None]) -> str:
        path, exists, packed = item
        dirty = self.state.dirty
        if path in dirty:  # our unpushed change wins here; it reaches the others by our push
            self._add("skipped_dirty")
            return ""
        target = self.root / path
        if not exists:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                target.unlink()
                self._add("deleted_local", path)
            return ""
        if packed is not None:
            data = packed
        else:
            try:
                data = self._retry(f"GET {path}", lambda: self.store.get(path))
            except NotFound:
                return ""  # deleted after that line was written; a later '-' line says so
        self._write_file(target, data)
        self._add("downloaded", path)
        return path

    def _write_file(self, target: Path, data: bytes) -> None:
        """Temp file in our private folder + fsync + rename: a half file never appears."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.private / TMP_DIR / f"{os.getpid()}-{id(data):x}-{time.monotonic_ns()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def _pull_journal(self, key: str, etag: str, size: int) -> None:
        offset = self._start(key, size)
        data = self._retry(f"GET {key}", lambda: self.store.get(key, offset))
        res = parse_journal(data)
        for off, why in res.corrupt:
            log.error("%s: skipping corrupt record at byte %d: %s", key, offset + off, why)
        if res.records:
            new = self.call(self.state.receive, res.records, None, True)
            self.summary.records_in += len(new)
        self.positions.read[key] = {"offset": offset + res.valid_end, "etag": etag, "size": size}
        self._save()

    def _pull_checkpoint(self, etag: str, size: int) -> None:
        if self.state.config.hub.enabled:
            # The hub wrote it; adopting our own upload would only reload what we have.
            self.positions.read[CHECKPOINT_KEY] = {"offset": size, "etag": etag, "size": size}
            return
        data = self._retry("GET checkpoint", lambda: self.store.get(CHECKPOINT_KEY))
        self._write_file(self.root / CHECKPOINT_KEY, data)
        self._add("downloaded", CHECKPOINT_KEY)
        self.call(_adopt, self.state, data)
        self.positions.read[CHECKPOINT_KEY] = {"offset": size, "etag": etag, "size": size}
        self._save()

    def _bootstrap(self, manifests: Iterable[Any]) -> None:
        """One full listing: fetch every plain file this node does not have yet. The manifests
        listed *before* it are marked as read (their entries are covered by the listing);
        anything newer arrives through the manifests as usual."""
        self.progress("bootstrap: listing the whole bucket (once)")
        todo = []
        for o in self.store.list(""):
            try:
                check_data_path(o.key)
            except ValueError:
                continue
            local = self.root / o.key
            try:
                if local.stat().st_size == o.size:
                    continue
            except FileNotFoundError:
                pass
            todo.append((o.key, True))
        self.progress(f"bootstrap: {len(todo)} files to download")
        bar = ProgressBar("bootstrap", len(todo), self.bar)
        self._transfer(self._pull_one, [(p, e, None) for p, e in todo], bar)
        for o in manifests:
            if not self._changed(o.key, o.etag):
                continue
            self.positions.read[o.key] = {"offset": o.size, "etag": o.etag, "size": o.size}
        self._save()

    # -- helpers ---------------------------------------------------------------------------------

    def _transfer(self, fn: Callable[[Any], Any], items: list[Any], bar: ProgressBar) -> list[Any]:
        """Run ``fn`` over ``items`` on a thread pool; results in item order. All transfers are
        attempted even if one fails; then the first error is raised (so nothing is cleared or
        advanced past work that did not happen)."""
        out: list[Any] = []
        errors: list[BaseException] = []
        if len(items) == 1:
            out.append(fn(items[0]))
            bar.advance()
            bar.close()
            return [x for x in out if x]
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = [pool.submit(fn, item) for item in items]
            for fut in futures:
                try:
                    out.append(fut.result())
                except StorageError as exc:
                    if exc.fatal:
                        for f in futures:
                            f.cancel()
                    errors.append(exc)
                bar.advance()
        bar.close()
        if errors:
            raise errors[0]
        return [x for x in out if x]


def _readopt(state: NodeState, paths: list[str]) -> None:
    """Base files of the adopted checkpoint that arrived late: adopt again (idempotent), so the
    overlay entries they cover are dropped now."""
    from .compaction import adopt_checkpoint

    if state.checkpoint.generation and any(p in state.checkpoint.written for p in paths):
        adopt_checkpoint(state, state.checkpoint)


def _adopt(state: NodeState, data: bytes) -> None:
    """Hand a checkpoint pulled from S3 to compaction (``compaction.adopt_checkpoint``): it
    drops overlay entries the new base files (pulled before it) already show."""
    from .checkpoint import CheckpointError, loads_untrusted
    from .compaction import adopt_checkpoint

    try:
        cp = loads_untrusted(data)
    except CheckpointError as exc:
        log.error("pulled wal/checkpoint.json is unusable: %s", exc)
        return
    if cp.generation <= state.checkpoint.generation:
        return
    res = adopt_checkpoint(state, cp)
    if res.stale:
        log.info(
            "checkpoint adopted; %d entities keep their overlay until newer base files arrive",
            len(res.stale),
        )


@contextlib.contextmanager
def _locked(path: Path) -> Any:
    """One sync at a time per data folder (a CLI sync and the mount's service would race)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- the mount's service ------------------------------------------------------------------------


class SyncService:
    """Periodic push+pull inside the mount, every ``[s3] interval``; also answers
    ``cocli-fs sync DATA`` over the control socket."""

    name = "s3"

    def __init__(self, state: NodeState, control: ControlServer) -> None:
        assert state.config.s3 is not None
        self.state = state
        self.cfg = state.config.s3
        self.store: Storage | None = None
        self.lock = trio.Lock()
        self.last_sync: float | None = None
        self.last_error: str | None = None
        self.last_summary: dict[str, Any] = {}
        self.syncs = 0
        control.register("sync", self._handle)

    def _store(self) -> Storage:
        if self.store is None:
            self.store = from_config(self.cfg)
        return self.store

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.sync()
            except StorageError as exc:
                self.last_error = str(exc)
                log.warning("periodic S3 sync failed (will retry): %s", exc)
            except Exception as exc:  # a bug or a disk error must not take the mount down
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("periodic S3 sync failed (will retry)")
            await trio.sleep(self.cfg.interval)

    async def sync(
        self,
        push: bool = True,
        pull: bool = True,
        bootstrap: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        def report(line: str) -> None:
            if progress is not None:
                with contextlib.suppress(Exception):
                    trio.from_thread.run(progress, line)

        async with self.lock:
            store = await trio.to_thread.run_sync(self._store)
            syncer = Syncer(
                self.state, store, call=trio.from_thread.run_sync, progress=report, bar=False
            )
            try:
                summary = await trio.to_thread.run_sync(syncer.run, push, pull, bootstrap)
            except StorageError as exc:
                self.last_error = str(exc)
                raise
            self.syncs += 1
            self.last_sync = time.time()
            self.last_error = None
            self.last_summary = summary.as_dict()
            return self.last_summary

    async def _handle(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        return await self.sync(
            push=not args.get("pull_only"),
            pull=not args.get("push_only"),
            bootstrap=bool(args.get("bootstrap")),
            progress=progress,
        )

    def status(self) -> dict[str, Any]:
        return {
            "dirty": len(self.state.dirty),
            "last_sync": self.last_sync,
            "last_sync_error": self.last_error,
            "syncs": self.syncs,
            "s3": self.store.describe() if self.store else None,
        }


# --- the command --------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, args.node)
    if cfg.s3 is None:
        print("cocli-fs: sync: no [s3] table in the config (nothing to sync with)", file=sys.stderr)
        return 2
    if args.push_only and args.pull_only:
        print("cocli-fs: sync: --push-only and --pull-only exclude each other", file=sys.stderr)
        return 2
    try:
        data = DataDir.check(args.data, cfg.mount.kinds)
    except (OSError, ValueError) as exc:
        print(f"cocli-fs: sync: {exc}", file=sys.stderr)
        return 2
    push, pull = not args.pull_only, not args.push_only
    data.private.mkdir(parents=True, exist_ok=True)
    try:
        reply = request(
            data.private,
            "sync",
            {"bootstrap": args.bootstrap, "push_only": args.push_only, "pull_only": args.pull_only},
            on_progress=lambda line: print(line, file=sys.stderr),
        )
    except ControlError as exc:
        print(f"cocli-fs: sync: {exc}", file=sys.stderr)
        return 1
    if reply is not None:
        print(render_summary(reply))
        return 0
    state = NodeState(data, cfg)
    state.load()
    try:
        store = from_config(cfg.s3)
        summary = Syncer(state, store, progress=lambda line: log.info("%s", line)).run(
            push=push, pull=pull, bootstrap=args.bootstrap
        )
    except StorageError as exc:
        print(f"cocli-fs: sync: {exc}", file=sys.stderr)
        return 1
    finally:
        state.close()
    print(render_summary(summary.as_dict()))
    return 0
