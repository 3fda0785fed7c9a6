"""Whole-entity operations and concurrency through a real mount: mv, cp -r, rm -r, two
processes writing the same field."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocli_fs.journal import scan_wal
from tests.mounting import Mount, sample_data

pytestmark = pytest.mark.mount


@pytest.fixture
def m(tmp_path: Path) -> Iterator[Mount]:
    tmp = tmp_path
    sample_data(tmp / "data", 3)
    with Mount(tmp / "data", tmp / "mnt", node="a") as mount:
        yield mount


def slugs(m: Mount) -> list[str]:
    return sorted(os.listdir(m.data / "companies"))


def test_mv_entity_moves_base_and_carries_overlay(m: Mount) -> None:
    a = slugs(m)[0]
    src = m.path("companies", a)
    (src / "_fields" / "email").write_text("moved@example.org\n")
    (src / "notes").mkdir()
    (src / "notes" / "n.md").write_text("note\n")
    view = (src / "_index.md").read_text()
    subprocess.run(["mv", str(src), str(m.path("companies", "renamed-co"))], check=True)
    dst = m.path("companies", "renamed-co")
    assert not src.exists()
    assert (dst / "_index.md").read_text() == view
    assert (dst / "_fields" / "email").read_text() == "moved@example.org\n"
    assert (dst / "notes" / "n.md").read_text() == "note\n"
    assert (m.data / "companies" / "renamed-co" / "notes" / "n.md").exists()
    assert not (m.data / "companies" / a).exists()
    recs = [(r.target, r.field, r.tombstone) for r in scan_wal(m.data / "wal")]
    assert (f"companies/{a}", "email", False) in recs
    assert ("companies/renamed-co", "email", False) in recs
    assert recs[-1] == (f"companies/{a}", "email", True)


def test_cp_r_entity_copies_the_merged_view_as_plain_files(m: Mount) -> None:
    a = slugs(m)[1]
    (m.path("companies", a, "_fields", "email")).write_text("copy@example.org\n")
    n_before = len(list(scan_wal(m.data / "wal")))
    subprocess.run(["cp", "-r", str(m.path("companies", a)), str(m.path("companies", "copy-co"))],
                   check=True)
    dst = m.path("companies", "copy-co")
    assert (dst / "_index.md").read_text() == m.path("companies", a, "_index.md").read_text()
    base = (m.data / "companies" / "copy-co" / "_index.md").read_text()
    assert "email: copy@example.org" in base  # the copy's base holds the merged view
    assert sorted(os.listdir(m.data / "companies" / "copy-co")) == ["_index.md", "tags.lst"]
    assert len(list(scan_wal(m.data / "wal"))) == n_before  # nothing to journal


def test_rm_r_entity(m: Mount) -> None:
    a = slugs(m)[2]
    n_before = len(list(scan_wal(m.data / "wal")))
    subprocess.run(["rm", "-rf", str(m.path("companies", a))], check=True)
    assert not m.path("companies", a).exists()
    assert not (m.data / "companies" / a).exists()
    assert len(list(scan_wal(m.data / "wal"))) == n_before


def test_concurrent_writers_one_wins_both_journaled(m: Mount) -> None:
    a = slugs(m)[0]
    f = m.path("companies", a, "_fields", "owner")
    code = (
        "import sys\n"
        "for i in range(30):\n"
        "    open(sys.argv[1],'w').write(f'{sys.argv[2]}-{i}\\n')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(f), who]) for who in ("p", "q")]
    for p in procs:
        assert p.wait(60) == 0
    recs = [r for r in scan_wal(m.data / "wal") if r.field == "owner"]
    assert {r.value for r in recs} == {f"{w}-{i}" for w in "pq" for i in range(30)}
    winner = max(recs, key=lambda r: r.order)
    assert f.read_text() == winner.value + "\n"
