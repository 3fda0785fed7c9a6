"""``cocli-fs demo``: a hub and two workers on loopback with a local S3 server, walking through
the system's story and printing the evidence of each step.

Everything lives under ``--dir`` (default ``demo-cluster/``): one data folder and one mount per
node, configs, the cluster key, logs and a ``pids.json`` that ``cocli-fs demo --stop`` uses to
stop everything cleanly. Rerunnable: a new run first stops and removes what a previous one left.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import sample
from .locals3 import LocalS3, credentials, free_port
from .locals3 import client as s3_client
from .process import wait_exit

NODES = ("hub", "worker-1", "worker-2")
BUCKET = "cocli-demo"
SEED_COMPANIES = 300


@dataclass
class DemoNode:
    name: str
    root: Path
    gossip_port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def mnt(self) -> Path:
        return self.root / "mnt"

    @property
    def config(self) -> Path:
        return self.root / "cocli-fs.toml"

    @property
    def log(self) -> Path:
        return self.root / "mount.log"


def _say(msg: str) -> None:
    print(msg, flush=True)


def _step(n: int, title: str) -> None:
    _say(f"\n\033[1m[{n}] {title}\033[0m" if sys.stdout.isatty() else f"\n[{n}] {title}")


def _cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cocli_fs.cli", *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{res.stderr.strip()}")
    return res


def _env() -> dict[str, str]:
    return {**os.environ, **credentials()}


def _wait(what: str, cond: Callable[[], bool], timeout: float = 20.0) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - t0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _write_config(node: DemoNode, peers: list[DemoNode], s3_endpoint: str, key: Path) -> None:
    peer_list = ", ".join(f'"127.0.0.1:{p.gossip_port}"' for p in peers)
    node.config.write_text(
        f'node = "{node.name}"\n'
        "[gossip]\n"
        f'listen = "127.0.0.1:{node.gossip_port}"\n'
        f"peers = [{peer_list}]\n"
        f'key_file = "{key}"\n'
        "[s3]\n"
        f'bucket = "{BUCKET}"\n'
        f'endpoint_url = "{s3_endpoint}"\n'
        'interval = "5s"\n'
        "[hub]\n"
        f"enabled = {'true' if node.name == 'hub' else 'false'}\n",
        encoding="utf-8",
    )


# --- lifecycle ----------------------------------------------------------------------------------


def stop(workdir: Path, quiet: bool = False) -> None:
    """Unmount every demo mount and stop every demo process (idempotent)."""
    pid_file = workdir / "pids.json"
    info: dict[str, Any] = json.loads(_read(pid_file) or "{}")
    for mnt in info.get("mounts", []):
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
    for pid in info.get("pids", []):
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + 10
    for pid in info.get("pids", []):
        if not wait_exit(pid, max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    if info and not quiet:
        _say(f"stopped the demo cluster in {workdir}")


def _save_pids(workdir: Path, pids: list[int], mounts: list[Path]) -> None:
    (workdir / "pids.json").write_text(
        json.dumps({"pids": pids, "mounts": [str(m) for m in mounts]}), encoding="utf-8"
    )


def _mount(node: DemoNode) -> subprocess.Popen[bytes]:
    node.mnt.mkdir(parents=True, exist_ok=True)
    log = open(node.log, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "cocli_fs.cli", "mount", str(node.data), str(node.mnt),
            "--config", str(node.config), "--foreground",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_env(),
        start_new_session=True,
    )

    def mounted() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"mount of {node.name} exited; see {node.log}")
        return os.path.ismount(node.mnt)

    _wait(f"mount of {node.name}", mounted, timeout=30)
    return proc


def _status(node: DemoNode) -> dict[str, Any]:
    out = _cli("status", node.data, "--config", node.config, "--json").stdout
    data: dict[str, Any] = json.loads(out)
    return data


# --- the story ----------------------------------------------------------------------------------


def run(workdir: Path) -> None:
    t_start = time.monotonic()
    workdir = workdir.resolve()
    stop(workdir, quiet=True)
    for name in NODES:
        shutil.rmtree(workdir / name, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    pids: list[int] = []
    mounts: list[Path] = []

    _step(1, "Start a local S3 server and write the cluster's configuration")
    s3 = LocalS3(log=workdir / "s3.log").start()
    assert s3.proc is not None
    pids.append(s3.proc.pid)
    _save_pids(workdir, pids, mounts)
    key = workdir / "cluster.key"
    key.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
    key.chmod(0o600)
    nodes = [DemoNode(n, workdir / n, free_port()) for n in NODES]
    for node in nodes:
        node.data.mkdir(parents=True)
        _write_config(node, [p for p in nodes if p is not node], s3.endpoint, key)
    client = s3_client(s3.endpoint)
    client.create_bucket(Bucket=BUCKET)
    _say(f"    S3 endpoint {s3.endpoint}, bucket {BUCKET}; nodes: {', '.join(NODES)}")

    _step(2, f"Seed {SEED_COMPANIES} companies into S3, as an existing cocli bucket would hold")
    seed = workdir / "seed"
    shutil.rmtree(seed, ignore_errors=True)
    companies = sample.write_tree(seed, SEED_COMPANIES, notes_every=10)
    files = [p for p in sorted(seed.rglob("*")) if p.is_file()]

    def put(path: Path) -> None:
        client.put_object(Bucket=BUCKET, Key=str(path.relative_to(seed)), Body=path.read_bytes())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, files))
    _say(f"    {len(files)} objects in the bucket")
    for node in nodes:
        res = _cli("sync", node.data, "--config", node.config, "--bootstrap")
        _say(f"    {node.name}: sync --bootstrap: {res.stdout.strip().splitlines()[-1:]}")

    _step(3, "Mount every node (FUSE + gossip + periodic S3 sync in one process each)")
    for node in nodes:
        proc = _mount(node)
        pids.append(proc.pid)
        mounts.append(node.mnt)
        _save_pids(workdir, pids, mounts)
        n = len(os.listdir(node.mnt / "companies"))
        _say(f"    {node.name}: mounted at {node.mnt} — ls companies/ shows {n} folders")

    hub, w1, w2 = nodes
    first = companies[0]

    _step(4, "A scraper on worker-1 adds 20 new companies as plain files (-> backing store -> S3)")
    new = list(sample.companies(20, seed=99, start=SEED_COMPANIES))
    for c in new:
        d = w1.mnt / "companies" / c.slug
        d.mkdir()
        (d / "_index.md").write_text(c.index_md(), encoding="utf-8")
        (d / "tags.lst").write_text(c.tags_lst(), encoding="utf-8")
    _cli("sync", w1.data, "--config", w1.config)
    for node in (hub, w2):
        _cli("sync", node.data, "--config", node.config)
    seen = sum((hub.mnt / "companies" / c.slug / "_index.md").exists() for c in new)
    _say(f"    worker-1 synced; the hub's mount now shows {seen}/20 of them")

    _step(5, "An enrichment batch on worker-1 sets 200 phone numbers (journal -> gossip)")
    t0 = time.monotonic()
    targets = companies[1:201]
    for i, c in enumerate(targets):
        (w1.mnt / "companies" / c.slug / "_fields" / "phone_number").write_text(
            f"+1-555-01{i:02d}-{i:04d}\n", encoding="utf-8"
        )
    wrote = time.monotonic() - t0
    last = targets[-1]
    want = f"+1-555-01{199:02d}-{199:04d}\n"
    for node in (w2, hub):
        field_file = node.mnt / "companies" / last.slug / "_fields" / "phone_number"
        dt = _wait(f"enrichment on {node.name}", _shows(field_file, want))
        _say(f"    {node.name} shows the last value {dt * 1000:.0f} ms after worker-1's close()")
    _say(f"    200 durable field writes through the mount took {wrote:.2f} s")
    journal = sorted((w1.data / "wal").glob("*_worker-1.usv"))
    _say(f"    worker-1's journal: {journal[-1].name}, {journal[-1].stat().st_size} bytes")

    _step(6, "A human edits _index.md on the hub with an editor-like atomic save")
    index = hub.mnt / "companies" / first.slug / "_index.md"
    text = index.read_text(encoding="utf-8").replace(f"name: {first.name}", "name: Renamed Inc")
    tmp = index.with_name(".tmp-edit")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, index)
    dt = _wait(
        "the rename on worker-2",
        lambda: "name: Renamed Inc" in _read(w2.mnt / "companies" / first.slug / "_index.md"),
    )
    _say(f"    worker-2's mount shows 'name: Renamed Inc' after {dt * 1000:.0f} ms")
    recs = _journal_records(hub.data, "hub", f"companies/{first.slug}")
    _say(f"    the hub's journal holds {len(recs)} record(s) for it: {recs}")
    leaked = (hub.data / "companies" / first.slug / ".tmp-edit").exists()
    _say(f"    the editor's temp file reached the backing store: {leaked}")

    _step(7, "A note is added on worker-2 (a plain file -> S3 -> the other nodes)")
    note = w2.mnt / "companies" / first.slug / "notes" / "2026-11-25-demo.md"
    note.parent.mkdir(exist_ok=True)
    note.write_text("# Demo call\n\nThey want a quote.\n", encoding="utf-8")
    _cli("sync", w2.data, "--config", w2.config)
    _cli("sync", hub.data, "--config", hub.config)
    hub_note = hub.mnt / "companies" / first.slug / "notes" / "2026-11-25-demo.md"
    _say(f"    the hub sees the note: {hub_note.exists()}")

    _step(8, "Before compaction: every node holds the same overlay (status digests)")
    _show_status(nodes)

    _step(9, "The hub compacts the journals into the base files and syncs")
    before = _read(hub.mnt / "companies" / last.slug / "_index.md")
    res = _cli("compact", hub.data, "--config", hub.config)
    for line in res.stdout.strip().splitlines():
        _say("    " + line)
    _cli("sync", hub.data, "--config", hub.config)
    for node in (w1, w2):
        _cli("sync", node.data, "--config", node.config)
    after = _read(hub.mnt / "companies" / last.slug / "_index.md")
    base = _read(hub.data / "companies" / last.slug / "_index.md")
    _say(f"    the mount shows the same document before and after: {before == after}")
    _say(f"    the hub's base file now holds the enriched phone: {want.strip() in base}")

    _step(10, "cocli-fs status on every node after compaction: converged?")
    same = _show_status(nodes)

    _say(f"\nThe demo took {time.monotonic() - t_start:.0f} s. The cluster runs on:")
    for node in nodes:
        _say(f"    {node.name:<9} {node.mnt}")
    _say("Explore with ls, cat, grep -r or an editor; `cocli-fs status DATA` shows a node's state.")
    _say(f"Stop everything with:  scripts/demo --stop   (or: cocli-fs demo --stop --dir {workdir})")
    if not same:
        raise RuntimeError("the nodes did not converge")


def _show_status(nodes: list[DemoNode]) -> bool:
    digests = set()
    for node in nodes:
        st = _status(node)
        digests.add(st["digest"])
        peers = ", ".join(f"{p['address']}={p['state']}" for p in st.get("peers", []))
        _say(
            f"    {node.name:<9} digest {st['digest']}  pending {st['pending_records']}"
            f"  dirty {st['dirty']}  peers: {peers}"
        )
    _say(f"    all digests equal: {len(digests) == 1}")
    return len(digests) == 1


def _journal_records(data: Path, node: str, target: str) -> list[str]:
    """``field=value`` of the records ``node`` journaled for ``target`` (read from disk)."""
    from .journal import journal_files, read_journal

    out = []
    for path in journal_files(data / "wal"):
        if path.name.endswith(f"_{node}.usv"):
            recs = read_journal(path).records
            out += [f"{r.field}={r.value}" for r in recs if r.target == target]
    return out


def _shows(path: Path, want: str) -> Callable[[], bool]:
    return lambda: _read(path) == want


def main(args: argparse.Namespace) -> int:
    workdir: Path = args.dir
    if args.stop:
        stop(workdir)
        return 0
    try:
        run(workdir)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"cocli-fs demo: {exc}", file=sys.stderr)
        stop(workdir, quiet=True)
        return 1
    except BaseException:
        stop(workdir, quiet=True)
        raise
    if args.stop_at_end:
        stop(workdir)
    return 0
