"""Reads that the kernel's caches answer at once, or not at all.

A field write's first visit to an entity reads its ``_index.md``. Sent to the helper process
(``offload.load_base``), that read costs the event loop a request, a reply and a task switch
even when the file is in the page cache, which it nearly always is (the entity was just
listed, written or read). Here the loop reads it itself, but only if that cannot wait for the
disk: ``openat2(RESOLVE_CACHED)`` fails with ``EAGAIN`` unless every path component is in the
dentry cache, and ``preadv2(RWF_NOWAIT)`` fails with ``EAGAIN`` unless the pages are in the
page cache. Either failure raises :class:`NotCached` and the caller goes off the loop as
before. Servers like nginx and Samba try ``RWF_NOWAIT`` before their thread pools for the same
reason.

A kernel without ``openat2`` (< 5.6) or ``RESOLVE_CACHED`` (< 5.12), or a file system that does
not support ``RWF_NOWAIT``, turns this off for the process: every read is then NotCached, as
with ``COCLI_FS_NO_CACHED_READS=1`` in the environment (tests use it to reach the helper).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat

_SYS_OPENAT2 = 437  # the same number on every Linux architecture
_AT_FDCWD = -100
_RESOLVE_CACHED = 0x20
NOATIME = getattr(os, "O_NOATIME", 0)
LIMIT = 1 << 20  # a larger file is not worth holding the loop for: NotCached


class NotCached(Exception):
    """The read would wait for the disk (or cannot be tried here): read it off the loop."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class Reader:
    """One per process (``READER``); used from the event loop's thread only (one buffer)."""

    def __init__(self) -> None:
        self.enabled = (hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")
                        and os.environ.get("COCLI_FS_NO_CACHED_READS") != "1")
        # PyDLL keeps the GIL across the call: it cannot block, and letting the GIL go would
        # invite a worker thread to take it for its whole switch interval.
        self._syscall = ctypes.PyDLL(None, use_errno=True).syscall
        self._syscall.restype = ctypes.c_long
        # O_NOATIME, as ``helper.read_file``: reading a base to parse it is not a user's read
        # (and on a file never read since it was written, relatime would update the atime,
        # an ext4 journal transaction on the loop's thread). Dropped for good when refused
        # (EPERM: not our file, no CAP_FOWNER).
        # O_NONBLOCK: opening a FIFO put in the store under a base's name must not wait for
        # a writer (it has no effect on a regular file's reads).
        how = _OpenHow(os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | NOATIME, 0,
                       _RESOLVE_CACHED)
        self._how = how  # keeps the struct alive for the pointer below
        self._how_ref = ctypes.byref(how)
        self._how_size = ctypes.sizeof(how)
        self._buf = bytearray(1 << 16)
        self.hits = 0  # reads answered here (``status``: ``cached_reads``)
        self.misses = 0  # reads left to the caller (NotCached), while enabled

    def read(self, path: str) -> bytes | None:
        """The file's bytes, None when the cached path names no file; NotCached otherwise."""
        if not self.enabled:
            raise NotCached()
        try:
            data = self._read(path)
        except NotCached:
            self.misses += 1
            raise
        self.hits += 1
        return data

    def _read(self, path: str) -> bytes | None:
        name = os.fsencode(path)
        fd = self._syscall(_SYS_OPENAT2, _AT_FDCWD, name, self._how_ref, self._how_size)
        if fd < 0:
            err = ctypes.get_errno()
            if err == errno.EPERM and self._how.flags & NOATIME:
                self._how.flags &= ~NOATIME
                return self._read(path)
            if err in (errno.ENOENT, errno.ENOTDIR):
                return None  # a negative dentry answered: no such file
            if err in (errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.E2BIG):
                self.enabled = False  # no openat2 or no RESOLVE_CACHED (or a seccomp filter)
            raise NotCached()
        try:
            return self._read_fd(fd)
        finally:
            os.close(fd)

    def _read_fd(self, fd: int) -> bytes:
        buf = self._buf
        chunks: list[bytes] = []
        at = 0
        while True:
            try:
                n = os.preadv(fd, [buf], at, os.RWF_NOWAIT)
            except BlockingIOError:
                raise NotCached() from None
            except OSError as exc:
                # Not a regular file (a folder, a FIFO: the read off the loop gives the
                # error or waits), a read error (the same), or a file system that cannot
                # say "not cached": then none of its files can.
                if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL) and stat.S_ISREG(
                        os.fstat(fd).st_mode):
                    self.enabled = False
                raise NotCached() from None
            chunks.append(bytes(buf[:n]))
            at += n
            # A read ends inside a page only at the end of the file; one that ends on a page
            # boundary may have stopped at an uncached page, so the next read tells.
            if n % mmap.PAGESIZE or not n:
                break
            if at > LIMIT:
                raise NotCached()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


READER = Reader()


def read_files(paths: list[str]) -> list[bytes | None]:
    """The contents of small files (None where a path names no file), read on the calling
    thread only if no read can wait for the disk; NotCached otherwise, also for a read that
    fails (the read off the loop then gives the error)."""
    read = READER.read
    return [read(p) for p in paths]


def status() -> dict[str, object]:
    """``cocli-fs status``'s ``cached_reads``: on or off, and how the reads went."""
    return {"enabled": READER.enabled, "hits": READER.hits, "misses": READER.misses}
