#!/usr/bin/env python3
"""Durable field writes through the mount, at 1 and W concurrent writers (issue 3's write bar).

Each write is what a user or script does: ``open(MNT/companies/<slug>/_fields/email, 'w')``,
``write``, ``close()`` — durable when ``close()`` returns (the journal record is fsynced). The
reference, in the same run: the same writes to plain files in the native folder, each followed
by ``fsync`` before ``close()`` (what "durable at close" costs without FUSE).

    .venv/bin/python scripts/bench/field_writes.py                 # 2,000 writes, 1 and 16 writers
    .venv/bin/python scripts/bench/field_writes.py -n 4000 -w 8

Also, with W writers: the same writes to entities visited for the first time (two more lookups
and a parse per write), and those first-visit writes on ``nullfs.py``, a FUSE file system that
does no work on the same stack: the ceiling that the kernel, pyfuse3 and trio leave, with the
event loop's CPU time per write for both.
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


def first_visits(root: Path, n: int) -> list[Path]:
    """``n`` field paths in entities nothing has looked up yet (``_fields/email`` of the
    entities ``write_tree`` made)."""
    return [root / "companies" / c.slug / "_fields" / "email"
            for c in sample.companies(n, seed=99)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", "--writes", type=int, default=2000)
    ap.add_argument("-w", "--writers", type=int, default=16)
    ap.add_argument("-e", "--entities", type=int, default=500)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res: dict[str, float] = {}
    w = args.writers
    with tempfile.TemporaryDirectory(prefix="bench-fw-") as tmp:
        root = Path(tmp)
        data, mnt = root / "data", root / "mnt"
        mnt.mkdir()
        companies = sample.write_tree(data, args.entities)
        for c in sample.companies(args.writes, seed=99):
            sample.write_company(data, c)
        os.sync()  # else the first fsyncs also write the new tree out (ext4 data=ordered)
        native = [data / "companies" / c.slug / "email.txt" for c in companies]
        measure("native, 1 writer (fsync)", lambda: run(native, args.writes, 1, True), res)
        measure(f"native, {w} writers (fsync)", lambda: run(native, args.writes, w, True), res)
        with Mount(data, mnt, node="bench") as m:
            fields = [mnt / "companies" / c.slug / "_fields" / "email" for c in companies]
            for p in fields:  # warm the kernel's lookups, as a running scraper would have
                p.read_text()
            measure("cocli-fs, 1 writer", lambda: run(fields, args.writes, 1, False), res)
            measure(f"cocli-fs, {w} writers", lambda: run(fields, args.writes, w, False), res)
            # Entities visited for the first time (files warm in the page cache): two more
            # lookups and a parse of the entity per write, as in fs.py's write step.
            fresh = first_visits(mnt, args.writes)
            cpu = m.loop_cpu()
            measure(f"cocli-fs, {w} writers, first visits",
                    lambda: run(fresh, args.writes, w, False), res)
            res["cocli-fs loop us/write"] = (m.loop_cpu() - cpu) / args.writes * 1e6
        # The same first-visit writes on a file system that does no work, on the same stack:
        # what the kernel round trips, pyfuse3 and trio alone allow on this machine.
        with NullMount(root / "null") as null:
            fresh = first_visits(root / "null", args.writes)
            cpu = null.loop_cpu()
            measure(f"no-op FUSE fs, {w} writers, first visits",
                    lambda: run(fresh, args.writes, w, False), res)
            res["no-op fs loop us/write"] = (null.loop_cpu() - cpu) / args.writes * 1e6
    print(f"event loop CPU per first-visit write: cocli-fs {res['cocli-fs loop us/write']:.0f} "
          f"us, no-op fs {res['no-op fs loop us/write']:.0f} us")
    print(f"load average after: {os.getloadavg()[0]:.2f}; bar: >= 2,000 durable writes/s")
    if args.json:
        print(json.dumps(res))
    return 0


class NullMount(Mount):
    """``nullfs.py`` mounted like a cocli-fs mount (same fixture: waits, always unmounts)."""

    def __init__(self, mnt: Path) -> None:
        super().__init__(mnt, mnt, node="null")

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).with_name("nullfs.py")), str(self.mnt)]


if __name__ == "__main__":
    sys.exit(main())
