"""Placeholder: the `s3sync` command is not built yet (see the open issues)."""

from __future__ import annotations

import argparse
import sys


def main(args: argparse.Namespace) -> int:
    print("cocli-fs: 's3sync' is not implemented yet", file=sys.stderr)
    return 2
