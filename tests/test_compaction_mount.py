"""End to end on a mounted hub: while fields are written through the mount and ``cocli-fs compact``
runs (twice, once concurrently with the writes), a reader of ``_index.md`` never sees a value go
back in time, and afterwards the base files hold the values and nothing is pending."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.mounting import Mount, sample_data

pytestmark = pytest.mark.mount

EMAIL = re.compile(r"^email: v(\d+)@x$", re.M)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cocli_fs.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_reading_index_during_compaction_never_goes_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    slugs = sample_data(data, 4)
    cfg = tmp_path / "hub.toml"
    cfg.write_text('node = "hub"\n[gossip]\nenabled = false\n[hub]\nenabled = true\n')
    with Mount(data, tmp_path / "mnt", node="hub", config=cfg) as m:
        ent = m.path("companies", slugs[0])
        index = ent / "_index.md"
        stop = threading.Event()
        seen: list[int] = []
        errors: list[str] = []

        def reader() -> None:
            while not stop.is_set():
                try:
                    text = index.read_text()
                except OSError as exc:
                    errors.append(f"read failed: {exc}")
                    return
                found = EMAIL.findall(text)
                seen.append(int(found[0]) if found else 0)

        def write(i: int) -> None:
            (ent / "_fields" / "email").write_text(f"v{i}@x\n")
            (m.path("companies", slugs[1 + i % 3], "_fields", "note")).write_text(f"n{i}\n")

        t = threading.Thread(target=reader)
        t.start()
        try:
            for i in range(1, 31):
                write(i)
            first = _cli("compact", str(data), "--config", str(cfg))
            assert first.returncode == 0, first.stderr
            assert "records compacted  60" in first.stdout
            # a second compaction runs while the writes go on
            proc = subprocess.Popen(
                [sys.executable, "-m", "cocli_fs.cli", "compact", str(data), "--config", str(cfg)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(31, 61):
                write(i)
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            last = _cli("compact", str(data), "--config", str(cfg))
            assert last.returncode == 0, last.stderr
        finally:
            stop.set()
            t.join(10)
        assert not errors
        assert len(seen) > 20  # the reader really ran throughout
        backwards = [(a, b) for a, b in itertools.pairwise(seen) if b < a]
        assert not backwards, backwards[:5]
        assert seen[-1] == 60
        # the base file in the store now holds the value; the overlay has nothing left
        assert "email: v60@x\n" in (data / "companies" / slugs[0] / "_index.md").read_text()
        status = _cli("status", str(data), "--config", str(cfg), "--json")
        info = json.loads(status.stdout)
        assert info["mounted"] is True and info["pending_records"] == 0
        assert info["overlay_entries"] == 0
        assert "email: v60@x\n" in index.read_text()
