"""Node-local scratch: files the mount shows but that must not (yet) reach the store.

Two kinds live in ``DATA/.cocli-fs/scratch/<same relative path>``:

- editor scratch files (route SCRATCH: ``.x.swp``, ``x~``, ``4913``, ``.#x``) stay here for good;
  they are never marked dirty, synced or gossiped;
- *pending* files: a regular file newly created at an entity's top level under a name that is
  not a routed file (``sedAb12Cd``, ``tmpk3j2.tmp``, ``draft.md``). Tools that save atomically
  write such a temp file and rename it over ``_index.md``; the rename consumes it as a write to
  ``_index.md`` and the temp file never reaches the store. A pending file that is closed and
  not renamed within ``grace`` seconds (or renamed to another normal name) is moved into the
  store as an ordinary file. On start-up, pending files left by a crash are moved into the
  store (they were real user files or half-done temp files; keeping beats losing).

Scratch lives inside DATA so moving a file between scratch and the store is a same-filesystem
``rename`` (no EXDEV, no copy).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .routing import Route, Router

log = logging.getLogger(__name__)


class Scratch:
    def __init__(self, root: Path, data_root: Path, router: Router, grace: float = 2.0) -> None:
        self.root = root
        self.data_root = data_root
        self.router = router
        self.grace = grace
        self.files: set[tuple[str, ...]] = set()  # every scratch file (both kinds)
        self.pending: dict[tuple[str, ...], float] = {}  # pending file -> promote after (0: open)
        root.mkdir(parents=True, exist_ok=True)

    def path(self, parts: tuple[str, ...]) -> Path:
        return self.root.joinpath(*parts)

    def recover(self, promote: Callable[[tuple[str, ...]], None]) -> None:
        """Start-up: learn the editor scratch files; move pending leftovers into the store."""
        for dirpath, _dirs, names in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root).parts
            for name in names:
                parts = (*rel, name)
                self.files.add(parts)
                if self.router.route(parts) is not Route.SCRATCH:
                    self.pending[parts] = 0.0
                    promote(parts)

    def add(self, parts: tuple[str, ...], pending: bool) -> Path:
        p = self.path(parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.files.add(parts)
        if pending:
            self.pending[parts] = 0.0
        return p

    def discard(self, parts: tuple[str, ...]) -> None:
        self.files.discard(parts)
        self.pending.pop(parts, None)

    def closed(self, parts: tuple[str, ...]) -> None:
        """The last handle of a pending file closed: promote it after the grace period."""
        if parts in self.pending:
            self.pending[parts] = time.monotonic() + self.grace

    def reopened(self, parts: tuple[str, ...]) -> None:
        if parts in self.pending:
            self.pending[parts] = 0.0

    def due(self, now: float | None = None, everything: bool = False) -> list[tuple[str, ...]]:
        now = time.monotonic() if now is None else now
        return [p for p, t in self.pending.items() if everything or (t and t <= now)]

    def move_to_store(self, parts: tuple[str, ...], dst: tuple[str, ...] | None = None) -> Path:
        """Move a scratch file into the store at ``dst`` (default: the same path)."""
        src = self.path(parts)
        target = self.data_root.joinpath(*(dst or parts))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(src, target)
        except OSError as exc:
            if exc.errno != 18:  # EXDEV: DATA has a mount inside; copy instead
                raise
            shutil.move(str(src), str(target))
        self.discard(parts)
        self._prune(src.parent)
        return target

    def remove(self, parts: tuple[str, ...]) -> None:
        p = self.path(parts)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
        self.discard(parts)
        self._prune(p.parent)

    def _prune(self, d: Path) -> None:
        """Remove now-empty mirror folders (never the scratch root itself)."""
        while d != self.root and self.root in d.parents:
            try:
                d.rmdir()
            except OSError:
                return
            d = d.parent

    def names_in(self, parts: tuple[str, ...]) -> list[str]:
        """Scratch files directly inside the folder ``parts``."""
        n = len(parts)
        return [p[-1] for p in self.files if len(p) == n + 1 and p[:n] == parts]
