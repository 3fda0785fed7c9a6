"""Read-ahead for walks over a kind folder (``find``, ``grep -r``, ``rsync``, ``du``).

A walk lists entity folders one after another in the order we list ``companies/`` (the store's
own directory order). Each listing of an entity folder reads that folder's blocks from the
store's disk; cold, that read is the largest part of a walk (20,000 entities: ~2 s of a 5.5 s
``find``) and it happens on the event loop, one folder at a time. Here a child process reads
the next folders of the walk ahead of it, so the loop finds them in the page cache (20,000
entities, cold: ``find`` 5.0–5.8 s → 4.0–4.7 s; with every folder read beforehand 3.3 s).

A process, not a thread: a thread of ours takes the GIL from the event loop at each of its
system calls, and that convoy cost the walk what the reads saved (measured: no gain). The
loop's part is one non-blocking pipe write per listed entity; hints that do not fit are
dropped, and the child exits when the pipe closes (also when the mount is killed); a lost child is
replaced, at most once a minute.

Only walks are read ahead: when the entity just listed comes shortly after the one listed
before it in that order. Random visits (``stat`` of one entity) read nothing extra. The child
learns the order by listing the kind folder itself, again when a visited name is not in the
order it has (a new entity).

One more hint, for random visits that will read an entity's files: a lookup of its
``_fields/`` (a scraper about to write a field) is followed by a lookup of a field, which
reads ``_index.md`` (``tags.lst`` only for the field ``tags``). The child asks the disk for it
at once (``wanted``, ``POSIX_FADV_WILLNEED``), a round trip before that lookup comes (several
when concurrent writers queue). Measured when the loop itself did that read (20,000
entities, 16 writers, first visits: 2.2–2.4 s → 1.6–1.9 s for 2,000 writes, three runs each,
alternating). That read now leaves the loop when the page cache lacks the file
(``Operations._load_base``, ``offload.load_base``); the hint makes it more often there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable

from .document import INDEX
from .process import reap_child

log = logging.getLogger(__name__)

# Folders read ahead of the walk: far enough that the child's reads stay ahead while the
# loop competes for the disk (64 gained little, reading everything at once ~as much as this).
DEPTH = 4096
REFRESH_S = 5.0  # a kind folder's order is listed again at most this often
RESTART_S = 60.0  # a lost child is replaced at most this often


class WalkAhead:
    """Decides which folders to read ahead (runs in the child process; no I/O but listing)."""

    def __init__(self, root: str, depth: int = DEPTH,
                 lister: Callable[[str], list[str]] | None = None) -> None:
        self.root = root
        self.depth = depth
        self._list = lister or _names
        self._order: dict[str, tuple[list[str], dict[str, int], float]] = {}
        self._last: dict[str, int] = {}  # kind -> position of the folder listed last
        self._ahead: dict[str, int] = {}  # kind -> positions below this are read already

    def plan(self, kind: str, slug: str) -> list[str]:
        """The entity folders (``kind/slug``) to read now that ``slug`` is being listed."""
        got = self._order.get(kind)
        pos = got[1].get(slug) if got is not None else None
        if pos is None and (got is None or time.monotonic() - got[2] > REFRESH_S):
            names = self._list(f"{self.root}/{kind}")
            got = self._order[kind] = (names, {n: i for i, n in enumerate(names)},
                                       time.monotonic())
            pos = got[1].get(slug)
        if got is None or pos is None:
            return []
        last = self._last.get(kind)
        self._last[kind] = pos
        # A walk moves forward a little between visits (more than one step when hints were
        # dropped or skipped); anything else is a random visit.
        if last is None or not 0 < pos - last <= self.depth:
            return []
        names = got[0]
        start = max(pos + 1, self._ahead.get(kind, 0))
        end = min(pos + 1 + self.depth, len(names))
        if start >= end:
            return []
        self._ahead[kind] = end
        return [f"{kind}/{names[i]}" for i in range(start, end)]


class ReadAhead:
    """The mount's side: starts the child and hands it the entities being listed."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._started = 0.0
        self._wanted = False  # between start() and stop()
        self.restarts = 0

    def start(self) -> None:
        self._wanted = True
        self._started = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "cocli_fs.walkahead", self.root],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True,
            )
        except OSError as exc:
            log.warning("no read-ahead for walks: %s", exc)
            return
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()
        os.set_blocking(self._fd, False)

    def visited(self, kind: str, slug: str) -> None:
        """An entity folder is being listed (on the event loop: one non-blocking write)."""
        self._send(f"{kind}/{slug}\n")

    def _send(self, line: str) -> None:
        if self._fd < 0:
            self._restart()  # the child was lost a while ago: maybe try another
            return
        try:
            os.write(self._fd, line.encode("utf-8", "surrogateescape"))
        except BlockingIOError:
            pass  # the child is behind: this hint is stale anyway
        except OSError:  # the child is gone (killed, out of memory)
            proc = self._detach()
            if proc is not None:
                proc.poll()  # reap it
            self._restart()

    def wanted(self, kind: str, slug: str) -> None:
        """An entity's files will be read soon (its ``_fields/`` was looked up): the child asks
        the disk for them now, so the read on the event loop finds them in the page cache."""
        self._send(f"/{kind}/{slug}\n")

    def _restart(self) -> None:
        """Start another child, at most once a minute; meanwhile walks are not read ahead."""
        if self._wanted and time.monotonic() - self._started >= RESTART_S:
            log.warning("read-ahead child lost; starting another")
            self.restarts += 1
            self.start()

    def _detach(self) -> subprocess.Popen[bytes] | None:
        """Forget the child and close its pipe (which ends it); returns it to be reaped."""
        proc, self._proc, self._fd = self._proc, None, -1
        if proc is not None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
        return proc

    def stop(self) -> None:
        self._wanted = False
        proc = self._detach()
        if proc is not None:
            reap_child(proc)


def serve(root: str, fd: int = 0) -> int:
    """The child: read hints from ``fd`` until it closes (the newest of each batch counts)
    and read ahead. Returns how many folders it read."""
    planner = WalkAhead(root)
    pending = b""
    warmed = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return warmed
        pending += chunk
        lines, _, pending = pending.rpartition(b"\n")
        newest = ""
        for line in lines.decode("utf-8", "surrogateescape").split("\n"):
            if line.startswith("/"):
                _fetch(root + line)  # every entity asked for (concurrent writers)
            elif line:
                newest = line  # only the newest listing of a batch: a walk moved on
        if newest:
            kind, _, slug = newest.partition("/")
            for rel in planner.plan(kind, slug):
                _warm(f"{root}/{rel}")
                warmed += 1


def _names(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _fetch(entity: str) -> None:
    """Have the disk read an entity's ``_index.md`` into the page cache, without waiting for
    the data (``POSIX_FADV_WILLNEED`` queues the reads; only ``open`` may wait, for the
    inode). Not ``tags.lst``: a field's value does not need it, and on a cold disk it would
    only queue a read before the next entity's. ``O_NONBLOCK``: a FIFO put in the store under
    that name must not hang the child."""
    try:
        fd = os.open(f"{entity}/{INDEX}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _warm(path: str) -> None:
    """Read a folder and the folders directly inside it (``notes/``, ``meetings/``)."""
    try:
        with os.scandir(path) as it:
            subdirs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
        for d in subdirs:
            with os.scandir(d) as it:
                for _ in it:
                    pass
    except OSError:
        pass


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        serve(sys.argv[1])
