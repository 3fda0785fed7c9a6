#!/usr/bin/env python3
"""Start-up replay benchmark: how fast ``NodeState.load`` rebuilds the overlay from ``wal/``, and
how much memory the overlay holds.

It generates N journal records over M companies (default 1,000,000 over 300,000) into a temporary
data folder, spread over several node-day files, each record a distinct ``(target, field)`` so
that N records make N live overlay entries. Every measurement runs in a fresh subprocess, so the
resident-memory delta is the overlay's and nothing else's:

* ``load``     NodeState.load(): read, checksum, decode, LWW-apply, recover seq and clock;
* ``split``    reference: read the same bytes and split them into records and fields (the least
               any reader must do, in C);
* ``cocli``    reference: a naive reader written from cocli's documented format
               (tests/cocli_reader.py), which builds one object per record and applies nothing.

Bars (DESIGN §9): >= 200,000 records/s, <= 1 GiB resident for 1,000,000 live entries.

    .venv/bin/python scripts/bench/replay.py                 # full run (1M records)
    .venv/bin/python scripts/bench/replay.py -n 50000 -m 20000   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cocli_fs import record as rec  # noqa: E402
from cocli_fs.journal import journal_name  # noqa: E402

FIELDS = ["website", "email", "phone", "employees", "industry", "city", "linkedin", "tags"]
BAR_RATE = 200_000
BAR_RSS = 1 << 30


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def field_name(i: int, m: int) -> str:
    k = i // m
    return FIELDS[k] if k < len(FIELDS) else f"{FIELDS[k % len(FIELDS)]}_{k // len(FIELDS)}"


def value_for(i: int, name: str) -> Any:
    if name.startswith("tags"):
        return ["prospect", f"batch-{i % 97}"]
    if name.startswith("employees"):
        return i % 5000
    if name.startswith("email"):
        return f"info{i % 13}@company-{i}.example"
    return f"{name} value for record {i} of the replay benchmark"


def generate(wal: Path, n: int, m: int, nodes: int, days: int) -> int:
    """Write n records of ``nodes`` nodes over ``days`` UTC days. Returns bytes written."""
    wal.mkdir(parents=True, exist_ok=True)
    start_ms = 1_764_000_000_000 - (days - 1) * 86_400_000  # a fixed date: runs are comparable
    per_day = -(-n // days)
    files: dict[str, list[bytes]] = {}
    seqs = [0] * nodes
    for i in range(n):
        node = f"node-{i % nodes}"
        seqs[i % nodes] += 1
        day = i // per_day
        ms = start_ms + day * 86_400_000 + (i % per_day) * 20
        name = field_name(i, m)
        kind, text = rec.encode_value(value_for(i, name))
        r = rec.Record(
            hlc=ms << rec.HLC_LOGICAL_BITS | (i & 0xFF),
            node_id=node,
            seq=seqs[i % nodes],
            target=f"companies/company-{i % m:07d}",
            field=name,
            kind=kind,
            value=text,
            campaign_name="roadshow",
        )
        files.setdefault(journal_name(r.day, node), []).append(rec.encode(r))
    total = 0
    for fname, chunks in files.items():
        data = b"".join(chunks)
        (wal / fname).write_bytes(data)
        total += len(data)
    return total


# --- measurements, each in its own process -------------------------------------------------------


def measure_load(data_dir: Path) -> dict[str, Any]:
    import gc

    from cocli_fs.config import Config
    from cocli_fs.state import DataDir, NodeState

    gc.collect()
    state = NodeState(DataDir(data_dir), Config(node="bench-reader"))
    before = rss_bytes()
    t0, c0 = time.perf_counter(), time.process_time()
    report = state.load()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.collect()
    after = rss_bytes()
    state.close()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "records": report.records,
        "files": report.files,
        "corrupt": len(report.corrupt),
        "entries": state.overlay.entries,
        "targets": len(state.overlay.by_target),
        "rss_delta": after - before,
        "rss_total": after,
        "digest": state.overlay.digest(),
    }


def measure_split(data_dir: Path) -> dict[str, Any]:
    before = rss_bytes()
    t0 = time.perf_counter()
    count = 0
    for p in sorted((data_dir / "wal").iterdir()):
        for chunk in p.read_bytes().split(b"\x1e"):
            if chunk:
                chunk.split(b"\x1f")
                count += 1
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "records": count, "rss_delta": rss_bytes() - before}


def measure_cocli(data_dir: Path) -> dict[str, Any]:
    from tests.cocli_reader import read_text

    before = rss_bytes()
    t0 = time.perf_counter()
    kept = []
    for p in sorted((data_dir / "wal").iterdir()):
        kept.extend(read_text(p.read_text(encoding="utf-8")))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "records": len(kept), "rss_delta": rss_bytes() - before}


MEASURES = {"load": measure_load, "split": measure_split, "cocli": measure_cocli}


def run_child(kind: str, data_dir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", kind, str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def best_of(kind: str, data_dir: Path, repeat: int) -> dict[str, Any]:
    runs = [run_child(kind, data_dir) for _ in range(repeat)]
    return min(runs, key=lambda r: r["seconds"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", "--records", type=int, default=1_000_000)
    ap.add_argument("-m", "--companies", type=int, default=300_000)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    ap.add_argument("--dir", type=Path, help="keep the generated data here (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--measure", nargs=2, metavar=("KIND", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.measure:
        kind, data = args.measure
        print(json.dumps(MEASURES[kind](Path(data))))
        return 0

    with tempfile.TemporaryDirectory(prefix="cocli-replay-") as tmp:
        data_dir = args.dir or Path(tmp)
        t0 = time.perf_counter()
        size = generate(data_dir / "wal", args.records, args.companies, args.nodes, args.days)
        gen_s = time.perf_counter() - t0
        nfiles = len(list((data_dir / "wal").iterdir()))
        print(
            f"generated {args.records:,} records over {args.companies:,} companies: "
            f"{nfiles} journal files, {size / 2**20:.1f} MiB in {gen_s:.1f} s",
            flush=True,
        )
        load = best_of("load", data_dir, args.repeat)
        split = best_of("split", data_dir, args.repeat)
        cocli = best_of("cocli", data_dir, args.repeat)

    rate = load["records"] / load["seconds"]
    results = {
        "records": args.records,
        "companies": args.companies,
        "bytes": size,
        "load": load,
        "split": split,
        "cocli": cocli,
        "rate": rate,
        "vs_split": load["seconds"] / split["seconds"],
        "vs_cocli": load["seconds"] / cocli["seconds"],
        "rate_ok": rate >= BAR_RATE,
        "rss_ok": load["rss_delta"] <= BAR_RSS,
    }
    results["loadavg"] = os.getloadavg()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        "machine load average: {:.1f} {:.1f} {:.1f} on {} cores (other processes compete for the "
        "CPU: the CPU-time rate is the steadier number)".format(*results["loadavg"], os.cpu_count())
    )
    mib = 2**20
    ok = {True: "OK", False: "MISSED"}
    entries = max(load["entries"], 1)
    print(
        f"NodeState.load : {load['seconds']:.2f} s  {rate:,.0f} records/s"
        f" (CPU {load['cpu_seconds']:.2f} s: {load['records'] / load['cpu_seconds']:,.0f}/s)  "
        f"({load['entries']:,} live entries, {load['targets']:,} targets, "
        f"{load['corrupt']} corrupt)  [bar >= {BAR_RATE:,}/s: {ok[results['rate_ok']]}]"
    )
    print(
        f"overlay memory : {load['rss_delta'] / mib:,.0f} MiB RSS delta "
        f"({load['rss_delta'] / entries:.0f} B/entry; process {load['rss_total'] / mib:,.0f} MiB)"
        f"  [bar <= 1024 MiB: {ok[results['rss_ok']]}]"
    )
    split_rate = split["records"] / split["seconds"]
    cocli_rate = cocli["records"] / cocli["seconds"]
    print(
        f"reference split: {split['seconds']:.2f} s  {split_rate:,.0f} records/s"
        f"  -> load takes {results['vs_split']:.1f}x"
    )
    print(
        f"reference cocli: {cocli['seconds']:.2f} s  {cocli_rate:,.0f} records/s"
        f"  -> load takes {results['vs_cocli']:.2f}x"
        f"  (naive reader, no checksum, no merge; {cocli['rss_delta'] / mib:,.0f} MiB)"
    )
    return 0 if results["rate_ok"] and results["rss_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
