"""The compaction checkpoint: ``wal/checkpoint.json``, the one record of what the base files hold.

It lives in ``wal/`` so that it travels with the journals (S3 sync pulls the ``wal/`` prefix) and
is not a ``.usv`` file, so journal scanning ignores it. Contents::

    {
      "format": 1,
      "generation": 7,                      # bumped by every compaction that changed anything
      "compacted_at": "2026-11-25T23:59:00+00:00",
      "watermarks": {"pi-1": 1200, ...},    # per origin: every seq <= this is in the base files
      "positions": {"20261125_cocli-3.usv": 88, ...},
                                            # journals written by cocli itself (no seq): record
                                            # slots (1-based position in the file) compacted
      "fields": {"companies/acme": {"email": ["<hlc 16 hex>", "pi-1", 17], ...}, ...},
                                            # version (hlc, node, seq|pos) of every field a
                                            # compaction wrote: a later-arriving older record
                                            # loses against it
      "written": {"companies/acme/_index.md": "<sha256/16>", "companies/b/tags.lst": "", ...},
                                            # files the last generation wrote ("" = deleted),
                                            # so another node can tell it holds the new base
      "max_hlc": "<16 hex>"                 # highest stamp compacted (clock floor on restart)
    }

Loaded and saved whole; saved atomically (temp file, fsync, rename, fsync of ``wal/``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = 1
CHECKPOINT_NAME = "checkpoint.json"

# (hlc, node_id, seq or file position): ``Record.order`` of the record a field's value came from.
Version = tuple[int, str, int]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read. Never silently replaced by an empty one: our own
    sequence numbers would be reused after journals were retired."""


@dataclass
class Checkpoint:
    generation: int = 0
    compacted_at: str = ""
    watermarks: dict[str, int] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    fields: dict[str, dict[str, Version]] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)
    max_hlc: int = 0  # highest clock stamp compacted: a restarted clock stays above it

    def version(self, target: str, name: str) -> Version | None:
        f = self.fields.get(target)
        return f.get(name) if f else None


def checkpoint_path(wal_dir: Path) -> Path:
    return wal_dir / CHECKPOINT_NAME


def content_hash(data: bytes) -> str:
    """What ``written`` records for a file: short, but plenty to tell versions apart."""
    return hashlib.sha256(data).hexdigest()[:16]


def dumps(cp: Checkpoint) -> bytes:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "generation": cp.generation,
        "compacted_at": cp.compacted_at,
        "watermarks": dict(sorted(cp.watermarks.items())),
        "positions": dict(sorted(cp.positions.items())),
        "fields": {
            t: {f: [f"{v[0]:016x}", v[1], v[2]] for f, v in fs.items()}
            for t, fs in cp.fields.items()
        },
        "written": cp.written,
        "max_hlc": f"{cp.max_hlc:016x}",
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def loads_untrusted(data: bytes) -> Checkpoint:
    """Parse a checkpoint (from disk or S3). Raises CheckpointError on anything malformed."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckpointError(f"unknown checkpoint format {doc.get('format')!r}")
        fields: dict[str, dict[str, Version]] = {}
        for t, fs in doc["fields"].items():
            fields[t] = {f: (int(v[0], 16), str(v[1]), int(v[2])) for f, v in fs.items()}
        return Checkpoint(
            generation=int(doc["generation"]),
            compacted_at=str(doc.get("compacted_at", "")),
            watermarks={str(k): int(v) for k, v in doc["watermarks"].items()},
            positions={str(k): int(v) for k, v in doc["positions"].items()},
            fields=fields,
            written={str(k): str(v) for k, v in doc.get("written", {}).items()},
            max_hlc=int(doc.get("max_hlc", "0"), 16),
        )
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"malformed checkpoint: {exc}") from None


def load(wal_dir: Path) -> Checkpoint:
    """The checkpoint in ``wal_dir``; an empty one when there is none yet."""
    path = checkpoint_path(wal_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Checkpoint()
    try:
        return loads_untrusted(data)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def save(wal_dir: Path, cp: Checkpoint) -> bytes:
    """Atomically replace the checkpoint; returns the bytes written."""
    data = dumps(cp)
    atomic_write(checkpoint_path(wal_dir), data)
    return data


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename over ``path``, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
