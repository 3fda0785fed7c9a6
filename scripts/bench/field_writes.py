#!/usr/bin/env python3
"""Durable field writes through the mount, at 1 and W concurrent writers (issue 3's write bar).

Each write is what a user or script does: ``open(MNT/companies/<slug>/_fields/email, 'w')``,
``write``, ``close()`` — durable when ``close()`` returns (the journal record is fsynced). The
reference, in the same run: the same writes to plain files in the native folder, each followed
by ``fsync`` before ``close()`` (what "durable at close" costs without FUSE).

    .venv/bin/python scripts/bench/field_writes.py                 # 2,000 writes, 1 and 16 writers
    .venv/bin/python scripts/bench/field_writes.py -n 4000 -w 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cocli_fs import sample  # noqa: E402
from tests.mounting import Mount  # noqa: E402


def run(paths: list[Path], n: int, writers: int, durable_native: bool) -> float:
    """Writes per second for ``n`` writes spread over ``writers`` threads."""

    def work(k: int) -> None:
        for i in range(k, n, writers):
            with open(paths[i % len(paths)], "w") as f:
                f.write(f"x{i}@example.com\n")
                if durable_native:
                    f.flush()
                    os.fsync(f.fileno())

    threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - t0)


def measure(name: str, fn: Callable[[], float], out: dict[str, float]) -> None:
    out[name] = fn()
    print(f"{name:<32} {out[name]:>8.0f} writes/s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", "--writes", type=int, default=2000)
    ap.add_argument("-w", "--writers", type=int, default=16)
    ap.add_argument("-e", "--entities", type=int, default=500)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fw-") as tmp:
        root = Path(tmp)
        data, mnt = root / "data", root / "mnt"
        mnt.mkdir()
        companies = sample.write_tree(data, args.entities)
        native = [data / "companies" / c.slug / "email.txt" for c in companies]
        measure("native, 1 writer (fsync)", lambda: run(native, args.writes, 1, True), res)
        measure(
            f"native, {args.writers} writers (fsync)",
            lambda: run(native, args.writes, args.writers, True),
            res,
        )
        with Mount(data, mnt, node="bench"):
            fields = [mnt / "companies" / c.slug / "_fields" / "email" for c in companies]
            for p in fields:  # warm the kernel's lookups, as a running scraper would have
                p.read_text()
            measure("cocli-fs, 1 writer", lambda: run(fields, args.writes, 1, False), res)
            measure(
                f"cocli-fs, {args.writers} writers",
                lambda: run(fields, args.writes, args.writers, False),
                res,
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}; bar: >= 2,000 durable writes/s")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
