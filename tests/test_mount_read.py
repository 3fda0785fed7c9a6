"""Reading through a real mount with ordinary tools: the merged view, exact sizes, link counts,
and kernel caches that are invalidated when the overlay changes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyfuse3
import pytest

from cocli_fs import document as doc
from tests.mounting import ROOT, Mount, sample_data, write_peer_records

pytestmark = pytest.mark.mount


@pytest.fixture(scope="module", params=["patched", "stock"])
def m(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
      ) -> Iterator[Mount]:
    """Each test runs twice: with the pyfuse3 patch's extras (name-only listings, no FLUSH
    for readers) and with the stock API only (the fallback a stock pyfuse3 gets)."""
    tmp = tmp_path_factory.mktemp("read")
    slugs = sample_data(tmp / "data", 6)
    notes = tmp / "data" / "companies" / sorted(slugs)[0] / "notes"
    notes.mkdir()
    (notes / "call.md").write_text("# Call\nasked about pricing\n")
    env = {"COCLI_FS_STOCK_PYFUSE3": "1" if request.param == "stock" else "0"}
    with Mount(tmp / "data", tmp / "mnt", node="a", env=env) as mount:
        status = json.loads(subprocess.run(
            [sys.executable, "-m", "cocli_fs.cli", "status", str(tmp / "data"), "--json"],
            check=True, capture_output=True, text=True, cwd=ROOT).stdout)
        assert status["pyfuse3_patch"] is (request.param == "patched" and bool(
            getattr(pyfuse3, "COCLI_FS_PATCH", "")))
        assert status["gil_switch_interval_ms"] == 0.5  # mount.GIL_SWITCH_S
        assert status["helper_process"] == {"running": True, "restarts": 0}
        yield mount


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def test_tree_looks_like_the_store(m: Mount) -> None:
    assert sorted(os.listdir(m.mnt)) == ["companies", "people", "wal"]
    store = sorted(os.listdir(m.data / "companies"))
    assert sorted(os.listdir(m.path("companies"))) == store
    ent = m.path("companies", store[0])
    assert sorted(os.listdir(ent)) == ["_index.md", "notes", "tags.lst"]  # _fields/: by name
    assert os.path.isdir(ent / "_fields")


def test_ls_a_lists_dot_and_dotdot_first_with_their_inodes(m: Mount) -> None:
    ent = sorted((m.mnt / "companies").iterdir())[0]
    for folder in (m.mnt, m.mnt / "companies", ent, ent / "_fields", m.mnt / "wal"):
        rows = [line.split() for line in run("ls", "-a1i", "-U", str(folder)).splitlines()]
        assert [r[1] for r in rows[:2]] == [".", ".."], folder
        assert int(rows[0][0]) == os.stat(folder).st_ino
        if folder != m.mnt:  # the mount root's ".." is itself, as on any file system
            assert int(rows[1][0]) == os.stat(folder.parent).st_ino
        assert sorted(r[1] for r in rows[2:]) == sorted(os.listdir(folder))


def test_stat_sizes_modes_links_match_the_store(m: Mount) -> None:
    slug = sorted(os.listdir(m.data / "companies"))[0]
    for name in ("_index.md", "tags.lst", "notes/call.md"):
        a = os.stat(m.path("companies", slug, name))
        b = os.stat(m.data / "companies" / slug / name)
        assert (a.st_size, a.st_mode, a.st_nlink, a.st_mtime_ns) == (
            b.st_size, b.st_mode, b.st_nlink, b.st_mtime_ns)
    d = os.stat(m.path("companies", slug))
    assert stat.S_ISDIR(d.st_mode)
    assert d.st_nlink == os.stat(m.data / "companies" / slug).st_nlink == 3  # . .. notes
    f = os.stat(m.path("companies", slug, "_fields"))
    assert stat.S_ISDIR(f.st_mode) and f.st_nlink == 2
    # inode numbers are stable while the kernel knows the file
    assert os.stat(m.path("companies", slug, "_index.md")).st_ino == os.stat(
        m.path("companies", slug, "_index.md")).st_ino


def test_fields_view_has_exact_sizes(m: Mount) -> None:
    slug = sorted(os.listdir(m.data / "companies"))[1]
    fields = m.path("companies", slug, "_fields")
    names = os.listdir(fields)
    assert {"name", "description", "tags", "keywords"} <= set(names)
    for n in names:
        data = (fields / n).read_bytes()
        assert os.stat(fields / n).st_size == len(data)
    assert (fields / "keywords").read_text().startswith("[")
    assert (fields / "tags").read_text() == doc.field_text(
        "tags", doc.parse_tags((m.data / "companies" / slug / "tags.lst").read_text()))


def test_ls_find_grep_cat_head(m: Mount) -> None:
    out = run("ls", "-l", str(m.path("companies")))
    assert out.count("\nd") == len(os.listdir(m.data / "companies"))
    found = run("find", str(m.mnt), "-name", "_index.md").split()
    assert len(found) == len(os.listdir(m.data / "companies"))
    hits = run("grep", "-rl", "pricing", str(m.path("companies"))).split()
    assert [Path(h).name for h in hits] == ["call.md"]
    slug = sorted(os.listdir(m.data / "companies"))[2]
    idx = m.path("companies", slug, "_index.md")
    assert run("cat", str(idx)) == (m.data / "companies" / slug / "_index.md").read_text()
    assert run("head", "-n", "1", str(idx)) == "---\n"


def test_walks_see_types_and_exact_attributes(m: Mount) -> None:
    """Entity folders are listed by name and type only (no lstat per entry; the kernel looks
    up what it uses): types must still be right for find, and ls -l must show real sizes."""
    slug = sorted(os.listdir(m.data / "companies"))[0]
    ent, store = m.path("companies", slug), m.data / "companies" / slug
    kinds = {e.name: (e.is_dir(), e.is_file()) for e in os.scandir(ent)}
    assert kinds == {e.name: (e.is_dir(), e.is_file()) for e in os.scandir(store)}
    assert run("find", str(ent), "-type", "d").split() == [str(ent), str(ent / "notes")]
    files = sorted(run("find", str(ent), "-type", "f").split())
    assert files == sorted(str(ent / n) for n in ("_index.md", "tags.lst", "notes/call.md"))
    for line in run("ls", "-l", str(ent)).splitlines()[1:]:
        size, name = int(line.split()[4]), line.split()[-1]
        assert size == os.lstat(store / name).st_size, line


def test_overlay_change_is_visible_at_once_with_exact_size(m: Mount) -> None:
    slug = sorted(os.listdir(m.data / "companies"))[3]
    ent = m.path("companies", slug)
    before = (ent / "_index.md").read_text()  # now in the kernel's page cache
    size_before = os.stat(ent / "_index.md").st_size
    (ent / "_fields" / "website").write_text("https://a-much-longer-website.example.org/\n")
    after = (ent / "_index.md").read_text()
    assert after != before
    assert "website: https://a-much-longer-website.example.org/" in after
    assert os.stat(ent / "_index.md").st_size == len(after.encode()) != size_before
    assert run("cat", str(ent / "_index.md")) == after


def test_inotify_watcher_is_woken_by_a_write(m: Mount) -> None:
    slug = sorted(os.listdir(m.data / "companies"))[4]
    ent = m.path("companies", slug)
    w = subprocess.Popen(
        ["inotifywait", "-q", "-t", "10", "-e", "close_write,modify", str(ent / "_fields")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    (ent / "_fields" / "email").write_text("watch@example.org\n")
    out, _ = w.communicate(timeout=15)
    assert w.returncode == 0 and "email" in out


def test_tail_f_sees_appended_note(m: Mount) -> None:
    slug = sorted(os.listdir(m.data / "companies"))[0]
    log = m.path("companies", slug, "notes", "log.md")
    log.write_text("first\n")
    t = subprocess.Popen(["tail", "-n", "+1", "-f", str(log)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        with open(log, "a") as f:
            f.write("second\n")
        assert t.stdout is not None
        assert t.stdout.readline() == "first\n"
        assert t.stdout.readline() == "second\n"
    finally:
        t.kill()
        t.wait()



def test_a_new_journal_shows_in_a_listing_of_wal_taken_before_it(tmp_path: Path) -> None:
    """The kernel may keep a listing of ``wal/`` (the patch's folders without OPENDIR); the
    journal writer creates files without going through it, and the mount drops the listing."""
    slug = sample_data(tmp_path / "data", 1)[0]
    (tmp_path / "data" / "wal" / "20200101_old.usv").write_bytes(b"")  # a listing to keep
    with Mount(tmp_path / "data", tmp_path / "mnt", node="a") as mount:
        assert os.listdir(mount.path("wal")) == ["20200101_old.usv"]
        time.sleep(0.05)
        assert os.listdir(mount.path("wal")) == ["20200101_old.usv"]
        mount.path("companies", slug, "_fields", "email").write_text("new@example.test\n")
        store = sorted(os.listdir(tmp_path / "data" / "wal"))
        assert len(store) == 2 and sorted(os.listdir(mount.path("wal"))) == store


def test_files_put_into_the_store_by_hand_show_once_attributes_expire(tmp_path: Path) -> None:
    """Changes made in DATA behind the mount's back (not supported for writing, but seen):
    a kept listing is checked against the folder's time when its attributes expire."""
    slug = sample_data(tmp_path / "data", 1)[0]
    cfg = tmp_path / "c.toml"
    cfg.write_text("[mount]\nattr_timeout = 0.5\nentry_timeout = 0.5\ndir_timeout = 0.5\n")
    with Mount(tmp_path / "data", tmp_path / "mnt", node="a", config=cfg) as mount:
        ent = mount.path("companies", slug)
        before = sorted(os.listdir(ent))
        (tmp_path / "data" / "companies" / slug / "by-hand.md").write_text("x\n")
        deadline = time.monotonic() + 5
        while "by-hand.md" not in os.listdir(ent):
            assert time.monotonic() < deadline, "a file put into DATA never showed"
            time.sleep(0.1)
        assert sorted(os.listdir(ent)) == sorted([*before, "by-hand.md"])


def test_field_files_follow_their_entity_folder_changed_through_the_mount(tmp_path: Path
                                                                          ) -> None:
    """Field files take owner and times from the entity folder, whose lstat the mount reuses
    for a second within one write's lookups; a change of the folder through the mount must
    show as soon as the kernel asks again, not a second later. (The kernel asks for the
    folder's own attributes again after such a change, and that fresh lstat replaces the one
    reused; the mount also forgets them on every folder change it makes.)"""
    slug = sample_data(tmp_path / "data", 1)[0]
    cfg = tmp_path / "c.toml"
    cfg.write_text("[mount]\nattr_timeout = 0.2\nentry_timeout = 0.2\ndir_timeout = 60\n")
    with Mount(tmp_path / "data", tmp_path / "mnt", node="a", config=cfg) as mount:
        ent = mount.path("companies", slug)
        field = ent / "_fields" / "name"
        assert os.stat(field).st_mtime_ns == os.stat(ent).st_mtime_ns
        os.utime(ent, ns=(10**18, 10**18))  # 2001-09-09, through the mount
        time.sleep(0.3)  # the kernel's copy of the field expires; the mount's reuse would not
        assert os.stat(field).st_mtime_ns == 10**18
        os.stat(field)
        (ent / "notes").mkdir()  # an entry added: the folder's times move on
        time.sleep(0.3)
        now = os.stat(tmp_path / "data" / "companies" / slug).st_mtime_ns
        assert now > 10**18 and os.stat(field).st_mtime_ns == now


def test_a_store_read_that_waits_does_not_stop_the_mount(m: Mount) -> None:
    """A field's first lookup reads ``_index.md`` in a worker thread: while that read waits —
    here on a FIFO put into the store, as a cold read on a slow disk would — every other
    request is served. (Read on the event loop, the same wait stopped the whole mount.)"""
    slug = "slow-read-co"
    ent = m.data / "companies" / slug
    ent.mkdir()
    fifo = ent / "_index.md"
    os.mkfifo(fifo)
    other = sorted(s for s in os.listdir(m.data / "companies") if s != slug)[0]
    reader = subprocess.Popen(["cat", str(m.path("companies", slug, "_fields", "name"))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # its lookup now waits in the read of the FIFO
        assert reader.poll() is None
        # Requests the kernel cannot answer from its caches: a name never looked up, and a
        # field of another entity (its base read as well).
        never = m.path("companies", other, "_fields", f"never-{time.monotonic_ns()}")
        subprocess.run(["stat", str(never)], capture_output=True, timeout=5)
        name = subprocess.run(["cat", str(m.path("companies", other, "_fields", "name"))],
                              capture_output=True, text=True, timeout=5, check=True).stdout
        assert name.strip() and reader.poll() is None
    finally:
        # A writer lets the read go on (also when an assertion above failed).
        with open(fifo, "w") as f:
            f.write("---\nname: Slow Read Co\n---\n")
    out, err = reader.communicate(timeout=10)
    assert (out, reader.returncode) == ("Slow Read Co\n", 0), err
    fifo.unlink()
    (ent / "_index.md").write_text("---\nname: Slow Read Co\n---\n")


def test_a_views_base_read_that_waits_does_not_stop_the_mount(tmp_path: Path) -> None:
    """``_index.md`` of an entity with overlay fields is a view: its size needs the base
    parsed. Cold, that read leaves the event loop as a field's does: while it waits (a FIFO
    in the store, as a slow disk would), every other request is served, and the ``stat``
    then gives the view's exact size. (On the loop, the wait stopped the whole mount.)"""
    data = tmp_path / "data"
    other = sample_data(data, 2)[0]
    slug = "slow-view-co"
    (data / "companies" / slug).mkdir()
    fifo = data / "companies" / slug / "_index.md"
    os.mkfifo(fifo)
    write_peer_records(data, {f"companies/{slug}": {"email": "slow@example.org"}})
    base = "---\nname: Slow View Co\n---\n"
    with Mount(data, tmp_path / "mnt", node="a") as mnt:
        view = mnt.path("companies", slug, "_index.md")
        reader = subprocess.Popen(["stat", "-c", "%s", str(view)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)  # its lookup now waits in the read of the FIFO
            assert reader.poll() is None
            name = subprocess.run(["cat", str(mnt.path("companies", other, "_fields", "name"))],
                                  capture_output=True, text=True, timeout=5, check=True).stdout
            assert name.strip() and reader.poll() is None
        finally:
            with open(fifo, "w") as f:  # lets the read go on (also after a failure above)
                f.write(base)
        out, err = reader.communicate(timeout=10)
        fifo.unlink()
        fifo.write_text(base)
        shown = view.read_bytes()
        assert b"slow@example.org" in shown and (out, reader.returncode) == (
            f"{len(shown)}\n", 0), err


def test_base_files_that_are_not_utf8_are_a_broken_base_not_a_dead_mount(m: Mount) -> None:
    """A scraper may write another encoding straight into the store. An ``_index.md`` that is
    not UTF-8 makes the base count as empty, as invalid YAML does: its fields are not shown, a
    field written through the mount is, the file itself is served as it is. A ``tags.lst``
    that is not UTF-8 counts as none and hides nothing else. The log says why; the mount
    serves on."""
    latin, tagged = "latin-one-co", "latin-tags-co"
    raw = b"---\nname: Caf\xe9 Latin\n---\n"
    for slug, index in ((latin, raw), (tagged, b"---\nname: Tagged\n---\n")):
        ent = m.data / "companies" / slug
        ent.mkdir()
        (ent / "_index.md").write_bytes(index)
        (ent / "tags.lst").write_bytes(b"caf\xe9\n")
    fields = m.path("companies", latin, "_fields")
    r = subprocess.run(["cat", str(fields / "name")], capture_output=True, text=True, timeout=5)
    assert r.returncode == 1 and "No such file" in r.stderr
    assert os.listdir(fields) == []
    assert m.path("companies", latin, "_index.md").read_bytes() == raw
    (fields / "email").write_text("cafe@example.org\n")
    assert (fields / "email").read_text() == "cafe@example.org\n"
    assert os.listdir(fields) == ["email"]
    assert sorted(os.listdir(m.path("companies", tagged, "_fields"))) == ["name"]
    assert m.path("companies", tagged, "_fields", "name").read_text() == "Tagged\n"
    assert all(m.path("companies", s).is_dir() for s in (latin, tagged))
    log = m.log.read_text(errors="replace")
    assert f"companies/{latin}/_index.md: not UTF-8 text" in log
    assert f"companies/{tagged}/tags.lst: not UTF-8 text" in log


def _fast_lookups(data: Path) -> int:
    out = subprocess.run([sys.executable, "-m", "cocli_fs.cli", "status", str(data), "--json"],
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return int(json.loads(out)["fast_lookups"])


@pytest.mark.skipif(not getattr(pyfuse3, "COCLI_FS_PATCH", ""), reason="needs the pyfuse3 patch")
def test_plain_entity_files_are_looked_up_in_the_patch_while_they_are_plain(tmp_path: Path
                                                                             ) -> None:
    """``_index.md`` and ``tags.lst`` of an entity without overlay fields are looked up by the
    patched pyfuse3 itself (change 9): the same attributes as the store's files. Once the
    entity has overlay fields, or its folder has moved, the lookup is the handler's again."""
    slugs = sorted(sample_data(tmp_path / "data", 3))
    store = tmp_path / "data" / "companies"
    cfg = tmp_path / "c.toml"
    cfg.write_text("[mount]\nattr_timeout = 0\nentry_timeout = 0\n")  # every stat looks up
    with Mount(tmp_path / "data", tmp_path / "mnt", node="a", config=cfg) as m:
        ent = m.path("companies", slugs[0])
        for name in ("_index.md", "tags.lst"):
            a, b = os.stat(ent / name), os.stat(store / slugs[0] / name)
            assert (a.st_size, a.st_mode, a.st_nlink, a.st_mtime_ns, a.st_ctime_ns) == (
                b.st_size, b.st_mode, b.st_nlink, b.st_mtime_ns, b.st_ctime_ns)
            assert a.st_ino == os.stat(ent / name).st_ino  # the node's number, each time
        assert _fast_lookups(m.data) == 4

        # An overlay field: _index.md is a view now, with the merged size.
        (ent / "_fields" / "website").write_text("https://a-longer-website.example.org/\n")
        n = _fast_lookups(m.data)
        text = (ent / "_index.md").read_bytes()
        assert b"a-longer-website" in text
        assert os.stat(ent / "_index.md").st_size == len(text) != os.stat(
            store / slugs[0] / "_index.md").st_size
        assert _fast_lookups(m.data) == n  # declined: the handler answered

        # A moved folder keeps its inode; its old path now holds another entity, whose
        # _index.md differs in size. Lookups in the moved folder must see its own files.
        os.stat(m.path("companies", slugs[1], "_index.md"))
        os.rename(m.path("companies", slugs[1]), m.path("companies", "moved-one"))
        (store / slugs[1]).mkdir()
        (store / slugs[1] / "_index.md").write_text("---\nname: Another\n---\n" + "x" * 999)
        for name in ("_index.md", "tags.lst"):
            got = os.stat(m.path("companies", "moved-one", name))
            assert got.st_size == os.stat(store / "moved-one" / name).st_size
        assert os.stat(m.path("companies", slugs[1], "_index.md")).st_size == os.stat(
            store / slugs[1] / "_index.md").st_size
        assert not os.path.exists(m.path("companies", slugs[1], "tags.lst"))
