#!/usr/bin/env python3
"""A FUSE file system that does no work, on the same stack as cocli-fs: the ceiling of that
stack (the kernel's FUSE round trips, pyfuse3 with our patch, trio) for a given request mix.

Every name is a folder except ``email``, which is an empty file; lookups, opens, writes,
flushes and releases succeed at once. Mount options, idle workers, polling and cache timeouts
are cocli-fs's defaults, so a client's request sequence is the one it sends to cocli-fs.
``field_writes.py`` runs it beside cocli-fs (the write path's ceiling on this machine).

    .venv/bin/python scripts/bench/nullfs.py MNT      # serves until unmounted
"""

from __future__ import annotations

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
    def __init__(self) -> None:
        super().__init__()
        cfg = MountConfig()
        self.entry_timeout = cfg.entry_timeout
        self.attr_timeout = cfg.attr_timeout
        self.inodes: dict[tuple[int, bytes], int] = {}
        self.files: set[int] = set()

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
        return self._attr(ino)

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


async def serve(mnt: str) -> None:
    opts = set(pyfuse3.default_options) | {"fsname=nullfs"}
    pyfuse3.init(NullOps(), mnt, opts)
    fusepatch.set_poll_spin(MountConfig().poll_spin_us)
    try:
        await pyfuse3.main(min_tasks=IDLE_WORKERS)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    trio.run(serve, sys.argv[1])
