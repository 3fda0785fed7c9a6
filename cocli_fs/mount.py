"""``cocli-fs mount DATA MNT``: the mount's lifecycle.

Checks first (a clear message and exit code 1 instead of a traceback): DATA must be a data
folder, MNT an existing, empty-or-not, not-yet-mounted directory outside DATA, and no other
mount of DATA may be running (a lock in DATA/.cocli-fs). Then one process runs, in ONE trio
nursery: the FUSE loop, the control socket (``status``), the mount's own background tasks
(kernel cache invalidation, scratch promotion) and every service from ``build_services``.

Without ``--foreground`` the process forks, and the parent exits only once the child reports
the file system mounted and serving (or exits 1 with the child's error). SIGINT/SIGTERM and
``fusermount3 -u MNT`` end the loop; the file system is then unmounted and the journal closed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from . import config as config_mod
from . import fusepatch, offload, pagecache
from .control import ControlServer
from .fs import Operations
from .routing import Router
from .services import build_services, node_status
from .state import DataDir, NodeState

log = logging.getLogger(__name__)

LOCK_NAME = "mount.lock"


class MountError(RuntimeError):
    """Something that keeps the mount from starting, said for a user."""


def check_mountpoint(mnt: Path, data: Path) -> Path:
    if not mnt.exists():
        raise MountError(f"mount point {mnt} does not exist")
    if not mnt.is_dir():
        raise MountError(f"mount point {mnt} is not a directory")
    try:
        if os.path.ismount(mnt):
            raise MountError(f"mount point {mnt} is busy: something is already mounted there")
    except OSError as exc:  # a dead FUSE mount answers ENOTCONN
        raise MountError(
            f"mount point {mnt} is busy (stale mount: {exc.strerror}); "
            f"run 'fusermount3 -u -z {mnt}'"
        ) from None
    real = mnt.resolve()
    if real == data or data in real.parents:
        raise MountError(f"mount point {mnt} is inside the data folder {data}")
    return real


def take_lock(private: Path) -> int:
    """One mount per data folder: an flock held for the life of the process (kill -9 frees it)."""
    private.mkdir(parents=True, exist_ok=True)
    fd = os.open(private / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MountError(f"{private.parent} is already mounted by another cocli-fs") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


INLINE_SYNC_UNDER = 0.002  # seconds: a journal fsync slower than this goes to a thread
IDLE_WORKERS = 24  # pyfuse3 request workers kept waiting (more than the writers we expect at once)
# How long the event loop may keep the GIL from a worker thread that wants it back (CPython's
# default is 5 ms). A worker (a journal batch's fsync, a field's first base read) needs the GIL
# again once its system call returns; a busy loop gives it up only at its own system calls,
# where it usually takes it straight back, so the writers waiting on that worker waited up to
# the whole interval. 300,000 entities, 16 writers, three alternating pairs: 1,671-1,815
# against 1,632-1,752 writes/s, 456-487 against 490-504 us of loop CPU per write.
GIL_SWITCH_S = 0.0005


def fuse_options(debug: bool) -> set[str]:
    opts = set(pyfuse3.default_options)
    opts |= {"fsname=cocli-fs", "subtype=cocli-fs"}
    if debug:
        opts.add("debug")
    return opts


async def serve(
    state: NodeState,
    mnt: Path,
    debug: bool = False,
    ready: Callable[[], None] | None = None,
) -> None:
    """Mount, serve until unmounted or signalled, unmount."""
    cfg = state.config
    router = Router(cfg.mount.kinds, cfg.mount.routes)
    ops = Operations(state, router)
    if state.journal is not None:
        # A lone writer's field writes: fsync on the loop while the disk is fast (see
        # JournalWriter.inline_sync_under); the thread hop cost more than the fsync itself.
        state.journal.inline_sync_under = INLINE_SYNC_UNDER
        state.journal.company = ops.company
    control = ControlServer(state.data.private)
    services = build_services(state, control)

    async def status(args: dict[str, Any], progress: Any) -> dict[str, Any]:
        info = node_status(state, services)
        info["mounted"] = True
        info["mountpoint"] = str(mnt)
        info["pid"] = os.getpid()
        info["refused_writes"] = ops.refused
        info["fast_lookups"] = ops.fast_lookups
        info["pyfuse3_patch"] = bool(fusepatch.PATCH)
        info["gil_switch_interval_ms"] = round(sys.getswitchinterval() * 1000, 3)
        helper = offload.completions().helper
        info["helper_process"] = {
            "running": helper is not None and helper.alive,
            "restarts": helper.restarts if helper is not None else 0,
        }
        info["cached_reads"] = pagecache.status()
        return info

    control.register("status", status)
    pyfuse3.init(ops, str(mnt), fuse_options(debug))
    if not fusepatch.set_poll_spin(cfg.mount.poll_spin_us):
        log.warning("stock pyfuse3 API: every request waits on the event loop (run "
                    "scripts/build-pyfuse3 for the patched build, docs/mount.md)")
    completions = offload.completions()
    fusepatch.set_wakeup_hook(completions, completions.drain)
    fusepatch.set_spin_watch(completions.bell.map)
    if ops.fast_names:  # empty when off (config, stock pyfuse3, slug-aware routes)
        fusepatch.set_fast_lookup(ops.fast_root, ops.fast_dirs, ops.fast_names,
                                  ops.fast_entry, ops.entry_timeout, ops.attr_timeout)
    await completions.start_helper()
    unmounted = False
    switch = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_S)
    try:
        async with trio.open_nursery() as nursery:

            async def fuse_loop() -> None:
                # Idle request workers kept: concurrent writers park one worker each in FLUSH
                # (the group commit); with pyfuse3's default of 1, all but one exit after each
                # burst and the next burst starts them again (before patch change 5, a task
                # was started at nearly every request: ~10 % of the loop's CPU at 16 writers).
                await pyfuse3.main(min_tasks=IDLE_WORKERS)
                nursery.cancel_scope.cancel()  # fusermount3 -u: the loop ended, so do we

            async def on_signals() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
                    async for signum in sigs:
                        # Stop taking requests but let those in flight finish (a flush that
                        # is committing must answer its close()); then the loop returns.
                        log.info("signal %d: unmounting", signum)
                        pyfuse3.terminate()
                        await trio.sleep(10)
                        nursery.cancel_scope.cancel()  # a request that never ends
                        return

            nursery.start_soon(on_signals)
            await nursery.start(ops.run)
            await nursery.start(control.serve)
            for s in services:
                await nursery.start(s.run)
            nursery.start_soon(fuse_loop)
            log.info("mounted %s on %s as node %s", state.data.root, mnt, state.node)
            if ready is not None:
                ready()
    finally:
        sys.setswitchinterval(switch)
        fusepatch.set_wakeup_hook(None, None)
        fusepatch.set_spin_watch(None)
        fusepatch.set_fast_lookup(b"", None)
        ops.shutdown()
        with contextlib.suppress(Exception):
            pyfuse3.close(unmount=not unmounted)


def _daemonize() -> tuple[int, Callable[[str], None]]:
    """Fork; the parent waits for one status line from the child on a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as f:
            msg = f.read().decode("utf-8", "replace")
        if msg.startswith("ok"):
            os._exit(0)
        sys.stderr.write(f"cocli-fs mount: {msg.removeprefix('error ').strip() or 'failed'}\n")
        os._exit(1)
    os.close(r)
    os.setsid()

    def report(msg: str) -> None:
        with contextlib.suppress(OSError):
            os.write(w, msg.encode())
            os.close(w)

    return w, report


def _quiet_stdio(log_file: Path) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(devnull)
    os.close(out)
    root = logging.getLogger()
    for h in root.handlers:
        if isinstance(h, logging.StreamHandler):
            h.setStream(sys.stderr)
    root.setLevel(min(root.level, logging.INFO))


def main(args: argparse.Namespace) -> int:
    report: Callable[[str], None] | None = None
    try:
        cfg = config_mod.load(args.config, args.node)
        data_root = Path(args.data).resolve()
        try:
            data = DataDir.check(data_root, cfg.mount.kinds)
        except (OSError, ValueError) as exc:
            raise MountError(str(exc)) from None
        mnt = check_mountpoint(Path(args.mountpoint), data_root)
        data.private.mkdir(parents=True, exist_ok=True)
        if not args.foreground:
            _w, report = _daemonize()
            _quiet_stdio(data.private / "mount.log")
        lock = take_lock(data.private)
        state = NodeState(data, cfg)
        state.load()
    except (MountError, config_mod.ConfigError, OSError) as exc:
        if report is not None:
            report(f"error {exc}")
            os._exit(1)
        print(f"cocli-fs mount: {exc}", file=sys.stderr)
        return 1
    ready_report = report

    def ready() -> None:
        if ready_report is not None:
            ready_report("ok")

    try:
        trio.run(serve, state, mnt, bool(getattr(args, "debug_fuse", False)), ready)
    except RuntimeError as exc:  # pyfuse3.init failing to mount (fusermount3's message)
        if report is not None:
            report(f"error {exc}")
        log.error("mount failed: %s", exc)
        print(f"cocli-fs mount: {exc}", file=sys.stderr)
        return 1
    finally:
        state.close()
        os.close(lock)
    return 0
