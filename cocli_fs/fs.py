"""The pyfuse3 ``Operations``: translate kernel requests into the store, the scratch area and
journal records, as the routing table says. Everything else (parsing, merging, journaling,
scratch bookkeeping) lives in plain modules this class delegates to.

Choices that matter for speed (docs/mount.md has the measurements):
- inode numbers come from ``inodes.InodeTable`` and stay put while the kernel knows them;
- a directory listing is taken once per ``opendir`` handle, and readdir offsets are positions
  in it (O(1) per call, never a re-list of a 300,000-entry folder);
- pyfuse3 always answers READDIRPLUS, so each entry carries its attributes; entry and attribute
  timeouts come from the config and are invalidated when an entity changes;
- xattr requests get ENOSYS (the pyfuse3 default), which the kernel remembers;
- small files are read and stat'ed inline (a local ``pread`` of a few KB is cheaper than a
  thread hop); only copying a whole file (rename of a big temp file) goes through a thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from . import document as doc
from . import fusepatch, offload
from .document import TOMBSTONE, Change, DocumentError
from .inodes import InodeTable, Node
from .invalidation import Invalidator
from .listings import Listings
from .record import RecordError, check_text
from .routing import FIELD_RE, SLUG_RE, PathError, Route, Router, check_name, target_of
from .scratch import Scratch
from .state import NodeState, log_base_problems
from .views import EntityView, Views
from .walkahead import ReadAhead

log = logging.getLogger(__name__)

FUSEError = pyfuse3.FUSEError
ROUTED = (Route.INDEX, Route.TAGS, Route.FIELD)
VIRTUAL_DIR_MODE = stat.S_IFDIR | 0o755
VIRTUAL_FILE_MODE = stat.S_IFREG | 0o644
WRITE_BITS = 0o222
ENTITY_STAT_REUSE = 1.0  # seconds an entity folder's lstat is reused (see _entity_stat)


REFUSED = [0]  # refused operations since start (reported by ``status``)


def refuse(code: int, what: str, why: str) -> FUSEError:
    """Every refused operation leaves one log line saying what and why."""
    REFUSED[0] += 1
    log.warning("refused %s: %s (%s)", what, why, errno.errorcode.get(code, code))
    return FUSEError(code)


# --- open files ---------------------------------------------------------------------------------


@dataclass
class RealHandle:
    """A file in the store or in scratch: reads and writes go to the file itself."""

    node: Node
    fd: int
    store_rel: str | None  # path in DATA to mark dirty when written; None for scratch files
    append: bool = False
    wrote: bool = False


@dataclass
class BufferHandle:
    """An open ``_index.md`` / ``tags.lst`` / ``_fields/<f>`` being written: the bytes collect
    here and become journal records on flush (``close``) or fsync."""

    node: Node
    route: Route
    buf: bytearray
    append: bool = False
    dirty: bool = False  # written since the last commit
    # Created or truncated (O_TRUNC) but not written yet: a shell's ``> f`` closes a dup of the
    # fd (a FLUSH) before it writes, so this alone commits only at release ("" as the value).
    emptied: bool = False
    committed: bool = False
    # The last thing the kernel did with this file was a WRITE: it then marks its own cached
    # size and times stale and asks us again, so the commit needs no invalidation of this
    # inode when the committed value renders to exactly these bytes.
    wrote_last: bool = False


@dataclass
class MemHandle:
    """A synthesised file opened for reading: a snapshot of its rendered bytes."""

    node: Node
    data: bytes


Handle = RealHandle | BufferHandle | MemHandle


Listed = tuple[str, bool, int, int]
"""A listed name: (name, virtual, file type bits, d_ino of the backing file). The last two let
a plain folder be listed by name (``fusepatch.readdir_reply_name``) without an lstat per entry."""


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, state: NodeState, router: Router, scratch_grace: float = 2.0) -> None:
        super().__init__()
        self.state = state
        self.router = router
        self.data: Path = state.data.root
        self._data_s = str(state.data.root)  # str paths: pathlib costs µs per call, hot here
        self.table = InodeTable(router)
        self.views = Views(state)
        self.scratch = Scratch(state.data.private / "scratch", self.data, router, scratch_grace)
        self.entry_timeout = state.config.mount.entry_timeout
        self.attr_timeout = state.config.mount.attr_timeout
        self.dir_timeout = state.config.mount.dir_timeout
        self.handles: dict[int, Handle] = {}
        # The open buffers of each inode: what getattr and setattr look for, without a scan of
        # every handle (thousands when as many files are open).
        self.buffers: dict[int, list[BufferHandle]] = {}
        self.listings: Listings[Listed] = Listings()
        self.walk_ahead = ReadAhead(self._data_s)
        self.writers = 0  # open BufferHandles: appenders the journal may batch together
        self._next_fh = 1
        # Kernel cache invalidation for what changes behind the kernel's back.
        self.inval = Invalidator(self.table, self.views, router, self._data_s)
        state.listeners.append(self.inval.on_records)
        state.file_listeners.append(self.inval.on_files)
        # (monotonic time, lstat) of entity folders looked at just now (see _entity_stat)
        self._entity_stats: dict[tuple[str, str], tuple[float, os.stat_result]] = {}
        state.file_listeners.append(self._folders_changed)
        # Entity folders without overlay fields, by inode: the node's parts when named (its
        # path below ``fast_root``; the node's own tuple, so ~40 bytes an entry). The patched
        # pyfuse3 looks up their files named in ``fast_names`` itself (patch change 9,
        # ``fast_entry``). Stale entries are harmless: ``fast_entry`` declines them.
        self.fast_root = _b(self._data_s + "/")
        self.fast_dirs: dict[int, tuple[str, ...]] = {}
        self.fast_lookups = 0  # answered so (status --json: fast_lookups)
        # Empty (nothing named, no fast lookups) without the patch or with [mount] fast_lookup
        # off, and when a routing rule could tell one entity's _index.md from another's.
        self.fast_names = frozenset(
            _b(n) for n in (doc.INDEX, doc.TAGS_FILE)
            if router.same_in_every_entity(n) in (Route.INDEX, Route.TAGS)
        ) if fusepatch.FAST_LOOKUP and state.config.mount.fast_lookup else frozenset()

    # -- background tasks ------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Invalidation and scratch promotion; started in the mount's nursery."""
        self.scratch.recover(self._promote)
        self.walk_ahead.start()
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self.inval.run)
                n.start_soon(self._promoter)
                task_status.started()
        finally:
            self.walk_ahead.stop()

    @property
    def refused(self) -> int:
        return REFUSED[0]

    def shutdown(self) -> None:
        """Unmount: every pending file still in scratch goes to the store."""
        for parts in self.scratch.due(everything=True):
            with contextlib.suppress(OSError):
                self._promote(parts)

    async def _promoter(self) -> None:
        while True:
            await trio.sleep(min(0.5, max(self.scratch.grace / 2, 0.05)))
            for parts in self.scratch.due():
                node = self.table.known(parts)
                if node is not None and node.opens > 0:
                    continue
                try:
                    self._promote(parts)
                except OSError as exc:
                    log.error("could not move %s from scratch into the store: %s", _rel(parts), exc)

    def _promote(self, parts: tuple[str, ...]) -> None:
        self.scratch.move_to_store(parts)
        self._folders_changed()
        self.state.dirty.mark(_rel(parts))

    # -- paths and attributes --------------------------------------------------------------------

    def _node(self, ino: int) -> Node:
        node = self.table.get(ino)
        if node is None:
            raise FUSEError(errno.ENOENT)
        return node

    def _real(self, parts: tuple[str, ...]) -> str:
        if parts in self.scratch.files:
            return str(self.scratch.path(parts))
        return self._data_s + "/" + "/".join(parts) if parts else self._data_s

    def _route(self, node: Node) -> Route:
        return self.table.route(node)

    def _name(self, parent: Node, raw: bytes, creating: bool = False) -> str:
        name = raw.decode("utf-8", "surrogateescape")
        try:
            check_name(name)
            if (
                len(parent.parts) == 1
                and parent.parts[0] in self.router.kinds
                and not SLUG_RE.match(name)
            ):
                raise PathError(f"{name!r} is not a valid slug")
        except PathError as exc:
            if creating:
                where = _rel((*parent.parts, name))
                raise refuse(errno.EINVAL, f"name {where}", str(exc)) from None
            raise FUSEError(errno.ENOENT) from None
        return name

    def _mk(self, ino: int, st: os.stat_result | None, mode: int, size: int, nlink: int = 1,
            mtime_ns: int = 0) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        self._timeouts(a, mode)
        a.st_mode = mode
        a.st_nlink = nlink
        a.st_size = size
        a.st_blksize = 4096
        a.st_blocks = (size + 511) // 512
        if st is not None:
            a.st_uid, a.st_gid = st.st_uid, st.st_gid
            m = max(st.st_mtime_ns, mtime_ns)
            a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = st.st_atime_ns, m, max(st.st_ctime_ns, m)
        return a

    def _timeouts(self, a: pyfuse3.EntryAttributes, mode: int) -> None:
        """How long the kernel may keep the name and attributes: folders ``dir_timeout``."""
        if stat.S_ISDIR(mode):
            a.entry_timeout = a.attr_timeout = self.dir_timeout
        else:
            a.entry_timeout = self.entry_timeout
            a.attr_timeout = self.attr_timeout

    def _from_stat(self, ino: int, st: os.stat_result, route: Route) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        mode = st.st_mode
        self._timeouts(a, mode)
        nlink = st.st_nlink
        if route is Route.READONLY:
            mode &= ~WRITE_BITS
        a.st_mode = mode
        a.st_nlink = nlink
        a.st_uid = st.st_uid
        a.st_gid = st.st_gid
        a.st_rdev = st.st_rdev
        a.st_size = st.st_size
        a.st_blksize = st.st_blksize
        a.st_blocks = st.st_blocks
        a.st_atime_ns = st.st_atime_ns
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        return a

    def _entity_stat(self, parts: tuple[str, ...]) -> os.stat_result:
        """The entity folder's lstat, which ``_fields/`` and the synthesised files take their
        owner and times from. One field write asks for it three or four times within
        milliseconds (lookups of the entity, ``_fields/`` and the field, a getattr), so a
        result is reused for ``ENTITY_STAT_REUSE`` seconds, far less than the kernel itself
        keeps those attributes; every change of a folder through the mount, a pull or a
        compaction forgets them all (``_folders_changed``)."""
        key = (parts[0], parts[1])
        now = time.monotonic()
        hit = self._entity_stats.get(key)
        if hit is not None and now - hit[0] < ENTITY_STAT_REUSE:
            return hit[1]
        try:
            st = os.lstat(f"{self._data_s}/{parts[0]}/{parts[1]}")
        except OSError:
            raise FUSEError(errno.ENOENT) from None
        self._remember_entity_stat(key, st, now)
        return st

    def _remember_entity_stat(self, key: tuple[str, str], st: os.stat_result, now: float
                              ) -> None:
        if len(self._entity_stats) >= 4096:
            self._entity_stats.clear()
        self._entity_stats[key] = (now, st)

    def _folders_changed(self, *_: object) -> None:
        """A folder may have changed (an entry added, removed or renamed, its mode or times
        set): lstat entity folders afresh."""
        self._entity_stats.clear()

    def _synth(self, node: Node) -> bytes | None:
        """Rendered bytes of a synthesised file, or None when the real file is served."""
        route = self._route(node)
        parts = node.parts
        target = target_of(parts)
        if route is Route.FIELD:
            b = self.views.field_bytes(target, parts[3])
            if b is None:
                raise FUSEError(errno.ENOENT)
            return b
        if not self.views.has_overlay(target):
            return None
        if route is Route.INDEX:
            return self.views.index_bytes(target)
        return self.views.get(target).tags

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        route = self._route(node)
        parts = node.parts
        if route is Route.PRIVATE:
            raise FUSEError(errno.EACCES)
        if route is Route.INVALID:
            raise FUSEError(errno.ENOENT)
        if route is Route.FIELDS_DIR:
            st = self._entity_stat(parts)
            if not stat.S_ISDIR(st.st_mode):
                raise FUSEError(errno.ENOENT)
            return self._mk(node.ino, st, VIRTUAL_DIR_MODE, 0, nlink=2)
        if route in ROUTED:
            data = self._synth(node)
            if data is not None:
                return self._view_file_attr(node, len(data))
        return self._store_attr(node, route)

    def _store_attr(self, node: Node, route: Route) -> pyfuse3.EntryAttributes:
        """Attributes of a node served from the store as it is: its file's ``lstat``."""
        parts = node.parts
        try:
            st = os.lstat(self._real(parts))
        except OSError:
            raise FUSEError(errno.ENOENT) from None
        if route is Route.ENTITY:
            self._remember_entity_stat((parts[0], parts[1]), st, time.monotonic())
        return self._from_stat(node.ino, st, route)

    def _view_file_attr(self, node: Node, size: int) -> pyfuse3.EntryAttributes:
        """A synthesised file of ``size`` bytes: owner and times of its entity folder, modified
        no earlier than the entity's newest overlay record."""
        st = self._entity_stat(node.parts)
        return self._mk(node.ino, st, VIRTUAL_FILE_MODE, size,
                        mtime_ns=self.views.mtime_ns(target_of(node.parts)))

    def _exists(self, node: Node) -> bool:
        try:
            self._attr(node)
        except FUSEError:
            return False
        return True

    # -- lookups ---------------------------------------------------------------------------------

    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        # Set when the node is known to be a store file served as it is (the common first
        # `stat` of an entity's file): its attributes are its lstat, without `_attr`'s
        # dispatch. After a cold lstat every step of a lookup runs on cold CPU caches, at two
        # to four times its warm cost (docs/benchmarks.md, session 13).
        plain: Route | None = None
        if name == b".":
            node = parent
        elif name == b"..":
            node = parent.parent or parent
        else:
            s = self._name(parent, name)
            virtual = _is_virtual(self.router, parent, s)
            node = self.table.child(parent, s, virtual=virtual)
            if len(node.parts) == 2:
                if self._route(node) is Route.ENTITY:
                    self._entity_seen(node)
            elif len(node.parts) == 3:
                route = self._route(node)
                if route is Route.STORE:
                    plain = route
                elif route is Route.FIELDS_DIR:
                    if not self.views.loaded(target_of(node.parts)):
                        self.walk_ahead.wanted(*parent.parts)  # a field's lookup follows
                elif route is Route.INDEX or route is Route.TAGS:
                    target = target_of(node.parts)
                    if not self.views.has_overlay(target):
                        plain = route
                    elif not self.views.loaded(target):
                        # A view: its size needs the base parsed. Read off the loop when
                        # the page cache lacks it, as for a field.
                        await self._load_base(target, route is Route.TAGS)
                        node = self.table.child(parent, s, virtual=virtual)
            elif len(node.parts) == 4 and self._route(node) is Route.FIELD:
                target = target_of(node.parts)
                if self.views.reads_store(target, s):
                    await self._load_base(target, s == doc.TAGS)
                    # the node may have been dropped meanwhile (a failed lookup of the name)
                    node = self.table.child(parent, s, virtual=True)
        try:
            attr = self._attr(node) if plain is None else self._store_attr(node, plain)
        except FUSEError:
            if node.lookups <= 0 and node.opens <= 0 and node is not self.table.root:
                self.table.forget(node.ino, 0)
            raise
        node.lookups += 1
        return attr

    def _entity_seen(self, node: Node) -> None:
        """An entity folder was listed or looked up.

        If its ``_index.md`` is a view (the entity has overlay fields), the first ``stat`` or
        read of it parses the base: a cold read of the file after the ``lstat`` that any
        ``stat`` pays, which made such a ``stat`` two to three times as slow as others. The
        walk-ahead child fetches the file now (``wanted``), so that read finds it in the page
        cache. Otherwise its ``_index.md`` and ``tags.lst`` are the store's files as they are,
        and the patched pyfuse3 may look them up without a handler (``fast_dirs``)."""
        kind, slug = node.parts
        target = target_of(node.parts)
        if self.views.has_overlay(target):
            if not self.views.loaded(target):
                self.walk_ahead.wanted(kind, slug)
        elif self.fast_names:
            self.fast_dirs[node.ino] = node.parts

    def fast_entry(self, parent_ino: int, name: bytes, parts: tuple[str, ...]) -> int:
        """Patch change 9 found ``name`` (one of ``fast_names``) in the entity folder
        ``parent_ino`` by ``lstat``: the inode number it answers, with the lookup counted,
        as ``lookup`` would. 0 declines (``lookup`` runs): the folder was forgotten or moved
        since it was named in ``fast_dirs``, or its entity has overlay fields now."""
        parent = self.table.nodes.get(parent_ino)
        if parent is None or parent.parts is not parts or self.views.has_overlay(
                target_of(parts)):
            self.fast_dirs.pop(parent_ino, None)
            return 0
        node = self.table.child(parent, name.decode())
        node.lookups += 1
        self.fast_lookups += 1
        return node.ino

    async def _load_base(self, target: str, tags: bool) -> None:
        """Read and parse an entity's base files without waiting for the disk on the loop,
        and keep the parsed base. A field's lookup is the first to need them (or, with
        overlay fields, the lookup of ``_index.md`` or ``tags.lst``: views), and cold, that
        read stopped the event loop — every other writer's request — for the disk
        (300,000 entities, 16 writers: about 70 us per first visit). ``offload.load_base``
        reads and parses them here when the page cache has them, else in the helper process.
        If the entity changed meanwhile, or the read failed, the caller's own read runs as
        before."""
        gen = self.views.generation(target)
        try:
            base, problems = await offload.load_base(self.state.base_paths(target, tags), tags)
        except OSError:
            return  # the caller's read on the loop raises it where it is answered
        log_base_problems(target, problems)
        if self.views.generation(target) == gen:
            self.views.put_base(target, base)

    async def forget(self, inode_list: Iterable[tuple[pyfuse3.InodeT, int]]) -> None:
        nodes = self.table.nodes
        for ino, n in inode_list:
            self.table.forget(ino, n)
            if ino not in nodes:
                self.fast_dirs.pop(ino, None)

    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        for h in self.buffers.get(node.ino, ()):
            # an open buffer shows its own size while it is written
            if h.dirty or h.emptied:
                h.wrote_last = False  # the kernel now caches this size
                if h.route is Route.FIELD:
                    # What _attr gives but the size, without rendering the value whose size
                    # is replaced (``fstat`` right after ``open(O_TRUNC)``).
                    return self._view_file_attr(node, len(h.buf))
                a = self._attr_or_blank(node)
                a.st_size = len(h.buf)
                return a
        return self._attr(node)

    def _attr_or_blank(self, node: Node) -> pyfuse3.EntryAttributes:
        try:
            return self._attr(node)
        except FUSEError:
            st = self._entity_stat(node.parts)
            return self._mk(node.ino, st, VIRTUAL_FILE_MODE, 0)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = os.statvfs(self.data)
        out = pyfuse3.StatvfsData()
        for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                  "f_ffree", "f_favail", "f_namemax"):
            setattr(out, k, getattr(s, k))
        return out

    # -- directories -----------------------------------------------------------------------------

    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        node = self._node(inode)
        if self._route(node) is Route.PRIVATE:
            raise FUSEError(errno.EACCES)
        if fusepatch.NO_OPENDIR:
            # The kernel remembers this for the mount: no OPENDIR/RELEASEDIR from now on (two
            # of the five requests per folder of a ``find``), and it caches listings itself
            # (``invalidation.Invalidator`` drops those it changes).
            raise FUSEError(errno.ENOSYS)
        return pyfuse3.FileHandleT(inode)  # readdir lists by inode either way

    def _listing(self, node: Node) -> list[Listed]:
        """Every name in a folder, once per directory read (readdir offsets index into this)."""
        route = self._route(node)
        parts = node.parts
        if route is Route.PRIVATE:
            raise FUSEError(errno.EACCES)
        if route is Route.FIELDS_DIR:
            v = self.views.get(target_of(parts))
            return [(n, True, stat.S_IFREG, 0) for n in v.field_names() if FIELD_RE.match(n)]
        try:
            with os.scandir(self._real(parts)) as it:
                out: list[Listed] = [(e.name, False, _type_bits(e), e.inode()) for e in it]
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None
        if route is Route.ROOT:
            out = [x for x in out if x[0] != ".cocli-fs"]
        extra = self.scratch.names_in(parts) if self.scratch.files else []
        if extra:
            have = {x[0] for x in out}
            for n in extra:
                if n not in have:
                    with contextlib.suppress(OSError):
                        st = os.lstat(self.scratch.path((*parts, n)))
                        out.append((n, False, stat.S_IFMT(st.st_mode), st.st_ino))
        if route is Route.ENTITY:
            have = {x[0] for x in out}
            # View-only files: the overlay alone may make an absent _index.md or tags.lst
            # appear. Only then is the entity's view needed (a parse: a walk over entities
            # with overlay fields would otherwise parse every one of them).
            if (doc.INDEX not in have or doc.TAGS_FILE not in have) and self.views.has_overlay(
                target := target_of(parts)
            ):
                v = self.views.get(target)
                if doc.INDEX not in have and v.index is not None:
                    out.append((doc.INDEX, False, stat.S_IFREG, 0))
                if doc.TAGS_FILE not in have and v.tags is not None:
                    out.append((doc.TAGS_FILE, False, stat.S_IFREG, 0))
            # ``_fields/`` is not listed (like ZFS's hidden ``.zfs``): it is reached by name.
            # Listed, ``cp -r``/``rm -r`` of an entity would write or tombstone every field
            # and ``grep -r``/``find`` would see each value twice.
        return out

    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        # The handle is the folder's inode (see ``opendir``); offsets name a snapshot of the
        # listing taken when the read started (``listings``).
        parent = self._node(fh)
        proute = self._route(parent)
        got = self.listings.resume(parent.ino, start_id) if start_id else None
        if got is None:
            # A new read (or one whose snapshot was evicted). "." and ".." first, as a local
            # folder lists them (``ls -a``); the kernel creates nothing for these two names.
            up = parent.parent or parent
            names = [(".", False, stat.S_IFDIR, parent.ino), ("..", False, stat.S_IFDIR, up.ino),
                     *self._listing(parent)]
            gen = self.listings.start(parent.ino, names)
            start_id = Listings.index_of(start_id)
            parent.listed = True
            if proute is Route.ENTITY and len(parent.parts) == 2:
                self.walk_ahead.visited(*parent.parts)
        else:
            gen, names, start_id = got
        if start_id >= len(names):
            self.listings.drop(parent.ino, gen)  # read to the end
            return
        table = self.table
        offset = Listings.offset
        reply_name = fusepatch.readdir_reply_name
        while start_id < 2:  # "." and "..": never lookups (libfuse: no lookup count for them)
            name, _v, _k, d_ino = names[start_id]
            if reply_name is not None:
                sent = reply_name(token, _b(name), d_ino, stat.S_IFDIR, offset(gen, start_id))
            else:  # the stock API sends attributes with every entry
                node = parent if start_id == 0 else (parent.parent or parent)
                sent = pyfuse3.readdir_reply(token, _b(name), self._attr(node),
                                             offset(gen, start_id))
            if not sent:
                return
            start_id += 1
        if reply_name is not None and proute in (Route.ENTITY, Route.STORE, Route.READONLY):
            # Below the kind folders: names and types only; the kernel looks up what is used.
            # A walk (find, grep -r) then pays no lstat per file and no render of a merged
            # _index.md just for its size. ``companies/`` itself keeps its attributes:
            # ``ls -l`` of it needs every one.
            for i in range(start_id, len(names)):
                name, _virtual, kind, d_ino = names[i]
                if not reply_name(token, _b(name), d_ino or 1, kind, offset(gen, i)):
                    return
            return
        # In a kind folder or a plain store folder, every entry is a plain file or folder
        # whose attributes are its lstat: skip the route (a regex) for each of the 300,000
        # entries of companies/; it is computed when the entry is used.
        plain = proute in (Route.KIND, Route.STORE, Route.READONLY) or (
            # an entity without overlay entries shows its files as they are in the store
            proute is Route.ENTITY and not self.views.has_overlay(target_of(parent.parts))
        )
        ro = proute is Route.READONLY
        in_kind_folder = proute is Route.KIND
        for i in range(start_id, len(names)):
            name, virtual, _kind, _ino = names[i]
            child = table.child(parent, name, virtual)
            if in_kind_folder:
                self._entity_seen(child)
            try:
                if plain:
                    try:
                        st = os.lstat(self._real(child.parts))
                    except OSError:
                        raise FUSEError(errno.ENOENT) from None
                    attr = self._from_stat(child.ino, st, Route.READONLY if ro else Route.STORE)
                else:
                    attr = self._attr(child)
            except FUSEError:
                if child.lookups <= 0 and child.opens <= 0:
                    table.forget(child.ino, 0)
                continue  # vanished since the listing was taken
            if not pyfuse3.readdir_reply(token, _b(name), attr, offset(gen, i)):
                if child.lookups <= 0 and child.opens <= 0:
                    table.forget(child.ino, 0)
                return
            child.lookups += 1  # readdirplus entries count as lookups

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        return None  # nothing is held per open folder

    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        return None

    async def mkdir(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._folders_changed()
        parent = self._node(parent_inode)
        s = self._name(parent, name, creating=True)
        node = self.table.child(parent, s, _is_virtual(self.router, parent, s))
        route = self._route(node)
        what = f"mkdir {_rel(node.parts)}"
        self._check_writable(route, what, node.parts)
        if route in (Route.FIELDS_DIR, *ROUTED):
            raise refuse(errno.EEXIST if route is Route.FIELDS_DIR else errno.EINVAL, what,
                         "a name the mount manages")
        if route is Route.INVALID:
            raise refuse(errno.EINVAL, what, "no folders inside _fields/")
        try:
            os.mkdir(self.data.joinpath(*node.parts), mode & 0o7777)
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None
        attr = self._attr(node)
        node.lookups += 1
        return attr

    async def rmdir(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                    ctx: pyfuse3.RequestContext) -> None:
        self._folders_changed()
        parent = self._node(parent_inode)
        s = self._name(parent, name)
        node = self.table.child(parent, s, _is_virtual(self.router, parent, s))
        route = self._route(node)
        what = f"rmdir {_rel(node.parts)}"
        self._check_writable(route, what, node.parts)
        if route is Route.FIELDS_DIR:
            return None  # the field view always exists; removing it is a no-op (rm -r works)
        sdir = self.scratch.path(node.parts)
        if self.scratch.names_in(node.parts):
            raise FUSEError(errno.ENOTEMPTY)
        try:
            os.rmdir(self.data.joinpath(*node.parts))
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None
        with contextlib.suppress(OSError):
            sdir.rmdir()
        self.table.detach(node)

    # -- routing checks --------------------------------------------------------------------------

    def _check_writable(self, route: Route, what: str, parts: tuple[str, ...]) -> None:
        if route is Route.READONLY:
            raise refuse(errno.EROFS, what, "wal/ is read-only")
        if route is Route.PRIVATE:
            raise refuse(errno.EACCES, what, "private state of the mount")
        if route is Route.INVALID:
            raise refuse(errno.EINVAL, what, "not a valid path here")
        if route in (Route.ROOT, Route.KIND) and not parts:
            raise refuse(errno.EPERM, what, "the mount root")
        if len(parts) == 1 and route is not Route.KIND and route is not Route.SCRATCH:
            raise refuse(errno.EINVAL, what, f"unknown entity kind {parts[0]!r}")

    def _is_pending_name(self, parts: tuple[str, ...], route: Route) -> bool:
        """A new regular file at an entity's top level under a non-routed name."""
        return (
            route is Route.STORE
            and len(parts) == 3
            and parts[0] in self.router.kinds
        )

    # -- files: create / open --------------------------------------------------------------------

    def _new_fh(self, h: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = h
        if isinstance(h, BufferHandle):
            self.writers += 1
            self.buffers.setdefault(h.node.ino, []).append(h)
        return fh

    def company(self) -> bool:
        """Is another routed file open for writing (an append that may join the next batch)?"""
        return self.writers > 1

    async def create(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, mode: int,
                     flags: int, ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._folders_changed()
        parent = self._node(parent_inode)
        s = self._name(parent, name, creating=True)
        node = self.table.child(parent, s, _is_virtual(self.router, parent, s))
        route = self._route(node)
        parts = node.parts
        what = f"create {_rel(parts)}"
        self._check_writable(route, what, parts)
        if route in (Route.FIELDS_DIR, Route.ENTITY, Route.KIND):
            raise refuse(errno.EISDIR, what, "a folder the mount manages")
        if len(parts) >= 2 and parts[0] in self.router.kinds and not os.path.isdir(
            self.data.joinpath(parts[0], parts[1])
        ):
            raise FUSEError(errno.ENOENT)
        if route in ROUTED and self._buffered(node, route):
            if route is Route.FIELD and not FIELD_RE.match(parts[3]):
                raise refuse(errno.EINVAL, what, "not a valid field name")
            h: Handle = BufferHandle(node, route, bytearray(), emptied=True)
        else:
            h = self._create_real(node, route, mode, flags, what)
        node.opens += 1
        node.lookups += 1
        fh = self._new_fh(h)
        attr = self._attr_or_blank(node) if isinstance(h, BufferHandle) else self._attr(node)
        if isinstance(h, BufferHandle):
            attr.st_size = 0
        return pyfuse3.FileInfo(fh=fh), attr

    def _create_real(
        self, node: Node, route: Route, mode: int, flags: int, what: str
    ) -> RealHandle:
        parts = node.parts
        if route is Route.SCRATCH:
            path, store_rel = self.scratch.add(parts, pending=False), None
        elif self._is_pending_name(parts, route) and not (self.data.joinpath(*parts)).exists():
            path, store_rel = self.scratch.add(parts, pending=True), None
        else:
            path, store_rel = self.data.joinpath(*parts), _rel(parts)
        fl = (flags & ~(os.O_APPEND)) | os.O_CREAT | os.O_CLOEXEC
        fl = (fl & ~os.O_ACCMODE) | os.O_RDWR
        try:
            fd = os.open(path, fl, mode & 0o7777)
        except OSError as exc:
            if store_rel is None:
                self.scratch.discard(parts)
            raise FUSEError(exc.errno or errno.EIO) from None
        if route in (Route.INDEX, Route.TAGS):
            self.views.drop(target_of(parts))
        h = RealHandle(node, fd, store_rel, append=bool(flags & os.O_APPEND), wrote=True)
        return h

    def _buffered(self, node: Node, route: Route) -> bool:
        """Does a write to this routed file become records (True) or a base file (False)?

        ``_index.md`` goes to the store while the entity has no base ``_index.md`` (it creates
        the entity); ``tags.lst`` while the entity has neither a base ``tags.lst`` nor a
        ``tags`` field; ``_fields/*`` always becomes records."""
        if route is Route.FIELD:
            return True
        parts = node.parts
        if route is Route.INDEX:
            return os.path.exists(self.data.joinpath(*parts))
        if os.path.exists(self.data.joinpath(*parts)):
            return True
        return doc.TAGS in self.views.get(target_of(parts)).fields

    async def open(self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
                   ) -> pyfuse3.FileInfo:
        node = self._node(inode)
        route = self._route(node)
        parts = node.parts
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        what = f"open {_rel(parts)} for writing"
        if writing:
            self._check_writable(route, what, parts)
        elif route is Route.PRIVATE:
            raise FUSEError(errno.EACCES)
        keep = True
        h: Handle
        if route in ROUTED:
            if writing and route is Route.FIELD and flags & os.O_TRUNC:
                data: bytes | None = b""  # replaced entirely: no need to render the value
            else:
                try:
                    data = self._synth(node)
                except FUSEError:
                    if not (writing and route is Route.FIELD):
                        raise
                    data = b""  # a field another writer created and has not committed yet
            if writing and self._buffered(node, route):
                if flags & os.O_TRUNC:
                    buf = bytearray()
                elif data is not None:
                    buf = bytearray(data)
                else:
                    buf = bytearray(self._read_real(parts))
                h = BufferHandle(node, route, buf, append=bool(flags & os.O_APPEND),
                                 emptied=bool(flags & os.O_TRUNC))
                keep = False
            elif data is not None:
                h = MemHandle(node, data)
                gen = self.views.generation(target_of(parts))
                keep = node.seen == gen
                node.seen = gen
            else:
                h = self._open_real(node, route, flags)
        else:
            h = self._open_real(node, route, flags)
            if writing:
                keep = False
        node.opens += 1
        self.scratch.reopened(parts)
        fh = self._new_fh(h)
        if writing:
            return pyfuse3.FileInfo(fh=fh, keep_cache=keep)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, **fusepatch.NOFLUSH)

    def _read_real(self, parts: tuple[str, ...]) -> bytes:
        try:
            with open(self._real(parts), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def _open_real(self, node: Node, route: Route, flags: int) -> RealHandle:
        parts = node.parts
        in_scratch = parts in self.scratch.files
        fl = (flags & ~(os.O_APPEND | os.O_CREAT | os.O_EXCL)) | os.O_CLOEXEC
        try:
            fd = os.open(self._real(parts), fl)
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None
        store_rel = None if in_scratch else _rel(parts)
        wrote = bool(flags & os.O_TRUNC) and store_rel is not None
        if (flags & os.O_ACCMODE) != os.O_RDONLY and route in (Route.INDEX, Route.TAGS):
            self.views.drop(target_of(parts))
        return RealHandle(node, fd, store_rel, append=bool(flags & os.O_APPEND), wrote=wrote)

    # -- files: read / write ---------------------------------------------------------------------

    def _handle(self, fh: int) -> Handle:
        h = self.handles.get(fh)
        if h is None:
            raise FUSEError(errno.EBADF)
        return h

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        h = self._handle(fh)
        if isinstance(h, RealHandle):
            try:
                return os.pread(h.fd, size, off)
            except OSError as exc:
                raise FUSEError(exc.errno or errno.EIO) from None
        data = h.data if isinstance(h, MemHandle) else h.buf
        return bytes(data[off : off + size])

    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        h = self._handle(fh)
        if isinstance(h, RealHandle):
            try:
                if h.append:
                    off = os.fstat(h.fd).st_size
                n = os.pwrite(h.fd, buf, off)
            except OSError as exc:
                raise FUSEError(exc.errno or errno.EIO) from None
            h.wrote = True
            return n
        if isinstance(h, MemHandle):
            raise FUSEError(errno.EBADF)
        if h.append:
            off = len(h.buf)
        if off > len(h.buf):
            h.buf.extend(b"\0" * (off - len(h.buf)))
        h.buf[off : off + len(buf)] = buf
        h.dirty = True
        h.wrote_last = True
        return len(buf)

    async def setattr(self, inode: pyfuse3.InodeT, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: pyfuse3.FileHandleT | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._folders_changed()
        node = self._node(inode)
        route = self._route(node)
        parts = node.parts
        h = self.handles.get(fh) if fh is not None else None
        what = f"setattr {_rel(parts)}"
        if route in (Route.READONLY, Route.PRIVATE):
            self._check_writable(route, what, parts)
        if isinstance(h, BufferHandle):
            h.wrote_last = False
            if fields.update_size:
                del h.buf[attr.st_size :]
                if attr.st_size > len(h.buf):
                    h.buf.extend(b"\0" * (attr.st_size - len(h.buf)))
                h.dirty = True
            a = self._attr_or_blank(node)
            a.st_size = len(h.buf)
            return a
        if route in ROUTED or route is Route.FIELDS_DIR:
            if fields.update_size:
                # open(O_TRUNC) arrives as open + a setattr without a handle: truncate the
                # open buffers; only a truncate(2) of a file nobody has open commits at once.
                bufs = self.buffers.get(node.ino, [])
                for b in bufs:
                    b.wrote_last = False
                    del b.buf[attr.st_size :]
                    if attr.st_size == 0 and not b.dirty:
                        b.emptied = True
                    else:
                        b.dirty = True
                if not bufs and self._synth_or_none(node) is not None:
                    await self._truncate_routed(node, route, attr.st_size)
            return self._attr_or_blank(node)
        path = self._real(parts)
        store = parts not in self.scratch.files
        try:
            if fields.update_size:
                if isinstance(h, RealHandle):
                    os.ftruncate(h.fd, attr.st_size)
                    h.wrote = True
                else:
                    os.truncate(path, attr.st_size)
                    if store:
                        self.state.dirty.mark(_rel(parts))
            if fields.update_mode:
                os.chmod(path, stat.S_IMODE(attr.st_mode))
            if fields.update_uid or fields.update_gid:
                os.chown(path, attr.st_uid if fields.update_uid else -1,
                         attr.st_gid if fields.update_gid else -1, follow_symlinks=False)
            if fields.update_atime or fields.update_mtime:
                st = os.lstat(path)
                os.utime(path, ns=(
                    attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                    attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns,
                ), follow_symlinks=False)
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None
        if route in (Route.INDEX, Route.TAGS):
            self.views.drop(target_of(parts))
        return self._attr(node)

    def _synth_or_none(self, node: Node) -> bytes | None:
        try:
            return self._current_bytes(node)
        except FUSEError:
            return None

    def _current_bytes(self, node: Node) -> bytes:
        data = self._synth(node) if self._route(node) in ROUTED else None
        return data if data is not None else self._read_real(node.parts)

    async def _truncate_routed(self, node: Node, route: Route, size: int) -> None:
        """``truncate -s N`` on a routed file without an open handle: commit at once."""
        if route is Route.FIELDS_DIR:
            raise FUSEError(errno.EISDIR)
        if not self._buffered(node, route):
            try:
                os.truncate(self.data.joinpath(*node.parts), size)
            except OSError as exc:
                raise FUSEError(exc.errno or errno.EIO) from None
            self.state.dirty.mark(_rel(node.parts))
            return
        cur = self._current_bytes(node)
        await self._commit(node, route, cur[:size] + b"\0" * max(0, size - len(cur)))

    # -- commit: bytes written to a routed file -> journal records --------------------------------

    async def _commit(self, node: Node, route: Route, data: bytes, wrote_last: bool = False
                      ) -> None:
        """Records for bytes written to a routed file, durable and shown by the kernel when
        this returns. ``wrote_last``: the kernel's last act on the file was our WRITE of
        ``data`` (``Invalidator.spare_written``)."""
        parts = node.parts
        target = target_of(parts)
        try:
            text = data.decode("utf-8")
            changes = self._changes(target, route, parts, text)
            if changes:
                await self.state.write_fields(target, changes)
                if wrote_last and route is Route.FIELD:
                    self.inval.spare_written(node, data)
            # Local records do not wake the invalidation task (Invalidator.on_records): this
            # does their kernel calls, or has the task do them, before close() returns.
            await self.inval.wait(target)
        except UnicodeDecodeError:
            raise refuse(errno.EINVAL, f"write to {_rel(parts)}", "not UTF-8 text") from None
        except (DocumentError, RecordError) as exc:
            raise refuse(errno.EINVAL, f"write to {_rel(parts)}", str(exc)) from None
        except OSError as exc:
            log.error("write to %s: journal write failed: %s", _rel(parts), exc)
            raise FUSEError(errno.EIO) from None

    def _changes(self, target: str, route: Route, parts: tuple[str, ...], text: str
                 ) -> dict[str, Change]:
        if route is Route.FIELD:
            # One field: its current value alone (no merge and render of the whole entity).
            name = parts[3]
            if not FIELD_RE.match(name):
                raise DocumentError(f"{name!r} is not a valid field name")
            present, cur = self.views.field_value(target, name)
            value = doc.parse_field_text(name, text, cur)
            changes = {} if present and doc.same_value(cur, value) else {name: value}
            if value is not TOMBSTONE:
                _check_value(name, value)
            return changes
        v: EntityView = self.views.get(target)
        if route is Route.INDEX:
            changes = doc.diff_index(v.fields, text, v.tags_in_front)
        else:
            check_text(doc.TAGS, text)
            tags = doc.parse_tags(text)
            cur = v.fields.get(doc.TAGS)
            changes = {} if cur is not None and doc.same_value(cur, tags) else {doc.TAGS: tags}
        for k, val in changes.items():
            if val is not TOMBSTONE:
                _check_value(k, val)
        return changes

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        h = self.handles.get(fh)
        if isinstance(h, BufferHandle) and h.dirty:
            h.dirty = False  # one commit per close, even if it fails (the write is refused)
            h.committed = True
            await self._commit(h.node, h.route, bytes(h.buf), h.wrote_last)

    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        h = self.handles.get(fh)
        if isinstance(h, BufferHandle):
            if h.dirty:
                h.dirty = False
                h.committed = True
                await self._commit(h.node, h.route, bytes(h.buf))
        elif isinstance(h, RealHandle):
            try:
                # offload.in_thread, not trio.to_thread: its result ends the receive loop's
                # poll for the next request (pyfuse3 patch change 8), which a lone
                # editor's next request would otherwise wait out.
                await offload.in_thread(partial(os.fsync, h.fd))
            except OSError as exc:
                raise FUSEError(exc.errno or errno.EIO) from None

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        node = h.node
        node.opens -= 1
        if isinstance(h, BufferHandle):
            self.writers -= 1
            # by identity: handles are dataclasses, and two may compare equal
            left = [b for b in self.buffers.pop(node.ino, ()) if b is not h]
            if left:
                self.buffers[node.ino] = left
        if isinstance(h, BufferHandle) and (h.dirty or (h.emptied and not h.committed)):
            # Emptied and never written (``: > f``), or written but never flushed.
            with contextlib.suppress(FUSEError):
                await self._commit(node, h.route, bytes(h.buf))
        elif isinstance(h, RealHandle):
            with contextlib.suppress(OSError):
                os.close(h.fd)
            if h.wrote and h.store_rel is not None and node.parts and (
                self.data.joinpath(*node.parts).exists()
            ):
                self.state.dirty.mark(_rel(node.parts))
            if node.opens <= 0:
                self.scratch.closed(node.parts)
            route = self._route(node)
            if h.wrote and route in (Route.INDEX, Route.TAGS):
                self.views.drop(target_of(node.parts))
        if node.opens <= 0 and node.lookups <= 0:
            self.table.forget(node.ino, 0)

    # -- unlink ----------------------------------------------------------------------------------

    async def unlink(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                     ctx: pyfuse3.RequestContext) -> None:
        self._folders_changed()
        parent = self._node(parent_inode)
        s = self._name(parent, name)
        node = self.table.child(parent, s, _is_virtual(self.router, parent, s))
        route = self._route(node)
        parts = node.parts
        what = f"unlink {_rel(parts)}"
        self._check_writable(route, what, parts)
        if route is Route.FIELD:
            v = self.views.get(target_of(parts))
            if parts[3] not in v.fields:
                raise FUSEError(errno.ENOENT)
            await self._write_changes(target_of(parts), {parts[3]: TOMBSTONE}, what)
            self.table.detach(node)
            return
        if parts in self.scratch.files:
            self.scratch.remove(parts)
            self.table.detach(node)
            return
        path = self.data.joinpath(*parts)
        if route in (Route.INDEX, Route.TAGS) and not os.path.lexists(path):
            if route is Route.TAGS and doc.TAGS in self.views.get(target_of(parts)).fields:
                await self._write_changes(target_of(parts), {doc.TAGS: TOMBSTONE}, what)
                self.table.detach(node)
                return
            raise FUSEError(errno.ENOENT if self._synth_or_none(node) is None else errno.EPERM)
        try:
            os.unlink(path)
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None
        self.state.dirty.mark_deleted(_rel(parts))
        if route in (Route.INDEX, Route.TAGS):
            self.views.drop(target_of(parts))
        self.table.detach(node)

    async def _write_changes(self, target: str, changes: dict[str, Change], what: str) -> None:
        try:
            await self.state.write_fields(target, changes)
        except RecordError as exc:
            raise refuse(errno.EINVAL, what, str(exc)) from None
        await self.inval.wait()

    # -- rename ----------------------------------------------------------------------------------

    async def rename(self, parent_inode_old: pyfuse3.InodeT, name_old: pyfuse3.FileNameT,
                     parent_inode_new: pyfuse3.InodeT, name_new: pyfuse3.FileNameT,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        self._folders_changed()
        p_old = self._node(parent_inode_old)
        p_new = self._node(parent_inode_new)
        s_old = self._name(p_old, name_old)
        s_new = self._name(p_new, name_new, creating=True)
        src = self.table.child(p_old, s_old, _is_virtual(self.router, p_old, s_old))
        dst = self.table.child(p_new, s_new, _is_virtual(self.router, p_new, s_new))
        r_src, r_dst = self._route(src), self._route(dst)
        what = f"rename {_rel(src.parts)} -> {_rel(dst.parts)}"
        self._check_writable(r_src, what, src.parts)
        self._check_writable(r_dst, what, dst.parts)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise refuse(errno.EINVAL, what, "RENAME_EXCHANGE is not supported")
        if flags & pyfuse3.RENAME_NOREPLACE and self._exists(dst):
            raise FUSEError(errno.EEXIST)
        if not self._exists(src):
            raise FUSEError(errno.ENOENT)
        if r_dst in ROUTED:
            await self._rename_onto_routed(src, r_src, dst, r_dst, what)
        elif r_src in ROUTED:
            await self._rename_routed_away(src, r_src, dst, r_dst, what)
        elif r_src is Route.ENTITY or r_dst is Route.ENTITY:
            await self._rename_entity(src, r_src, dst, r_dst, what)
        elif Route.FIELDS_DIR in (r_src, r_dst):
            raise refuse(errno.EPERM, what, "_fields/ is a view and cannot move")
        else:
            self._move_plain(src, dst, r_dst)
        self.table.move(src, p_new, s_new)

    async def _rename_onto_routed(self, src: Node, r_src: Route, dst: Node, r_dst: Route,
                                  what: str) -> None:
        """A file renamed over _index.md / tags.lst / _fields/x is a write to that file."""
        if r_src in (Route.ENTITY, Route.KIND, Route.FIELDS_DIR) or stat.S_ISDIR(
            self._attr(src).st_mode
        ):
            raise refuse(errno.EISDIR, what, "a folder cannot replace a routed file")
        if target_of(src.parts) != target_of(dst.parts) and r_src in ROUTED:
            pass  # copying another entity's view is a plain write of its bytes
        # _current_bytes split in two: a view is rendered on the loop (the views belong to
        # it; their LRU caches must not change under it from a worker), a file's bytes (an
        # editor's temp file, or a base served as it is; any size, maybe cold) are read off
        # it, through offload, whose result ends the receive loop's poll, as fsync's.
        data = self._synth(src) if r_src in ROUTED else None
        if data is None:
            data = await offload.in_thread(partial(self._read_real, src.parts))
        if r_src is Route.FIELD and r_dst is Route.FIELD and src.parts[:3] == dst.parts[:3]:
            # mv _fields/a _fields/b: b takes a's value, a is deleted, as one write.
            target = target_of(src.parts)
            v = self.views.get(target)
            if dst.parts[3] not in v.fields or not doc.same_value(
                v.fields[dst.parts[3]], v.fields[src.parts[3]]
            ):
                changes: dict[str, Change] = {dst.parts[3]: v.fields[src.parts[3]]}
            else:
                changes = {}
            changes[src.parts[3]] = TOMBSTONE
            await self._write_changes(target, changes, what)
            return
        if self._buffered(dst, r_dst):
            await self._commit(dst, r_dst, data)
        else:
            # First _index.md (or tags.lst) of an entity: the file itself becomes the base.
            if src.parts in self.scratch.files:
                self.scratch.move_to_store(src.parts, dst.parts)
                self.state.dirty.mark(_rel(dst.parts))
                self.views.drop(target_of(dst.parts))
                return
            if r_src in ROUTED:
                self._write_store_file(dst.parts, data)
            else:
                self._move_plain(src, dst, Route.STORE)
                self.views.drop(target_of(dst.parts))
                return
        # The source is consumed.
        if r_src in ROUTED:
            return  # a view cannot be removed by being read (e.g. mv _index.md _fields/x)
        if src.parts in self.scratch.files:
            self.scratch.remove(src.parts)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.data.joinpath(*src.parts))
            self.state.dirty.mark_deleted(_rel(src.parts))
        await self.inval.wait()

    def _write_store_file(self, parts: tuple[str, ...], data: bytes) -> None:
        path = self.data.joinpath(*parts)
        tmp = path.with_name(f".{path.name}.cocli-fs-tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.state.dirty.mark(_rel(parts))
        self.views.drop(target_of(parts))

    async def _rename_routed_away(self, src: Node, r_src: Route, dst: Node, r_dst: Route,
                                  what: str) -> None:
        """_index.md renamed to a backup name (vim's ``_index.md~``): the backup gets a copy;
        the view stays (it is the entity's state, not a file to move)."""
        if r_src is Route.FIELD and r_dst is not Route.SCRATCH:
            raise refuse(errno.EPERM, what, "a field can only be renamed within _fields/")
        data = self._current_bytes(src)
        if r_dst is Route.SCRATCH:
            p = self.scratch.add(dst.parts, pending=False)
        elif os.path.lexists(self.data.joinpath(*src.parts)) and not self._buffered(src, r_src):
            self._move_plain(src, dst, r_dst)
            return
        else:
            p = self.data.joinpath(*dst.parts)
        with open(p, "wb") as f:
            f.write(data)
        if r_dst is not Route.SCRATCH:
            self.state.dirty.mark(_rel(dst.parts))

    async def _rename_entity(self, src: Node, r_src: Route, dst: Node, r_dst: Route,
                             what: str) -> None:
        """mv companies/a companies/b: the base folder moves in the store; a's overlay fields
        are journaled again for b, and tombstoned for a (so a does not come back as a ghost
        and b shows exactly what a showed)."""
        if r_src is not r_dst:
            raise refuse(errno.EINVAL, what, "an entity folder can only move to another slug")
        old_t, new_t = target_of(src.parts), target_of(dst.parts)
        old_path, new_path = self.data.joinpath(*src.parts), self.data.joinpath(*dst.parts)
        try:
            os.rename(old_path, new_path)
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None
        spath = self.scratch.path(src.parts)
        if spath.is_dir():
            moved = [p for p in self.scratch.files if p[: len(src.parts)] == src.parts]
            self.scratch.path(dst.parts).parent.mkdir(parents=True, exist_ok=True)
            os.rename(spath, self.scratch.path(dst.parts))
            for p in moved:
                was_pending = p in self.scratch.pending
                self.scratch.discard(p)
                np = (*dst.parts, *p[len(src.parts):])
                self.scratch.files.add(np)
                if was_pending:
                    self.scratch.pending[np] = 0.0
                    self.scratch.closed(np)
        for dirpath, _dirs, names in os.walk(new_path):
            rel_new = Path(dirpath).relative_to(self.data)
            rel_old = Path(dirpath.replace(str(new_path), str(old_path), 1)).relative_to(self.data)
            for n in names:
                self.state.dirty.mark_deleted(str(rel_old / n))
                self.state.dirty.mark(str(rel_new / n))
        overlay = dict(self.state.overlay.get(old_t))
        if overlay:
            carry: dict[str, Change] = {
                f: (TOMBSTONE if r.tombstone else r.decoded_value()) for f, r in overlay.items()
            }
            await self._write_changes(new_t, carry, what)
            await self._write_changes(
                old_t, {f: TOMBSTONE for f, r in overlay.items() if not r.tombstone}, what
            )
        self.views.drop(old_t)
        self.views.drop(new_t)

    def _move_plain(self, src: Node, dst: Node, r_dst: Route) -> None:
        """Plain files and folders: store <-> scratch <-> store, never EXDEV."""
        sp = src.parts
        dp = dst.parts
        src_scratch = sp in self.scratch.files
        if r_dst is Route.SCRATCH:
            if src_scratch:
                target = self.scratch.add(dp, pending=False)
                os.rename(self.scratch.path(sp), target)
                self.scratch.discard(sp)
                return
            target = self.scratch.add(dp, pending=False)
            try:
                os.rename(self.data.joinpath(*sp), target)
            except OSError as exc:
                self.scratch.discard(dp)
                raise FUSEError(exc.errno or errno.EIO) from None
            self.state.dirty.mark_deleted(_rel(sp))
            return
        if src_scratch:
            if dp in self.scratch.files:
                self.scratch.remove(dp)
            try:
                self.scratch.move_to_store(sp, dp)
            except OSError as exc:
                raise FUSEError(exc.errno or errno.EIO) from None
            self.state.dirty.mark(_rel(dp))
            return
        if dp in self.scratch.files:
            self.scratch.remove(dp)
        old, new = self.data.joinpath(*sp), self.data.joinpath(*dp)
        is_dir = old.is_dir()
        try:
            os.rename(old, new)
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None
        if is_dir:
            for dirpath, _dirs, names in os.walk(new):
                for n in names:
                    f = Path(dirpath, n)
                    self.state.dirty.mark(str(f.relative_to(self.data)))
                    gone = (old / f.relative_to(new)).relative_to(self.data)
                    self.state.dirty.mark_deleted(str(gone))
        else:
            self.state.dirty.mark_deleted(_rel(sp))
            self.state.dirty.mark(_rel(dp))
        if len(dp) >= 3 and dp[0] in self.router.kinds:
            self.views.drop(target_of(dp))

    # -- not supported ---------------------------------------------------------------------------

    async def link(self, inode: pyfuse3.InodeT, new_parent_inode: pyfuse3.InodeT,
                   new_name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
                   ) -> pyfuse3.EntryAttributes:
        raise refuse(errno.EPERM, "link", "hard links are not supported")

    async def symlink(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT,
                      target: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
                      ) -> pyfuse3.EntryAttributes:
        raise refuse(errno.EPERM, "symlink", "symbolic links are not supported")

    async def mknod(self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, mode: int,
                    rdev: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise refuse(errno.EPERM, "mknod", "special files are not supported")


def _kernel_invalidate(calls: list[tuple[int, str | None]]) -> None:
    """Drop the kernel's cached attributes, data and names (run in a worker thread)."""
    for ino, name in calls:
        with contextlib.suppress(OSError):
            if name is None:
                pyfuse3.invalidate_inode(ino)
            else:
                pyfuse3.invalidate_entry(ino, _b(name))


def _check_value(name: str, value: Any) -> None:
    """Refuse separator bytes in any string inside a value (they would break the journal)."""
    if isinstance(value, str):
        check_text(name, value)
    elif isinstance(value, list):
        for x in value:
            _check_value(name, x)
    elif isinstance(value, dict):
        for k, x in value.items():
            _check_value(name, str(k))
            _check_value(name, x)


def _is_virtual(router: Router, parent: Node, name: str) -> bool:
    n = len(parent.parts)
    return (n == 2 and name == "_fields" and parent.parts[0] in router.kinds) or (
        n == 3 and parent.parts[2] == "_fields" and parent.parts[0] in router.kinds
    )


def _b(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _rel(parts: tuple[str, ...]) -> str:
    return "/".join(parts)


def now_ns() -> int:
    return time.time_ns()


def _type_bits(e: os.DirEntry[str]) -> int:
    """The file type of a listed entry, from d_type (no stat unless the file system lacks it)."""
    if e.is_symlink():
        return stat.S_IFLNK
    return stat.S_IFDIR if e.is_dir(follow_symlinks=False) else stat.S_IFREG
