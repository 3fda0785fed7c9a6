#!/usr/bin/env python3
"""Compaction benchmark: N journal records folded into the base files of a tree of M companies,
for two tree sizes side by side (default 50,000 records over 300,000 and over 3,000 companies).

Four runs, timed from reading wal/ to the retired journals (checkpoint durable):

* ``same/small``  N records over the small tree, touching T entities (default 3,000);
* ``same/big``    the very same records over the big tree: the only difference is how many
                  untouched company folders sit beside them. If compaction walked the tree this
                  would be ~100x slower; it must be within noise of ``same/small``;
* ``spread/big``  N records spread over N/5 entities of the big tree (an enrichment sets a
                  handful of fields of an entity at once: the realistic day), for entities/s;
* ``wide/big``    N records over N/2 entities of the big tree (two fields each: the stress
                  case, the most files to rewrite).

Bar (DESIGN §9): <= 30 s for N = 50,000 over 300,000 companies. Trees are generated with plain
writes (cocli_fs.sample), kept in --dir and reused; before each run the touched entities are
restored and wal/ rewritten, so runs are independent.

    .venv/bin/python scripts/bench/compact.py          # full: 50,000 records, 300,000 / 3,000
    .venv/bin/python scripts/bench/compact.py -n 5000 -m 20000 -s 1000   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cocli_fs import compaction as comp  # noqa: E402
from cocli_fs import record as rec  # noqa: E402
from cocli_fs import sample  # noqa: E402
from cocli_fs.dirty import DirtySet  # noqa: E402
from cocli_fs.journal import journal_name  # noqa: E402

BAR_SECONDS = 30.0
NODES = ("pi-1", "pi-2", "cloud-1")
DAY_MS = 1_764_115_200_000
FIELDS = ("email", "phone_number", "website", "rating", "employees", "linkedin_url", "tags")


def build_tree(root: Path, m: int) -> list[str]:
    """M companies (cached: a tree is built once per size and reused)."""
    marker = root / ".complete"
    slugs_file = root / ".slugs"
    if marker.exists():
        return slugs_file.read_text().split("\n")
    if root.exists():
        shutil.rmtree(root)
    t0 = time.monotonic()
    cs = sample.write_tree(root, m)
    slugs = [c.slug for c in cs]
    slugs_file.write_text("\n".join(slugs))
    marker.write_text("ok")
    print(f"  built {m:,} companies in {time.monotonic() - t0:.1f} s", flush=True)
    return slugs


def workload(slugs: list[str], n: int, touched: int, seed: int = 1) -> list[rec.Record]:
    """N records over ``touched`` entities from three nodes, LWW conflicts included."""
    rnd = random.Random(seed)
    targets = [f"companies/{s}" for s in slugs[:touched]]
    seqs = dict.fromkeys(NODES, 0)
    out = []
    for i in range(n):
        node = NODES[i % len(NODES)]
        seqs[node] += 1
        field = rnd.choice(FIELDS)
        value: object
        if field == "tags":
            value = ["prospect", f"batch-{i % 17}"]
        elif field in ("rating", "employees"):
            value = rnd.randint(1, 500)
        else:
            value = f"{field}-{i}"
        tomb = field == "linkedin_url" and i % 5 == 0
        out.append(
            rec.make(
                hlc=(DAY_MS + rnd.randint(0, 86_000_000)) << 16,
                node_id=node,
                seq=seqs[node],
                target=targets[i % touched] if i < touched else rnd.choice(targets),
                field=field,
                value=None if tomb else value,
                tombstone=tomb,
            )
        )
    return out


def write_journals(wal: Path, records: list[rec.Record]) -> None:
    wal.mkdir(exist_ok=True)
    by: dict[str, list[bytes]] = {}
    for r in records:
        by.setdefault(journal_name(r.day, r.node_id), []).append(rec.encode(r))
    for name, chunks in by.items():
        (wal / name).write_bytes(b"".join(chunks))


def reset(root: Path, slugs: list[str], touched: int) -> None:
    """Undo a previous run: restore the touched companies, empty wal/ and private state."""
    shutil.rmtree(root / "wal", ignore_errors=True)
    shutil.rmtree(root / ".cocli-fs", ignore_errors=True)
    for c in sample.companies(touched):  # deterministic: the first `touched` of the tree
        sample.write_company(root, c)


def cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the render workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_one(root: Path, slugs: list[str], records: list[rec.Record], touched: int) -> dict:
    reset(root, slugs, touched)
    write_journals(root / "wal", records)
    os.sync()
    ds = DirtySet(root / ".cocli-fs")
    cpu0 = cpu_seconds()
    t0 = time.monotonic()
    res = comp.compact(root, mark=comp._marker(ds))
    retired = comp.retire_offline(root, res.checkpoint, s3=False)
    secs = time.monotonic() - t0
    cpu = cpu_seconds() - cpu0
    ds.close()
    assert res.compacted == len(records), res.summary()
    return {
        "seconds": secs,
        "records": res.compacted,
        "entities": res.written.entities,
        "files": res.written.files,
        "retired": len(retired),
        "dirty": len(ds),
        "phases": res.phases,
        "cpu": cpu,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", "--records", type=int, default=50_000)
    ap.add_argument("-m", "--companies", type=int, default=300_000, help="the big tree")
    ap.add_argument("-s", "--small", type=int, default=3_000, help="the small tree (reference)")
    ap.add_argument(
        "-t", "--touched", type=int, default=0, help="entities touched (default: min(n/2, small))"
    )
    ap.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "cocli-fs-bench-compact"
    )
    ap.add_argument("--json", action="store_true", help="also print the results as JSON (last)")
    args = ap.parse_args()
    touched = args.touched or min(args.records // 2, args.small)
    spread = min(args.records // 5, args.companies)
    wide = min(args.records // 2, args.companies)
    args.dir.mkdir(parents=True, exist_ok=True)
    print(
        f"compaction of {args.records:,} records; trees of {args.small:,} and "
        f"{args.companies:,} companies; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    trees = {m: build_tree(args.dir / f"tree-{m}", m) for m in (args.small, args.companies)}
    runs = [
        ("same/small", args.small, touched),
        ("same/big", args.companies, touched),
        ("spread/big", args.companies, spread),
        ("wide/big", args.companies, wide),
    ]
    results = {}
    for name, m, t in runs:
        records = workload(trees[m], args.records, t)
        results[name] = run_one(args.dir / f"tree-{m}", trees[m], records, t)
        results[name]["companies"] = m
        r = results[name]
        print(f"  {name}: {r['seconds']:.2f} s  {r['phases']}", flush=True)
    print()
    print(
        f"{'run':<11} {'companies':>10} {'records':>8} {'entities':>8} {'files':>7} "
        f"{'seconds':>8} {'cpu s':>6} {'records/s':>10} {'entities/s':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:<11} {r['companies']:>10,} {r['records']:>8,} {r['entities']:>8,} "
            f"{r['files']:>7,} {r['seconds']:>8.2f} {r['cpu']:>6.1f} "
            f"{r['records'] / r['seconds']:>10,.0f} {r['entities'] / r['seconds']:>10,.0f}"
        )
    ratio = results["same/big"]["seconds"] / results["same/small"]["seconds"]
    print(
        f"\nsame records, {args.companies:,} vs {args.small:,} companies: time ratio "
        f"{ratio:.2f}x (company ratio {args.companies / args.small:.0f}x)"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    ok = True
    for name, r in results.items():
        if r["companies"] == args.companies:
            passed = r["seconds"] <= BAR_SECONDS
            ok = ok and passed
            print(
                f"bar: <= {BAR_SECONDS:.0f} s for {args.records:,} records over "
                f"{args.companies:,} companies, {name}: {'PASS' if passed else 'FAIL'} "
                f"({r['seconds']:.2f} s)"
            )
    if args.json:
        summary = {"records": args.records, "companies": args.companies, "small": args.small,
                   "touched": touched, "bar_seconds": BAR_SECONDS, "same_ratio": ratio,
                   "loadavg_end": os.getloadavg(), "runs": results, "ok": ok}
        print(json.dumps(summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
