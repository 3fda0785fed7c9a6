"""Folder listings kept between the READDIRPLUS requests of one directory read.

A folder is read in many requests (``companies/`` with 300,000 entries: thousands), each
resuming at the offset we gave its last entry. There is no OPENDIR handle to hang the listing
on (the kernel is told opendir is not implemented, so it sends no OPENDIR/RELEASEDIR and caches
listings itself; ``fusepatch.NO_OPENDIR``), so a read that starts at offset 0 takes a snapshot
here, and the offsets name it: ``generation << 32 | index + 1``. Two processes reading the same
folder at once each keep their own snapshot, and a ``seekdir`` to an offset handed out earlier
lands on the same entry, as POSIX asks. A snapshot is dropped when its read reaches the end;
abandoned ones (``ls | head``) are evicted oldest first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")

_INDEX_BITS = 32
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_GENERATIONS = 1 << 30  # offsets stay positive 63-bit numbers


class Listings(Generic[T]):
    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._snaps: OrderedDict[tuple[int, int], list[T]] = OrderedDict()
        self._gen = 0

    def __len__(self) -> int:
        return len(self._snaps)

    def start(self, ino: int, entries: list[T]) -> int:
        """Keep a new snapshot of folder ``ino``; returns its generation."""
        self._gen = self._gen % (_GENERATIONS - 1) + 1
        self._snaps[(ino, self._gen)] = entries
        while len(self._snaps) > self.keep:
            self._snaps.popitem(last=False)
        return self._gen

    def resume(self, ino: int, offset: int) -> tuple[int, list[T], int] | None:
        """(generation, entries, index to continue at) for an offset we handed out, or None
        when that snapshot is gone (evicted or already read to the end)."""
        gen, index = offset >> _INDEX_BITS, offset & _INDEX_MASK
        entries = self._snaps.get((ino, gen))
        if entries is None:
            return None
        return gen, entries, index

    def drop(self, ino: int, gen: int) -> None:
        self._snaps.pop((ino, gen), None)

    @staticmethod
    def offset(gen: int, index: int) -> int:
        """The offset of the entry after ``index`` (what readdir resumes from)."""
        return gen << _INDEX_BITS | (index + 1)

    @staticmethod
    def index_of(offset: int) -> int:
        return offset & _INDEX_MASK
