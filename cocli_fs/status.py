"""``cocli-fs status``: what a node knows, as a table or JSON (keys of DESIGN §8 are a contract).

Without a running mount it reads ``DATA`` directly (replaying the journals)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from . import config as config_mod
from .control import ControlError, request
from .services import node_status
from .state import DataDir, NodeState


def ask_mount(data: DataDir) -> dict[str, Any] | None:
    """The running mount's own answer (live peers, dirty set), or None when none runs."""
    try:
        return request(data.private, "status", timeout=10)
    except (OSError, ControlError, ValueError):
        return None


def collect(args: argparse.Namespace) -> dict[str, Any]:
    cfg = config_mod.load(args.config, args.node)
    data = DataDir.check(args.data, cfg.mount.kinds)
    live = ask_mount(data)
    if live is not None:  # a mount of DATA is running: it knows best (and holds the journal)
        live.setdefault("peers", [])
        live.setdefault("pending_records", live.get("overlay_entries", 0))
        live.setdefault("dirty", 0)
        live.setdefault("mounted", True)  # a headless node (`serve`) says False itself
        return live
    state = NodeState(data, cfg)
    state.load()
    try:
        info = node_status(state, [])  # the same keys a running node answers with
    finally:
        state.close()
    sync_state = data.private / "s3sync.json"  # rewritten by every sync that got anywhere
    if "last_sync" not in info and sync_state.exists():
        info["last_sync"] = sync_state.stat().st_mtime
    info["mounted"] = False
    return info


def render(info: dict[str, Any]) -> str:
    rows = [
        ("node", info["node"]),
        ("mounted", "yes" if info.get("mounted") else "no"),
        ("own sequence", info.get("sequence", 0)),
        ("digest", info["digest"]),
        ("pending records", info["pending_records"]),
        ("overlay entries", info.get("overlay_entries", 0)),
        ("dirty files", info["dirty"]),
    ]
    if info.get("mountpoint"):
        rows.insert(2, ("mountpoint", info["mountpoint"]))
    last = info.get("last_sync")
    if isinstance(last, (int, float)):
        rows.append(("last S3 sync", f"{max(0.0, time.time() - last):.0f} s ago"))
    if info.get("last_sync_error"):
        rows.append(("last sync error", info["last_sync_error"]))
    if info.get("corrupt_records"):
        rows.append(("corrupt records", f"{info['corrupt_records']} (skipped; see the log)"))
    for peer, skew in sorted((info.get("skewed_peers") or {}).items()):
        rows.append(("clock ahead", f"{peer} by {skew / 1000:.1f} s"))
    out = [f"{k:<18} {v}" for k, v in rows]
    if info.get("origins"):
        out.append("origins (contiguous seq):")
        out += [f"  {n:<16} {s}" for n, s in sorted(info["origins"].items())]
    if info["peers"]:
        out.append(f"{'peer':<24} {'state':<8} {'last seen':<10} skew")
        for p in info["peers"]:
            out.append(
                f"{p['address']:<24} {p['state']:<8} {p.get('last_seen', '-')!s:<10}"
                f" {p.get('skew_ms', '-')}"
            )
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    try:
        info = collect(args)
    except (OSError, ValueError) as exc:
        print(f"cocli-fs status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else render(info))
    return 0
