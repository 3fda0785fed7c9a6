"""A helper process for the blocking file calls of the request path: the ``fdatasync`` of a
journal batch and the first read of an entity's base files, which it also parses.

Why a process. Under 16 writers the event loop runs nearly all the time, and what matters is
how long a ~0.2 ms ``fdatasync`` takes from the call until the loop has its result. Measured
with a spinning Python main thread standing in for the loop (``docs/benchmarks.md``,
session 9): in a worker thread 1.6 ms, since the thread needs the GIL at its wake-up, after
its system call and to hand the result over, and the spinning thread gives it up only every
switch interval; by Linux AIO 3.4 ms, since the kernel queues the work on the submitting CPU,
behind the spinning thread, until the scheduler's next tick; in a helper process 0.26 ms: it
has its own GIL and the scheduler runs it on the other CPU.

Protocol: a ``SOCK_SEQPACKET`` socket pair, one message per request or reply, descriptors
passed with ``SCM_RIGHTS``; and a counter in shared memory (a word of the run's ``Bell``) that
the helper raises after each reply, so the loop checks for replies after every request
(``offload.Completions``, pyfuse3 patch change 6) without a system call, and its poll for the
next request ends when the counter moves (change 8). An idle loop waits for the socket to
become readable.

If the helper dies, the calls in flight are redone in worker threads (both kinds are safe to
repeat) and a new helper is started, at most once a minute.
"""

from __future__ import annotations

import array
import contextlib
import errno
import logging
import marshal
import mmap
import os
import socket
import struct
import subprocess
import sys
import time
import weakref
from typing import Any

from .document import BaseDoc, shown_base_of
from .process import reap_child

log = logging.getLogger(__name__)

SYNC, BASE = 1, 2  # request kinds
REPLIES, THREADS = 0, 1  # the words of a Bell
# Request: id, kind; BASE: then b"1" (with tags.lst) or b"0", then the paths, NUL-separated.
# Reply: id, errno (0: done); BASE: then marshal.dumps((BaseDoc.packed(), problems)) of
# document.shown_base_of.
_REQ = struct.Struct("<QB")
_REP = struct.Struct("<Qi")
MAX_REPLY = 128 * 1024  # a reply must fit one datagram; larger files are read by the caller
RESTART_S = 60.0
# The helper's priority. Its work is a few hundred microseconds per call, and every writer in a
# batch waits for it: with both CPUs busy (the loop and the writers), at the default priority
# one call in ten waited for the scheduler's next tick, 3.2 ms; at -10, 0.47 ms (the 90th
# percentile of 100 calls, a spinning process on the other CPU; median ~0.3 ms either way).
NICE = -10


class HelperLost(Exception):
    """The helper ended before it replied: the caller makes the call itself."""


class Declined(Exception):
    """The helper left the call to the caller: files too large for one reply, or a parse
    that failed there in a way it cannot carry (the caller's own parse says why)."""


DECLINED = errno.EFBIG  # the reply's errno for Declined


# --- the mount's side ---------------------------------------------------------------------------


class Helper:
    """Starts the helper and keeps track of the calls in flight. Used from the event loop's
    thread only; a call's key is whatever the caller wants back with its result."""

    def __init__(self, bell: Bell) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._bell = bell  # word REPLIES counts the helper's replies
        self._words = bell.words
        self._seen = 0  # replies received
        self._next = 0
        self.pending: dict[int, tuple[object, int]] = {}  # request id -> (key, kind)
        self._started = 0.0
        self.restarts = 0
        self.lost = False
        # One receive buffer: a fresh one per reply would be allocated (and, at this size,
        # mapped and unmapped) for each.
        self._buf = bytearray(MAX_REPLY + 4096)

    def start(self) -> bool:
        """Start the helper process. False (and a log line) when it cannot be started."""
        self._started = time.monotonic()
        self.lost = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        shm = self._bell.fd
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "cocli_fs.helper", str(theirs.fileno()), str(shm)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True,
                pass_fds=(theirs.fileno(), shm),
            )
        except OSError as exc:
            log.warning("no helper process (%s): blocking calls use worker threads", exc)
            ours.close()
            return False
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._seen = self._words[REPLIES]
        return True

    @property
    def alive(self) -> bool:
        return self._sock is not None and not self.lost

    def fileno(self) -> int:
        """The socket an idle loop waits on (readable: replies, or the helper ended)."""
        assert self._sock is not None
        return self._sock.fileno()

    def ready(self) -> bool:
        """Replies wait to be collected (no system call: a read of shared memory)."""
        return self._sock is not None and self._words[REPLIES] != self._seen

    def submit_sync(self, fd: int, key: object) -> None:
        """Ask for ``fdatasync(fd)`` (the helper gets a duplicate of the descriptor; a sync
        covers the file, whichever descriptor asks)."""
        self._send(SYNC, b"", key, [fd])

    def submit_base(self, paths: list[str], tags: bool, key: object) -> None:
        """Ask for an entity's base document from its files, read and parsed by the helper:
        ``collect`` gives ``document.shown_base_of``'s (BaseDoc, problems). The parse is
        most of a first visit's cost on the event loop; in the helper it runs on the other
        CPU, and the loop only rebuilds the result (a fifth of the parse, measured)."""
        self._send(BASE, (b"1" if tags else b"0") + b"\0".join(os.fsencode(p) for p in paths),
                   key, [])

    def _send(self, kind: int, body: bytes, key: object, fds: list[int]) -> None:
        """Send a request under a new id. Raises OSError (and forgets the helper when it is
        gone) if the request cannot go."""
        sock = self._sock
        if sock is None or self.lost:
            raise OSError(errno.EPIPE, "no helper")
        self._next += 1
        msg = _REQ.pack(self._next, kind) + body
        try:
            if fds:
                sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      array.array("i", fds))])
            else:
                sock.send(msg)
        except BlockingIOError:
            raise  # its queue is full: this call goes to a thread
        except OSError:
            self._lost()
            raise
        self.pending[self._next] = (key, kind)

    def collect(self) -> list[tuple[object, Any]]:
        """The calls that ended: ``(key, result)``. A result is None (a sync), a
        ``(BaseDoc, problems)`` pair (a base) or an exception: OSError, ``Declined``,
        ``HelperLost``."""
        out: list[tuple[object, Any]] = []
        sock = self._sock
        buf = self._buf
        while sock is not None and not self.lost:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                break
            except OSError:
                n = 0
            if not n:  # the helper ended: its pending calls are redone by their callers
                out.extend((key, HelperLost()) for key, _ in self.pending.values())
                self._lost()
                break
            self._seen += 1
            msg = memoryview(buf)[:n]
            rid, err = _REP.unpack_from(msg)
            key, kind = self.pending.pop(rid, (None, 0))
            if key is None:
                continue
            if err:
                out.append((key, Declined() if err == DECLINED
                            else OSError(err, os.strerror(err))))
            elif kind == SYNC:
                out.append((key, None))
            else:
                packed, problems = marshal.loads(msg[_REP.size:])
                out.append((key, (BaseDoc(*packed), problems)))
        return out

    def _lost(self) -> None:
        """The helper is gone: no more requests. The socket stays open until ``restart`` or
        ``stop``, since the event loop may be waiting on it."""
        if not self.lost:
            log.error("helper process lost: its calls are redone in worker threads")
            self.lost = True
        self.pending.clear()

    def restart_wait(self) -> float:
        """Seconds until a lost helper may be replaced (at most one start a minute)."""
        return max(0.0, self._started + RESTART_S - time.monotonic())

    def restart(self) -> bool:
        """Replace a lost helper (the event loop must not be waiting on its socket)."""
        self.stop()
        self.restarts += 1
        return self.start()

    def stop(self) -> None:
        """Close the socket (which ends the helper) and reap it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._reap()

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            reap_child(proc)


class Bell:
    """A page of shared memory whose 64-bit words count finished calls: ``REPLIES``, raised by
    the helper process after each reply, and ``THREADS``, raised by worker threads after each
    result (``offload.in_thread``). The patched receive loop watches both while it polls for
    the next request (``fusepatch.set_spin_watch``). One per trio run; helpers started again
    after a loss share it."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("cocli-fs-bell", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, mmap.PAGESIZE)
            self.map = mmap.mmap(self.fd, mmap.PAGESIZE)
        except OSError:
            os.close(self.fd)
            raise
        self.words = memoryview(self.map).cast("Q")
        weakref.finalize(self, os.close, self.fd)  # the mapping closes itself

    def ring(self, word: int) -> None:
        self.words[word] += 1


# --- the helper process -------------------------------------------------------------------------


def serve(sock_fd: int, shm_fd: int) -> None:
    """The helper: answer requests until the socket closes (the mount ended or was killed)."""
    with contextlib.suppress(OSError):  # needs privilege (the mount usually runs as root)
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    sock = socket.socket(fileno=sock_fd)
    shm = mmap.mmap(shm_fd, mmap.PAGESIZE)
    os.close(shm_fd)
    count = memoryview(shm).cast("Q")  # the Bell's words
    fds_size = socket.CMSG_SPACE(array.array("i", [0]).itemsize)
    buf = bytearray(1 << 20)  # requests are a few paths at most
    while True:
        try:
            n, anc, _flags, _addr = sock.recvmsg_into([buf], fds_size)
        except InterruptedError:
            continue
        except OSError:
            return
        if not n:
            return
        rid, kind = _REQ.unpack_from(buf)
        fds = _fds(anc)
        try:
            reply = _answer(rid, kind, bytes(buf[_REQ.size:n]), fds)
        finally:
            for fd in fds:
                os.close(fd)
        try:
            sock.send(reply)
        except OSError:
            return
        count[REPLIES] += 1  # after the send: when the loop sees it, the reply is there


def _fds(anc: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def _answer(rid: int, kind: int, body: bytes, fds: list[int]) -> bytes:
    try:
        if kind == SYNC:
            if len(fds) != 1:
                return _REP.pack(rid, errno.EBADF)
            os.fdatasync(fds[0])
            return _REP.pack(rid, 0)
        if kind == BASE:
            files = [read_file(p, MAX_REPLY) for p in body[1:].split(b"\0")]
            if sum(len(f) for f in files if f is not None) > MAX_REPLY:
                return _REP.pack(rid, DECLINED)
            try:
                base, problems = shown_base_of(files, body[:1] == b"1")
                data = marshal.dumps((base.packed(), problems))
            except Exception:
                # A parser bug must not end the helper (nor a value marshal cannot carry):
                # the caller parses, and its error is answered and logged where the request is.
                return _REP.pack(rid, DECLINED)
            if _REP.size + len(data) > MAX_REPLY:
                return _REP.pack(rid, DECLINED)
            return _REP.pack(rid, 0) + data
        return _REP.pack(rid, errno.EINVAL)
    except OSError as exc:
        return _REP.pack(rid, exc.errno or errno.EIO)


_NOATIME = getattr(os, "O_NOATIME", 0)


def read_file(path: str | bytes, limit: int = 0) -> bytes | None:
    """A small file's bytes, None when the path names no file (ENOENT, ENOTDIR); other errors
    raise. With ``limit``, reading stops once more than that many bytes were read. One
    ``read`` for a file under 64 KiB (each cold entity reads two of these). Without updating
    the atime where we may (``O_NOATIME``): parsing a base is not a user's read."""
    global _NOATIME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | _NOATIME)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        if not _NOATIME:
            raise
        _NOATIME = 0  # not our file and no CAP_FOWNER: atimes move, as they did before
        return read_file(path, limit)
    try:
        data = os.read(fd, 1 << 16)
        if len(data) == 1 << 16:
            chunks = [data]
            size = len(data)
            while (not limit or size <= limit) and (chunk := os.read(fd, 1 << 20)):
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        serve(int(sys.argv[1]), int(sys.argv[2]))
