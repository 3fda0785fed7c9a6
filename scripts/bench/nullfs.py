#!/usr/bin/env python3
"""A FUSE file system that does no work, on the same stack as cocli-fs: the ceiling of that
stack (the kernel's FUSE round trips, pyfuse3 with our patch, trio) for a given request mix.

Every name is a folder except ``email``, which is an empty file; lookups, opens, writes,
flushes and releases succeed at once. With ``--lookup-store DATA``, a lookup of a name that is
a file at the same path in DATA answers that file's ``lstat`` instead (its size, times and
mode): the least work a file system over a store does for a first ``stat``, which
``fs.py --floor`` measures beside the others.

Mount options, idle workers, polling and cache timeouts are cocli-fs's defaults, so a
client's request sequence is the one it sends to cocli-fs.
``field_writes.py`` runs it beside cocli-fs (the write path's ceiling on this machine).

    .venv/bin/python scripts/bench/nullfs.py MNT [--lookup-store DATA]   # until unmounted
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

import pyfuse3
import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cocli_fs import fusepatch  # noqa: E402
from cocli_fs.config import MountConfig  # noqa: E402
from cocli_fs.mount import IDLE_WORKERS  # noqa: E402

FILE_NAME = b"email"


class NullOps(pyfuse3.Operations):
    def __init__(self, store: str | None = None) -> None:
        super().__init__()
        cfg = MountConfig()
        self.entry_timeout = cfg.entry_timeout
        self.attr_timeout = cfg.attr_timeout
        self.inodes: dict[tuple[int, bytes], int] = {}
        self.files: set[int] = set()
        self.store = store.encode() if store else None
        self.paths: dict[int, bytes] = {pyfuse3.ROOT_INODE: b""}  # with a store only

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = pyfuse3.InodeT(ino)
        a.st_mode = (stat.S_IFREG | 0o644) if ino in self.files else (stat.S_IFDIR | 0o755)
        a.st_nlink = 1
        a.entry_timeout = self.entry_timeout
        a.attr_timeout = self.attr_timeout
        return a

    async def lookup(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        ino = self.inodes.get((parent_inode, name))
        if ino is None:
            ino = self.inodes[(parent_inode, name)] = len(self.inodes) + 2
            if name == FILE_NAME:
                self.files.add(ino)
            if self.store is not None:
                self.paths[ino] = self.paths[parent_inode] + b"/" + name
        if self.store is not None:
            try:
                st = os.lstat(self.store + self.paths[ino])
            except OSError:
                st = None
            if st is not None and stat.S_ISREG(st.st_mode):
                return self._file_attr(ino, st)
        return self._attr(ino)

    def _file_attr(self, ino: int, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = self._attr(ino)
        a.st_mode = st.st_mode
        a.st_size = st.st_size
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        return a

    async def getattr(self, inode: pyfuse3.InodeT,
                      ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def open(self, inode: pyfuse3.InodeT, flags: int,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode)

    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        return len(buf)

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        pass

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        pass

    async def forget(self, inode_list: object) -> None:
        pass


async def serve(mnt: str, store: str | None) -> None:
    opts = set(pyfuse3.default_options) | {"fsname=nullfs"}
    pyfuse3.init(NullOps(store), mnt, opts)
    fusepatch.set_poll_spin(MountConfig().poll_spin_us)
    try:
        await pyfuse3.main(min_tasks=IDLE_WORKERS)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mnt")
    ap.add_argument("--lookup-store", metavar="DATA",
                    help="answer a lookup of a file in DATA with that file's lstat")
    args = ap.parse_args()
    trio.run(serve, args.mnt, args.lookup_store)
