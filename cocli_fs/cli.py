"""``cocli-fs`` command line: argument parsing only; each command lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from .config import ConfigError

# command -> module whose ``main(args) -> int`` runs it
COMMANDS = {
    "mount": "cocli_fs.mount",
    "status": "cocli_fs.status",
    "compact": "cocli_fs.compaction",
    "sync": "cocli_fs.s3sync",
    "demo": "cocli_fs.demo",
    "serve": "cocli_fs.headless",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cocli-fs", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("data", type=Path, metavar="DATA", help="the cocli data folder")
        sp.add_argument("--config", type=Path, help="TOML config file")
        sp.add_argument("--node", help="node name (default: config, then host name)")

    m = sub.add_parser("mount", help="mount the merged view of DATA on MNT")
    common(m)
    m.add_argument("mountpoint", type=Path, metavar="MNT")
    m.add_argument("--foreground", "-f", action="store_true", help="do not detach")
    m.add_argument("--debug-fuse", action="store_true", help="libfuse debug output")

    s = sub.add_parser("status", help="peers, sequences, pending records, convergence digest")
    common(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")

    c = sub.add_parser("compact", help="fold journal records into the base files (hub)")
    common(c)
    c.add_argument("--force", action="store_true", help="compact even if [hub] is not enabled")

    y = sub.add_parser("sync", help="push/pull changes to/from S3")
    common(y)
    y.add_argument("--bootstrap", action="store_true", help="first full sync of an empty node")
    y.add_argument("--push-only", action="store_true")
    y.add_argument("--pull-only", action="store_true")

    sv = sub.add_parser("serve", help="run a node without FUSE (gossip, sync): scrapers, tests")
    common(sv)

    d = sub.add_parser("demo", help="a small cluster on loopback with a local S3 server")
    d.add_argument("--dir", type=Path, default=Path("demo-cluster"), help="working folder")
    d.add_argument(
        "--stop-at-end", action="store_true", help="stop the cluster when the story is told"
    )
    d.add_argument("--stop", action="store_true", help="stop a cluster left running")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(COMMANDS[args.command])
    try:
        rc: int = module.main(args)
    except ConfigError as exc:
        print(f"cocli-fs: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
