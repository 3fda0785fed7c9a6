"""Placeholder: the `compaction` command is not built yet (see the open issues)."""

from __future__ import annotations

import argparse
import sys


def main(args: argparse.Namespace) -> int:
    print("cocli-fs: 'compaction' is not implemented yet", file=sys.stderr)
    return 2
