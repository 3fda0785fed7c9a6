"""Read-ahead for walks: which folders are read (no mount), and the child process's life."""

from __future__ import annotations

import mmap
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from cocli_fs import walkahead
from cocli_fs.walkahead import ReadAhead, WalkAhead, serve
from tests.residency import evict, resident_pages

NAMES = [f"c{i:03d}" for i in range(100)]


def _planner(depth: int = 8) -> tuple[WalkAhead, list[str]]:
    listed: list[str] = []

    def lister(path: str) -> list[str]:
        listed.append(path)
        return list(NAMES)

    return WalkAhead("/data", depth=depth, lister=lister), listed


def test_a_walk_is_read_ahead_once_per_folder() -> None:
    w, listed = _planner()
    assert w.plan("companies", "c000") == []  # one visit is no walk yet
    first = w.plan("companies", "c001")
    assert first == [f"companies/c{i:03d}" for i in range(2, 10)]
    assert w.plan("companies", "c002") == ["companies/c010"]  # only what is new
    assert w.plan("companies", "c004") == ["companies/c011", "companies/c012"]  # hints dropped
    assert listed == ["/data/companies"]  # the order is listed once


def test_random_visits_read_nothing() -> None:
    w, _ = _planner()
    for slug in ("c050", "c007", "c093", "c020", "c001"):
        assert w.plan("companies", slug) == []


def test_the_end_of_the_folder_and_unknown_names() -> None:
    w, listed = _planner()
    w.plan("companies", "c097")
    assert w.plan("companies", "c098") == ["companies/c099"]
    assert w.plan("companies", "c099") == []
    assert w.plan("companies", "new-entity") == []  # not in the order: listed again, later
    assert len(listed) == 1  # ... but not more often than REFRESH_S


def test_the_child_reads_ahead_and_exits_when_the_mount_goes(tmp_path: Path) -> None:
    comp = tmp_path / "companies"
    for n in NAMES[:5]:
        (comp / n / "notes").mkdir(parents=True)
    ra = ReadAhead(str(tmp_path))
    ra.start()
    assert ra._proc is not None
    for n in NAMES[:5]:
        ra.visited("companies", n)
    ra.stop()  # closes the pipe: the child ends on its own
    assert ra._proc is None
    ra.visited("companies", "c001")  # after stop: nothing, no error


def test_a_dead_child_does_not_break_the_mount_and_is_replaced(tmp_path: Path) -> None:
    ra = ReadAhead(str(tmp_path))
    ra.start()
    assert ra._proc is not None
    ra._proc.send_signal(signal.SIGKILL)
    ra._proc.wait()
    for _ in range(3):
        ra.visited("companies", "c001")  # EPIPE is swallowed, then hints stop for a while
    assert ra._fd == -1 and ra.restarts == 0
    ra._started -= 61  # a minute later, the next hint starts another child
    ra.visited("companies", "c001")
    assert ra.restarts == 1 and ra._proc is not None and ra._proc.poll() is None
    ra.visited("companies", "c002")
    assert ra._fd >= 0
    ra.stop()
    assert ra._proc is None


def test_serve_reads_only_the_newest_hint_of_a_batch(tmp_path: Path) -> None:
    comp = tmp_path / "companies"
    for n in NAMES[:3]:
        (comp / n).mkdir(parents=True)
    r, w = os.pipe()
    order = os.listdir(comp)  # the store's own order, which walks follow
    os.write(w, f"companies/{order[0]}\ncompanies/{order[1]}\ncompanies/c0".encode())
    os.close(w)
    # one batch: only its newest hint counts, one visit is no walk; a partial line is kept
    assert serve(str(tmp_path), r) == 0
    os.close(r)


def test_a_walk_in_the_store_order_reads_the_folders_after_it(tmp_path: Path) -> None:
    comp = tmp_path / "companies"
    for n in NAMES[:6]:
        (comp / n).mkdir(parents=True)
    order = os.listdir(comp)
    w = WalkAhead(str(tmp_path))
    w.plan("companies", order[0])
    assert w.plan("companies", order[1]) == [f"companies/{n}" for n in order[2:]]


def test_serve_fetches_every_entity_asked_for(tmp_path: Path, monkeypatch: Any) -> None:
    comp = tmp_path / "companies"
    for n in NAMES[:4]:
        (comp / n).mkdir(parents=True)
    order = os.listdir(comp)
    fetched: list[str] = []
    monkeypatch.setattr(walkahead, "_fetch", fetched.append)
    r, w = os.pipe()
    # one batch: entities asked for by concurrent writers, with a walk going on between them
    os.write(w, f"/companies/{order[3]}\ncompanies/{order[0]}\n/companies/{order[2]}\n"
                f"companies/{order[1]}\n".encode())
    os.close(w)
    warmed = serve(str(tmp_path), r)
    os.close(r)
    assert fetched == [f"{tmp_path}/companies/{order[3]}", f"{tmp_path}/companies/{order[2]}"]
    assert warmed == 0  # the walk's newest hint alone is one visit: no walk yet


def test_fetch_brings_an_entitys_files_into_the_page_cache(tmp_path: Path) -> None:
    ent = tmp_path / "companies" / "acme"
    ent.mkdir(parents=True)
    files = [ent / "_index.md", ent / "tags.lst"]
    for p in files:
        p.write_bytes(os.urandom(64 * 1024))
    if not all([evict(p) for p in files]):  # written out, then dropped from the page cache
        pytest.skip("this file system keeps the pages (tmpfs?): nothing to observe")
    walkahead._fetch(str(ent))
    full = 64 * 1024 // mmap.PAGESIZE
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and resident_pages(files[0]) < full:
        time.sleep(0.01)
    assert [resident_pages(p) for p in files] == [full, 0]  # _index.md only: all a field needs
    walkahead._fetch(str(tmp_path / "companies" / "gone"))  # no such entity: nothing happens


def test_listing_a_kind_folder_fetches_the_bases_of_entities_with_overlay(
        tmp_path: Path) -> None:
    """``ls companies/``: the child fetches ``_index.md`` of the entities whose view will
    parse it (overlay fields), so their first ``stat`` or ``cat`` does not wait for a second
    disk read; the others' files are left alone."""
    from tests.mounting import Mount, sample_data, write_peer_records

    data = tmp_path / "data"
    slugs = sample_data(data, 8)
    with_overlay, plain = slugs[:4], slugs[4:]
    write_peer_records(data, {f"companies/{s}": {"email": f"sales{i}@example.org"}
                              for i, s in enumerate(with_overlay)})
    index = {s: data / "companies" / s / "_index.md" for s in slugs}
    if not all([evict(p) for p in index.values()]):
        pytest.skip("this file system keeps the pages (tmpfs?): nothing to observe")
    with Mount(data, tmp_path / "mnt", node="a") as m:
        assert sorted(os.listdir(m.path("companies"))) == sorted(slugs)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                resident_pages(index[s]) for s in with_overlay):
            time.sleep(0.02)
        assert [bool(resident_pages(index[s])) for s in slugs] == [True] * 4 + [False] * 4
        # The views are right, from the fetched files.
        assert "sales0@example.org" in m.path("companies", with_overlay[0], "_index.md"
                                              ).read_text()
        assert [bool(resident_pages(index[s])) for s in plain] == [False] * 4
