#!/usr/bin/env python3
"""Mount benchmark (issue 3): the same generated tree read and written through the native
folder, mergerfs, unionfs-fuse and cocli-fs, side by side in one run.

The tree: N companies (default 300,000) in cocli's layout, each with a ~1 KB ``_index.md`` and a
``tags.lst``; 5 % of them have overlay fields (3 journal records each, in ``wal/``), so cocli-fs
renders their ``_index.md`` from base + overlay.

Per file system, in this order (each mounted fresh, page cache dropped before the cold step):
  ls -l cold / warm   ``ls -l companies/`` (readdir + an attribute per entry)
  stat               os.stat of K random ``_index.md`` (first pass: lookups; then a warm pass)
  cat warm           read K random ``_index.md`` after a first pass
  find               ``find -type f | wc -l`` over the whole tree
  writes             K small writes, durable at close for cocli-fs (``_fields/email`` ->
                     journal, group-committed fsync); a new ``note.txt`` per entity elsewhere
and, for cocli-fs, ``cat`` of entities with overlay vs without (the 1.5x bar).

Then ``stat interleaved``: the first-pass ``stat`` again, with every file system mounted at
once after one ``drop_caches`` and an ``ls -l companies/`` through each, in rounds (default 5)
of K/rounds fresh random ``_index.md`` per system (of entities without overlay fields), the
order rotated each round. The phases above run minutes apart, and this machine's speed
drifts by up to 2× over minutes (docs/benchmarks.md); interleaving puts every system under
the same conditions. ``--floor`` adds two file systems whose lookup does nothing but the
backing file's ``lstat``: ``nullfs.py --lookup-store`` on our stack (pyfuse3, trio; "floor")
and ``cfloor.c`` on libfuse in C ("floor C", built here with ``cc``).

    .venv/bin/python scripts/bench/fs.py --companies 20000 --samples 2000
    .venv/bin/python scripts/bench/fs.py               # 300,000 companies, 10,000 samples
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cocli_fs import record as rec  # noqa: E402
from cocli_fs import sample  # noqa: E402
from cocli_fs.journal import journal_name  # noqa: E402
from tests.mounting import Mount, is_mounted, unmount  # noqa: E402

SYSTEMS = ["native", "mergerfs", "unionfs", "cocli-fs"]
FLOORS = ["floor", "floor C"]  # --floor: no-op file systems with the same lookup lstat


def build_cfloor(work: Path) -> bool:
    """Compile ``cfloor.c`` into ``work``; False (with a warning) where it cannot be."""
    src = Path(__file__).with_name("cfloor.c")
    try:
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], check=True,
                               capture_output=True, text=True).stdout.split()
        subprocess.run(["cc", "-O2", "-o", str(work / "cfloor"), str(src), *flags], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"warning: no 'floor C' ({exc})", file=sys.stderr)
        return False
    return True


def build_tree(
    data: Path, n: int, overlay_frac: float, seed: int = 7
) -> tuple[list[str], list[str]]:
    """Write the tree; returns (all slugs, slugs with overlay fields)."""
    t = time.perf_counter()
    companies = data / "companies"
    companies.mkdir(parents=True)
    (data / "people").mkdir()
    (data / "wal").mkdir()
    slugs = []
    for c in sample.companies(n, seed):
        d = companies / c.slug
        os.mkdir(d)
        with open(d / "_index.md", "w") as f:
            f.write(c.index_md())
        with open(d / "tags.lst", "w") as f:
            f.write(c.tags_lst())
        slugs.append(c.slug)
    rnd = random.Random(seed)
    over = rnd.sample(slugs, int(n * overlay_frac))
    hlc = (int(time.time() * 1000) - 3_600_000) << rec.HLC_LOGICAL_BITS
    out = bytearray()
    seq = 0
    for i, s in enumerate(over):
        for fld, val in (("email", f"sales{i}@example.org"), ("phone_number", f"+1-555-{i:07d}"),
                         ("tier", "gold")):
            seq += 1
            hlc += 1
            out += rec.encode(rec.make(hlc=hlc, node_id="bench", seq=seq,
                                       target=f"companies/{s}", field=fld, value=val))
    day = time.strftime("%Y%m%d", time.gmtime())
    (data / "wal" / journal_name(day, "bench")).write_bytes(bytes(out))
    os.sync()
    print(f"tree: {n} companies, {len(over)} with overlay, {time.perf_counter() - t:.1f}s",
          file=sys.stderr)
    return slugs, over


def drop_caches() -> None:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        print("warning: cannot drop caches (not root?): 'cold' is not cold", file=sys.stderr)


def wait_mounted(mnt: Path, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 60
    while not is_mounted(mnt):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mount exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{mnt} not mounted")
        time.sleep(0.02)


@contextmanager
def mounted(system: str, data: Path, work: Path) -> Iterator[tuple[Path, Mount | None]]:
    """The system's root, and for cocli-fs its Mount (the event loop's CPU time)."""
    if system == "native":
        yield data, None
        return
    mnt = work / f"mnt-{system}"
    mnt.mkdir(exist_ok=True)
    if system == "cocli-fs":
        with Mount(data, mnt, node="benchnode", timeout=600, log=work / "cocli-fs.log") as m:
            yield mnt, m
        return
    if system in FLOORS:
        if system == "floor":
            nullfs = Path(__file__).with_name("nullfs.py")
            cmd = [sys.executable, str(nullfs), str(mnt), "--lookup-store", str(data)]
        else:
            cmd = [str(work / "cfloor"), str(data), str(mnt)]
        proc = subprocess.Popen(cmd)
        try:
            wait_mounted(mnt, proc)
            yield mnt, None
        finally:
            unmount(mnt)
            proc.wait()
        return
    if system == "mergerfs":
        cmd = ["mergerfs", str(data), str(mnt)]
    else:
        cmd = ["unionfs", f"{data}=RW", str(mnt)]
    subprocess.run(cmd, check=True)
    try:
        wait_mounted(mnt)
        yield mnt, None
    finally:
        unmount(mnt)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sh(cmd: str) -> Callable[[], object]:
    return lambda: subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)


def stat_all(paths: list[Path]) -> None:
    for p in paths:
        os.stat(p)


def cat_all(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        with open(p, "rb") as f:
            n += len(f.read())
    return n


def parallel_writes(comp: Path, slugs: list[str], name: str, writers: int, tag: str = "w"
                    ) -> None:
    """Each write opens, writes and closes one small file (cocli-fs: durable at close). Give
    each pass its own ``tag``: rewriting a field with the value it has is no change, and no
    change writes no record (it would measure a no-op)."""

    def one(chunk: list[tuple[int, str]]) -> None:
        for i, s in chunk:
            with open(comp / s / name, "w") as f:
                f.write(f"{tag}{i}@example.org\n")

    items = list(enumerate(slugs))
    with ThreadPoolExecutor(writers) as ex:
        list(ex.map(one, [items[j::writers] for j in range(writers)]))


def run_system(system: str, data: Path, work: Path, slugs: list[str], over: list[str],
               k: int, writes: int, writers: int) -> dict[str, float]:
    rnd = random.Random(11)
    picks = rnd.sample(slugs, min(k, len(slugs)))
    wpicks = rnd.sample(slugs, min(writes, len(slugs)))
    res: dict[str, float] = {}
    drop_caches()
    with mounted(system, data, work) as (root, mount):
        comp = root / "companies"
        res["ls -l cold"] = timed(sh(f"ls -l {comp} > /dev/null"))
        res["ls -l warm"] = timed(sh(f"ls -l {comp} > /dev/null"))
        paths = [comp / s / "_index.md" for s in picks]
        res["stat"] = timed(lambda: stat_all(paths))
        res["stat warm"] = timed(lambda: stat_all(paths))
        cat_all(paths)
        res["cat warm"] = timed(lambda: cat_all(paths))
        res["find"] = timed(sh(f"find {root} -type f | wc -l > /dev/null"))
        if system == "cocli-fs":
            ov = [comp / s / "_index.md" for s in over[: k // 2]]
            plain = [comp / s / "_index.md" for s in picks if s not in set(over)][: len(ov)]
            cat_all(ov)
            cat_all(plain)
            # Interleaved rounds, best of each: the two differ by tens of microseconds per
            # file, less than one noisy round moves on a shared machine.
            rounds = [(timed(lambda: cat_all(ov)), timed(lambda: cat_all(plain)))
                      for _ in range(3)]
            res["cat overlay"] = min(r[0] for r in rounds)
            res["cat plain"] = min(r[1] for r in rounds)
            res["cat overlay cold"] = 0.0

            assert mount is not None
            cpu = mount.loop_cpu()
            res["writes"] = timed(lambda: parallel_writes(comp, wpicks, "_fields/email", writers))
            # The event loop's CPU per write: the writes are bound by it when it is near 100 %
            # of the time (includes the patched loop's polling between requests).
            res["writes loop us"] = (mount.loop_cpu() - cpu) / len(wpicks) * 1e6
            # One writer over entities already looked up (the first tenth of those above),
            # with new values: the write path without the first visit's parse.
            seq = wpicks[: max(1, len(wpicks) // 10)]
            res["writes sequential/s"] = len(seq) / timed(
                lambda: parallel_writes(comp, seq, "_fields/email", 1, tag="s"))
        else:
            res["writes"] = timed(lambda: parallel_writes(comp, wpicks, "note.txt", writers))
    if system != "cocli-fs":
        for s in wpicks:
            (data / "companies" / s / "note.txt").unlink(missing_ok=True)
    res.pop("cat overlay cold", None)
    return res


def interleaved_stat(systems: list[str], data: Path, work: Path, slugs: list[str],
                     over: list[str], k: int, rounds: int) -> dict[str, float]:
    """Seconds per system for ``k`` first-pass ``stat``s of ``_index.md``, every system mounted
    at once and measured in turn (see the module's docstring). Each system stats files no
    system has visited since the caches were dropped, so each pays the same cold reads.

    Entities with overlay fields are left out: cocli-fs's listing has its walk-ahead child
    fetch their ``_index.md`` (a view, whose size needs the file's data), and in one shared
    page cache that made the other systems' ``stat``s of them warm (47–61 µs against ~170).
    The sequential ``stat`` phase, from dropped caches per system, includes them."""
    skip = set(over)
    plain = [s for s in slugs if s not in skip]
    per = min(k // rounds, len(plain) // (rounds * len(systems)))
    rnd = random.Random(23)
    picks = iter(rnd.sample(plain, per * rounds * len(systems)))
    drop_caches()
    totals = dict.fromkeys(systems, 0.0)
    with ExitStack() as stack:
        roots = {s: stack.enter_context(mounted(s, data, work))[0] for s in systems}
        for s in systems:
            if s not in FLOORS:  # they list nothing; their entity folders are looked up below
                sh(f"ls -l {roots[s] / 'companies'} > /dev/null")()
        for r in range(rounds):
            for s in systems[r % len(systems):] + systems[: r % len(systems)]:
                folders = [roots[s] / "companies" / next(picks) for _ in range(per)]
                if s in FLOORS:
                    stat_all(folders)  # as a listing leaves them: known, not their files
                totals[s] += timed(partial(stat_all, [f / "_index.md" for f in folders]))
    return totals


def table(results: dict[str, dict[str, float]], n: int, k: int, writes: int, writers: int
          ) -> str:
    ops = ["ls -l cold", "ls -l warm", "stat", "stat warm", "cat warm", "find", "writes",
           "stat interleaved"]
    ops = [op for op in ops if any(op in r for r in results.values())]
    head = ["", *ops]
    lines = [
        f"{n:,} companies; stat/cat of {k:,} random `_index.md`; {writes:,} writes from "
        f"{writers} threads. "
        "Seconds (ratio to native / to mergerfs).",
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join("---" for _ in head) + " |",
    ]
    nat = results.get("native", {})
    mfs = results.get("mergerfs", {})
    for system, r in results.items():
        cells = [system]
        for op in ops:
            if op not in r:
                cells.append("")
                continue
            v = r[op]
            c = f"{v:.3f}"
            if system != "native" and nat.get(op):
                c += f" ({v / nat[op]:.1f}×"
                if system != "mergerfs" and mfs.get(op):
                    c += f" / {v / mfs[op]:.2f}×"
                c += ")"
            cells.append(c)
        lines.append("| " + " | ".join(cells) + " |")
    ours = results.get("cocli-fs")
    if ours and "cat overlay" in ours:
        lines += [
            "",
            f"cocli-fs `cat` warm, {k // 2:,} entities with overlay: {ours['cat overlay']:.3f}s vs "
            f"without: {ours['cat plain']:.3f}s ({ours['cat overlay'] / ours['cat plain']:.2f}×, "
            "bar ≤ 1.5×)",
            f"cocli-fs durable field writes: {writes / ours['writes']:,.0f}/s with {writers} "
            f"concurrent writers, {ours['writes sequential/s']:,.0f}/s from one sequential "
            "writer (bar ≥ 2,000/s); event loop CPU "
            f"{ours['writes loop us']:,.0f} µs per write with {writers} writers, "
            f"{ours['writes loop us'] * writes / ours['writes'] / 1e6:.0%} of the time",
        ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--companies", "-n", type=int, default=300_000)
    ap.add_argument("--samples", "-k", type=int, default=10_000, help="stat/cat sample size")
    ap.add_argument("--writes", "-w", type=int, default=10_000)
    ap.add_argument("--writers", type=int, default=16, help="concurrent writing threads")
    ap.add_argument("--overlay", type=float, default=0.05, help="share of companies with overlay")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of the interleaved first-pass stat (0: skip it)")
    ap.add_argument("--floor", action="store_true",
                    help="add to the interleaved stat no-op file systems that only lstat: "
                         "nullfs.py --lookup-store on cocli-fs's stack (pyfuse3, trio) and "
                         "cfloor.c on libfuse in C")
    ap.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fs-", dir=args.dir))
    try:
        data = work / "data"
        slugs, over = build_tree(data, args.companies, args.overlay)
        results: dict[str, dict[str, float]] = {}
        for system in args.systems.split(","):
            results[system] = run_system(system, data, work, slugs, over, args.samples,
                                         args.writes, args.writers)
            print(system, json.dumps({k: round(v, 4) for k, v in results[system].items()}),
                  file=sys.stderr)
        if args.rounds:
            systems = list(results)
            if args.floor:  # the C one is compiled only when asked for
                systems += ["floor", *(["floor C"] if build_cfloor(work) else [])]
            for system, t in interleaved_stat(systems, data, work, slugs, over, args.samples,
                                              args.rounds).items():
                results.setdefault(system, {})["stat interleaved"] = t
            print("stat interleaved", json.dumps({s: round(results[s]["stat interleaved"], 4)
                                                  for s in systems}), file=sys.stderr)
        print(json.dumps(results, indent=2) if args.json else
              table(results, args.companies, args.samples, args.writes, args.writers))
    finally:
        for m in work.glob("mnt-*"):
            if is_mounted(m):
                unmount(m)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
