"""The real ``cocli-fs sync`` command against moto over HTTP: clear one-line errors (bad
credentials, missing bucket, unreachable endpoint) that lose nothing locally, and a sync killed
with SIGKILL midway through push or pull that resumes without half files or lost changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cocli_fs.dirty import DirtySet
from cocli_fs.locals3 import free_port
from tests.fault_proxy import FaultProxy
from tests.s3nodes import Node, node_config, plain_files, write_config
from tests.s3server import moto_server, s3_bucket, s3_endpoint  # noqa: F401  (fixtures)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cocli_fs.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cocli_fs.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _node_with_changes(
    root: Path, endpoint: str, bucket: str, notes: int = 3, size: int = 4000
) -> None:
    n = Node(root, node_config("pi-a", endpoint, bucket))
    n.new_company("acme", "Acme")
    n.set("acme", email="info@acme.test")
    for i in range(notes):
        n.write_file(f"companies/acme/notes/n{i:03}.md", f"note {i}\n" + "x" * size)
    n.close()


def _one_clear_line(p: subprocess.CompletedProcess[str], *words: str) -> str:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert lines[0].startswith("cocli-fs: sync: ")
    assert any(w in lines[0] for w in words), lines[0]
    return lines[0]


def _dirty_count(root: Path) -> int:
    d = DirtySet(root / ".cocli-fs", fsync=False)
    try:
        return len(d)
    finally:
        d.close()


def test_missing_bucket_one_clear_line(tmp_path: Path, s3_endpoint: str) -> None:  # noqa: F811
    _node_with_changes(tmp_path / "a", s3_endpoint, "no-such-bucket")
    cfg = write_config(tmp_path / "a.toml", "pi-a", s3_endpoint, "no-such-bucket")
    before = _dirty_count(tmp_path / "a")
    line = _one_clear_line(cli("sync", str(tmp_path / "a"), "--config", str(cfg)), "does not exist")
    assert "no-such-bucket" in line
    assert _dirty_count(tmp_path / "a") == before == 5  # nothing lost locally


def test_bad_credentials_one_clear_line(tmp_path: Path) -> None:
    with moto_server(enforce_auth=True) as endpoint:
        _node_with_changes(tmp_path / "a", endpoint, "bucket")
        cfg = write_config(tmp_path / "a.toml", "pi-a", endpoint, "bucket")
        p = cli(
            "sync",
            str(tmp_path / "a"),
            "--config",
            str(cfg),
            env={"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG", "AWS_SECRET_ACCESS_KEY": "nope"},
        )
        _one_clear_line(p, "credentials", "access key", "403")
    assert _dirty_count(tmp_path / "a") == 5


def test_unreachable_endpoint_one_clear_line(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    _node_with_changes(tmp_path / "a", endpoint, "bucket")
    cfg = write_config(tmp_path / "a.toml", "pi-a", endpoint, "bucket")
    p = cli("sync", str(tmp_path / "a"), "--config", str(cfg), env={"AWS_MAX_ATTEMPTS": "2"})
    _one_clear_line(p, "cannot reach")
    assert _dirty_count(tmp_path / "a") == 5


def _kill_when(proc: subprocess.Popen[str], proxy: FaultProxy, requests: int) -> None:
    deadline = time.monotonic() + 60
    while sum(proxy.counts.values()) < requests:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sync_killed_midway_resumes(
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811
    s3_bucket: str,  # noqa: F811
) -> None:
    a_root, b_root = tmp_path / "a", tmp_path / "b"
    # Notes too big for a pack: the pull makes one GET per file, so it can be cut midway.
    _node_with_changes(a_root, s3_endpoint, s3_bucket, notes=60, size=300_000)
    b_cfg_direct = write_config(tmp_path / "b.toml", "pi-b", s3_endpoint, s3_bucket)
    a_cfg_direct = write_config(tmp_path / "a.toml", "pi-a", s3_endpoint, s3_bucket)

    # Push, killed after a few uploads went through a slow link.
    with FaultProxy(s3_endpoint, delay=0.2) as slow:
        a_cfg = write_config(tmp_path / "a-slow.toml", "pi-a", slow.endpoint, s3_bucket)
        proc = start_cli("sync", str(a_root), "--config", str(a_cfg), "--push-only")
        _kill_when(proc, slow, 20)
    assert _dirty_count(a_root) == 62  # nothing cleared: the push did not finish
    p = cli("sync", str(a_root), "--config", str(a_cfg_direct), "--push-only")
    assert p.returncode == 0, p.stderr
    assert _dirty_count(a_root) == 0

    # Pull on b, killed midway through the downloads.
    b_root.mkdir()
    with FaultProxy(s3_endpoint, delay=0.2) as slow:
        b_cfg = write_config(tmp_path / "b-slow.toml", "pi-b", slow.endpoint, s3_bucket)
        proc = start_cli("sync", str(b_root), "--config", str(b_cfg), "--pull-only")
        _kill_when(proc, slow, 20)
    want = plain_files(a_root)
    got = plain_files(b_root)
    assert 0 < len(got) < len(want)  # really midway
    for path, data in got.items():
        assert want[path] == data, path  # never a half file
    p = cli("sync", str(b_root), "--config", str(b_cfg_direct), "--pull-only")
    assert p.returncode == 0, p.stderr
    assert plain_files(b_root) == want
    assert not os.listdir(b_root / ".cocli-fs" / "tmp")
    assert "1 new records" in p.stdout or "0 new records" in p.stdout
    # b's overlay holds a's record exactly once
    b = Node(b_root, node_config("pi-b", s3_endpoint, s3_bucket))
    a = Node(a_root, node_config("pi-a", s3_endpoint, s3_bucket))
    assert b.state.overlay.digest() == a.state.overlay.digest()
    assert _dirty_count(b_root) == 0
    a.close()
    b.close()
