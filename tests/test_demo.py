"""The README's first command tells the whole story: run the demo end to end and check its
evidence lines (it starts moto, three mounts with gossip and S3, compacts, and stops)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.mount
def test_demo_runs_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "cocli_fs.cli", "demo", "--dir", str(workdir), "--stop-at-end"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "the hub's mount now shows 20/20 of them" in out
    assert "the editor's temp file reached the backing store: False" in out
    assert "the hub sees the note: True" in out
    assert "the mount shows the same document before and after: True" in out
    assert "the hub's base file now holds the enriched phone: True" in out
    assert out.count("all digests equal: True") == 2
    # Stopped: no mount and no process left behind.
    for node in ("hub", "worker-1", "worker-2"):
        assert not os.path.ismount(workdir / node / "mnt")
    assert not (workdir / "pids.json").exists()
