#!/usr/bin/env python3
"""Benchmark (issue 6): ``cocli-fs sync`` push+pull vs ``aws s3 sync`` of the data folder.

Set-up (not timed): a local S3 server (moto, in this process, on loopback) whose bucket already
mirrors N companies (``_index.md`` + ``tags.lst`` each); a "worker" data folder and a "peer"
data folder holding the same N companies. Then, on the worker: ``--updates`` field updates (one
journal), ``--new`` new companies and ``--notes`` notes, written the way the mount writes them
(journal records; plain files + the dirty set).

Timed, side by side in one run, each as the real command line tool in a subprocess:

* reference: ``aws s3 sync WORKER s3://bucket`` (push) then ``aws s3 sync s3://bucket PEER``
  (pull), excluding our private folder;
* ours: ``cocli-fs sync WORKER --push-only`` then ``cocli-fs sync PEER --pull-only``;
* then both again with nothing changed.

Requests are counted by kind at the server (one counter for both tools): LIST (ListObjectsV2 /
ListObjects), GET, HEAD, PUT, DELETE, other.

    .venv/bin/python scripts/bench/s3sync.py --companies 20000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cocli_fs import config as config_mod  # noqa: E402
from cocli_fs import sample  # noqa: E402
from cocli_fs.locals3 import credentials, free_port  # noqa: E402
from cocli_fs.state import DataDir, NodeState  # noqa: E402

BUCKET = "cocli-bench"
_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d+)')


class RequestCounter(logging.Handler):
    """Counts the S3 requests the server answered, by kind, from werkzeug's access log."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.counts_lock = threading.Lock()  # not self.lock: Handler owns that

    def emit(self, record: logging.LogRecord) -> None:
        m = _LINE.search(record.getMessage())
        if not m:
            return
        method, target = m.group(1), m.group(2)
        path, _, query = target.partition("?")
        if path.startswith("/moto-api"):
            return
        on_bucket = path.strip("/").count("/") == 0  # no object key: a bucket operation
        if method == "GET" and on_bucket:
            kind = "OTHER" if re.search(r"(^|&)(location|versioning|acl|policy)", query) else "LIST"
        elif method in ("GET", "PUT", "HEAD", "DELETE"):
            kind = method
        else:
            kind = "OTHER"
        with self.counts_lock:
            self.counts[kind] += 1

    def take(self) -> Counter[str]:
        with self.counts_lock:
            out, self.counts = self.counts, Counter()
        return out


def start_server() -> tuple[Any, str, RequestCounter]:
    from moto.server import ThreadedMotoServer

    counter = RequestCounter()
    wlog = logging.getLogger("werkzeug")
    wlog.setLevel(logging.INFO)
    wlog.addHandler(counter)
    wlog.propagate = False
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=True)
    server.start()
    return server, f"http://127.0.0.1:{port}", counter


def populate(endpoint: str, companies: list[sample.Company]) -> None:
    """Put the companies straight into moto's in-process backend (HTTP PUTs to moto run at
    ~100/s here; this takes seconds), then check one object over HTTP."""
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for c in companies:
        base = f"companies/{c.slug}/"
        backend.put_object(BUCKET, base + "_index.md", c.index_md().encode())
        backend.put_object(BUCKET, base + "tags.lst", c.tags_lst().encode())
    got = client.get_object(Bucket=BUCKET, Key=f"companies/{companies[0].slug}/_index.md")
    assert got["Body"].read() == companies[0].index_md().encode()


def write_tree(root: Path, n: int) -> list[sample.Company]:
    """sample.write_tree without its os.sync() (which can hang behind any stuck FUSE mount on
    the machine; durability does not matter for a benchmark tree)."""
    for sub in ("companies", "people", "wal"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    out = list(sample.companies(n))
    for c in out:
        sample.write_company(root, c)
    return out


def tree_digest(root: Path) -> str:
    """A hash of every plain file under companies/ and people/ (paths and contents)."""
    import hashlib

    h = hashlib.sha256()
    for top in ("companies", "people"):
        for dirpath, dirnames, names in os.walk(root / top):
            dirnames.sort()
            for n in sorted(names):
                f = Path(dirpath, n)
                h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def write_config(path: Path, node: str, endpoint: str) -> Path:
    path.write_text(
        f'node = "{node}"\n[gossip]\nenabled = false\n'
        f'[s3]\nbucket = "{BUCKET}"\nendpoint_url = "{endpoint}"\n'
    )
    return path


def make_changes(root: Path, cfg_path: Path, n: int, updates: int, new: int, notes: int) -> None:
    """What a day on one node leaves behind, written as the mount writes it."""
    import random

    cfg = config_mod.load(cfg_path)
    state = NodeState(DataDir(root), cfg)
    state.load()
    rnd = random.Random(1)
    existing = list(sample.companies(n))
    assert state.journal is not None
    batch = []
    for i in range(updates):
        c = existing[rnd.randrange(n)]
        field = rnd.choice(["email", "phone_number", "website", "employees"])
        batch += state.stamp(f"companies/{c.slug}", {field: f"value-{i}"})
    state.journal.write_sync(batch)
    for r in batch:
        state.overlay.apply(r)
    dirty = state.dirty
    for c in sample.companies(new, seed=99, start=n):
        sample.write_company(root, c)
        dirty.mark(f"companies/{c.slug}/_index.md")
        dirty.mark(f"companies/{c.slug}/tags.lst")
    for i in range(notes):
        c = existing[rnd.randrange(n)]
        rel = f"companies/{c.slug}/notes/2026-11-26-note-{i}.md"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# Note {i}\n\nFollow up with {c.name}.\n")
        dirty.mark(rel)
    state.close()


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return dt, p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""


def fmt(c: Counter[str]) -> str:
    return " / ".join(str(c.get(k, 0)) for k in ("LIST", "GET", "HEAD", "PUT"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--companies", "-n", type=int, default=300_000)
    ap.add_argument("--updates", type=int, default=5_000)
    ap.add_argument("--new", type=int, default=50)
    ap.add_argument("--notes", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=ROOT / "bench-data" / "s3sync")
    ap.add_argument("--keep", action="store_true", help="keep the data folders")
    ap.add_argument(
        "--rounds", type=int, default=2, help="2: also time a sync with nothing changed"
    )
    ap.add_argument("--json", action="store_true", help="also print the results as JSON (last)")
    a = ap.parse_args()

    env = {**os.environ, **credentials()}
    os.environ.update(credentials())
    aws = shutil.which("aws", path=str(ROOT / ".venv" / "bin")) or shutil.which("aws")
    if aws is None:
        sys.exit("aws CLI not found: .venv/bin/pip install awscli (bench extra)")
    if a.dir.exists():
        shutil.rmtree(a.dir)
    a.dir.mkdir(parents=True)
    # Separate peers for the two tools, so neither sees the other's downloads.
    worker, peer, peer_aws = a.dir / "worker", a.dir / "peer", a.dir / "peer-aws"

    print(f"set-up: {a.companies:,} companies ...", flush=True)
    t0 = time.perf_counter()
    # All trees before the bucket: aws s3 sync then sees local copies older than the objects,
    # i.e. in step (it compares sizes and modification times, both directions).
    companies = write_tree(worker, a.companies)
    write_tree(peer, a.companies)
    write_tree(peer_aws, a.companies)
    time.sleep(1.1)
    server, endpoint, counter = start_server()
    try:
        populate(endpoint, companies)
        wcfg = write_config(a.dir / "worker.toml", "worker", endpoint)
        pcfg = write_config(a.dir / "peer.toml", "peer", endpoint)
        make_changes(worker, wcfg, a.companies, a.updates, a.new, a.notes)
        print(f"set-up done in {time.perf_counter() - t0:.1f} s", flush=True)
        counter.take()

        s3url = f"s3://{BUCKET}"
        aws_push = [
            aws,
            "s3",
            "sync",
            str(worker),
            s3url,
            "--exclude",
            ".cocli-fs/*",
            "--endpoint-url",
            endpoint,
            "--only-show-errors",
        ]
        aws_pull = [
            aws,
            "s3",
            "sync",
            s3url,
            str(peer_aws),
            "--exclude",
            ".cocli-fs/*",
            "--exclude",
            "manifests/*",
            "--exclude",
            "packs/*",
            "--endpoint-url",
            endpoint,
            "--only-show-errors",
        ]
        ours = [sys.executable, "-m", "cocli_fs.cli", "sync"]
        our_push = [*ours, str(worker), "--config", str(wcfg), "--push-only"]
        our_pull = [*ours, str(peer), "--config", str(pcfg), "--pull-only"]

        rows = []
        for label in ("changes", "nothing changed")[: a.rounds]:
            t_ap, _ = timed(aws_push, env)
            c_ap = counter.take()
            t_al, _ = timed(aws_pull, env)
            c_al = counter.take()
            t_op, s_op = timed(our_push, env)
            c_op = counter.take()
            t_ol, s_ol = timed(our_pull, env)
            c_ol = counter.take()
            rows.append((label, t_ap, c_ap, t_al, c_al, t_op, c_op, t_ol, c_ol))
            print(f"[{label}] ours push: {s_op}\n[{label}] ours pull: {s_ol}", flush=True)
    finally:
        server.stop()

    print()
    print(
        f"S3 sync at {a.companies:,} companies ({2 * a.companies:,} objects); changes on one "
        f"node: {a.updates:,} field updates, {a.new} new companies, {a.notes} notes"
    )
    print()
    print("| case | tool | push s | pull s | total s | LIST / GET / HEAD / PUT | speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, t_ap, c_ap, t_al, c_al, t_op, c_op, t_ol, c_ol in rows:
        ref, us = t_ap + t_al, t_op + t_ol
        print(
            f"| {label} | aws s3 sync | {t_ap:.2f} | {t_al:.2f} | {ref:.2f} | "
            f"{fmt(c_ap + c_al)} | 1× |"
        )
        print(
            f"| {label} | cocli-fs sync | {t_op:.2f} | {t_ol:.2f} | {us:.2f} | "
            f"{fmt(c_op + c_ol)} | {ref / us:.0f}× |"
        )
    lists = rows[0][6]["LIST"] + rows[0][8]["LIST"]
    speed = (rows[0][1] + rows[0][3]) / (rows[0][5] + rows[0][7])
    print()
    print(
        f"bars: LIST requests {lists} (≤ 5: {'ok' if lists <= 5 else 'MISSED'}); "
        f"speed-up {speed:.0f}× (≥ 50×: {'ok' if speed >= 50 else 'MISSED'})"
    )
    # Both peers must hold the same files as the worker afterwards, and ours the records.
    want = tree_digest(worker)
    same = {"cocli-fs": tree_digest(peer) == want, "aws": tree_digest(peer_aws) == want}
    print(f"peers equal the worker's files: {same}")
    if a.json:
        keys = ("aws_push", "aws_pull", "ours_push", "ours_pull")
        print(json.dumps({
            "companies": a.companies, "updates": a.updates, "new": a.new, "notes": a.notes,
            "rounds": [
                {"case": r[0], **{k: {"seconds": r[1 + 2 * i], "requests": dict(r[2 + 2 * i])}
                                  for i, k in enumerate(keys)}}
                for r in rows
            ],
            "lists": lists, "speedup": speed, "peers_equal": same,
        }, indent=2))
    if not all(same.values()):
        return 1
    if not a.keep:
        shutil.rmtree(a.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
