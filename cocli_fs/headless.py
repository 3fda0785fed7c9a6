"""``cocli-fs serve DATA``: a node without FUSE — node state, control socket and the background
services (gossip, S3 sync, compaction as the config asks) in one trio nursery.

For scraper nodes that only write through ``cocli`` and for tests and benchmarks that need real
nodes as real processes without a mount. The control socket answers ``status`` (the same keys as
a mount) and ``write`` / ``write_batch`` (durable field writes, as a ``close()`` on the mount).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections import defaultdict
from typing import Any

import trio

from . import config as config_mod
from .config import ConfigError
from .control import ControlServer, Progress
from .document import TOMBSTONE, Change
from .record import Record
from .services import Service, build_services, node_status
from .state import DataDir, NodeState

log = logging.getLogger(__name__)


class Headless:
    def __init__(self, state: NodeState) -> None:
        self.state = state
        self.control = ControlServer(state.data.private)
        self.services: list[Service] = build_services(state, self.control)
        self.control.register("status", self._status)
        self.control.register("write", self._write)
        self.control.register("write_batch", self._write_batch)
        self.control.register("read", self._read)
        self.control.register("watch", self._watch)
        # (origin, lo, hi) -> applied wall time (ns) per seq, for ``watch`` (benchmarks).
        self._watches: list[tuple[str, int, int, dict[int, int], trio.Event]] = []
        state.listeners.append(self._on_change)

    def status(self) -> dict[str, Any]:
        info = node_status(self.state, self.services)
        info["mounted"] = False
        info["headless"] = True
        info["services"] = [s.name for s in self.services]
        return info

    async def _status(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        return self.status()

    async def _read(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """``{"target": "companies/x"}`` -> the merged fields (what the mount's ``_fields/``
        would show)."""
        _, fields = self.state.merged(str(args["target"]))
        # YAML may hold dates: make everything JSON-safe for the control socket.
        return {"fields": json.loads(json.dumps(fields, default=str))}

    async def _write(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """``{"target": "companies/x", "fields": {name: value}, "delete": [name, ...]}``."""
        changes: dict[str, Change] = dict(args.get("fields") or {})
        for name in args.get("delete") or []:
            changes[name] = TOMBSTONE
        records = await self.state.write_fields(str(args["target"]), changes)
        return {"records": [_brief(r) for r in records], "durable_ns": time.time_ns()}

    async def _write_batch(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """``{"items": [[target, field, value], ...]}`` or, for batches larger than a control
        request may be, ``{"n": N, "target": "companies/x-{i}", "field": "f", "value": "v{i}"}``.
        All durable (in shared group commits) when this returns."""
        items = args.get("items") or [
            (args["target"].format(i=i), args["field"], args["value"].format(i=i))
            for i in range(int(args.get("n", 0)))
        ]
        by_target: dict[str, dict[str, Change]] = defaultdict(dict)
        for target, field, value in items:
            by_target[str(target)][str(field)] = value
        out: list[Record] = []

        async def one(target: str, changes: dict[str, Change]) -> None:
            out.extend(await self.state.write_fields(target, changes))

        async with trio.open_nursery() as n:
            for target, changes in by_target.items():
                n.start_soon(one, target, changes)
        return {
            "count": len(out),
            "max_seq": max((r.seq for r in out), default=0),
            "durable_ns": time.time_ns(),
        }

    def _on_change(self, targets: set[str], records: list[Record], local: bool) -> None:
        if not self._watches:
            return
        now = time.time_ns()
        for origin, lo, hi, seen, done in self._watches:
            for r in records:
                if r.node_id == origin and lo <= r.seq <= hi:
                    seen.setdefault(r.seq, now)
            if len(seen) == hi - lo + 1:
                done.set()

    async def _watch(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """``{"origin": "a", "lo": 1, "hi": 1000, "timeout": 30}``: wait until every record
        ``lo..hi`` of ``origin`` arrived; answer the wall time (ns) each became visible here.
        For benchmarks (processes on one machine share the clock). Only records that change the
        visible state are seen (the state listener's contract), so write distinct fields."""
        origin, lo, hi = str(args["origin"]), int(args["lo"]), int(args["hi"])
        seen: dict[int, int] = {}
        done = trio.Event()
        entry = (origin, lo, hi, seen, done)
        self._watches.append(entry)
        await progress("watching")
        try:
            with trio.move_on_after(float(args.get("timeout", 30))):
                await done.wait()
        finally:
            self._watches.remove(entry)
        return {"applied_ns": {str(k): v for k, v in seen.items()}, "complete": done.is_set()}

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.control.serve)
            for s in self.services:
                await nursery.start(s.run)
            task_status.started()


def _brief(r: Record) -> dict[str, Any]:
    return {"seq": r.seq, "hlc": r.hlc, "target": r.target, "field": r.field}


async def _serve(node: Headless) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        print(f"cocli-fs serve: node {node.state.node} ready", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


def main(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, args.node)
    try:
        data = DataDir.check(args.data, cfg.mount.kinds)
    except (OSError, ValueError) as exc:
        print(f"cocli-fs serve: {exc}", file=sys.stderr)
        return 1
    state = NodeState(data, cfg)
    state.load()
    try:
        node = Headless(state)  # raises ConfigError (e.g. no gossip key): reported by cli.main
        trio.run(_serve, node)
    except BaseExceptionGroup as group:
        # A service that cannot start (port in use, unreadable key) fails inside the nursery:
        # report it in one line, as cli.main does for config errors, not as a traceback.
        leaves = _leaves(group)
        if not all(isinstance(e, (ConfigError, OSError)) for e in leaves):
            raise
        for e in leaves:
            print(f"cocli-fs serve: {e}", file=sys.stderr)
        return 2 if any(isinstance(e, ConfigError) for e in leaves) else 1
    finally:
        state.close()
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]
