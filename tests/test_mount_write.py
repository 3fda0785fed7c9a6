"""Writes through a real mount land as the right journal records or the right plain files,
with the tools people use: shell redirection, sed -i, vim, Python's atomic save, append."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cocli_fs.journal import scan_wal
from cocli_fs.record import Record
from tests.mounting import Mount, sample_data

pytestmark = pytest.mark.mount


@pytest.fixture(scope="module")
def m(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    tmp = tmp_path_factory.mktemp("write")
    sample_data(tmp / "data", 24)
    with Mount(tmp / "data", tmp / "mnt", node="a") as mount:
        yield mount


_used: set[str] = set()


@pytest.fixture
def ent(m: Mount) -> Path:
    """A company no other test in this module touches."""
    for d in sorted((m.data / "companies").iterdir()):
        if d.name not in _used:
            _used.add(d.name)
            return m.path("companies", d.name)
    raise RuntimeError("out of sample companies")


def records(m: Mount, target: str | None = None) -> list[Record]:
    return [r for r in scan_wal(m.data / "wal") if target is None or r.target == target]


def target(ent: Path) -> str:
    return f"companies/{ent.name}"


def base_text(m: Mount, ent: Path) -> str:
    return (m.data / "companies" / ent.name / "_index.md").read_text()


def test_field_write_is_one_record_and_visible_everywhere(m: Mount, ent: Path) -> None:
    before = base_text(m, ent)
    (ent / "_fields" / "email").write_text("sales@example.org\n")
    recs = records(m, target(ent))
    assert [(r.field, r.value) for r in recs] == [("email", "sales@example.org")]
    assert (ent / "_fields" / "email").read_text() == "sales@example.org\n"
    text = (ent / "_index.md").read_text()
    assert "email: sales@example.org\n" in text
    assert os.stat(ent / "_index.md").st_size == len(text.encode())
    assert base_text(m, ent) == before  # the base file is untouched
    # The write read only _index.md (tags.lst is read when asked for): tags are all there.
    tags = (m.data / "companies" / ent.name / "tags.lst").read_text().split()
    assert tags and json.loads((ent / "_fields" / "tags").read_text()) == tags
    assert (ent / "tags.lst").read_text().split() == tags
    assert "tags" in os.listdir(ent / "_fields")


def test_fstat_of_a_field_being_written_shows_the_bytes_written_so_far(
    m: Mount, ent: Path
) -> None:
    folder = os.stat(ent)
    for name in ("email", "brand_new_field"):  # an existing field and one being created
        fd = os.open(ent / "_fields" / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            st = os.fstat(fd)
            assert (st.st_size, stat.S_ISREG(st.st_mode)) == (0, True)
            assert st.st_mtime_ns >= folder.st_mtime_ns and st.st_uid == folder.st_uid
            os.write(fd, b"abc")
            assert os.fstat(fd).st_size == 3
            os.write(fd, b"de\n")
            assert os.fstat(fd).st_size == 6
        finally:
            os.close(fd)
        assert (ent / "_fields" / name).read_text() == "abcde\n"
        assert os.stat(ent / "_fields" / name).st_size == 6


def test_two_writers_of_one_field_each_keep_their_own_buffer(m: Mount, ent: Path) -> None:
    """Two opens of one field, alike when the second closes (both empty): the one left open
    still shows its own size and commits its own bytes."""
    path = ent / "_fields" / "email"
    first = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        second = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.close(second)  # commits "" (emptied, never written)
        time.sleep(0.2)  # its RELEASE is asynchronous
        os.write(first, b"first@example.org\n")
        assert os.fstat(first).st_size == len(b"first@example.org\n")
    finally:
        os.close(first)
    assert path.read_text() == "first@example.org\n"


def test_new_field_and_tombstone(m: Mount, ent: Path) -> None:
    subprocess.run(f"echo gold > {ent}/_fields/tier", shell=True, check=True)
    assert "tier" in os.listdir(ent / "_fields")
    assert "tier: gold" in (ent / "_index.md").read_text()
    os.unlink(ent / "_fields" / "rating")
    assert "rating" not in os.listdir(ent / "_fields")
    assert "rating:" not in (ent / "_index.md").read_text()
    recs = records(m, target(ent))
    assert [(r.field, r.tombstone) for r in recs] == [("tier", False), ("rating", True)]
    with pytest.raises(FileNotFoundError):
        os.unlink(ent / "_fields" / "rating")


def test_index_rewrite_in_place_records_only_changed_fields(m: Mount, ent: Path) -> None:
    text = (ent / "_index.md").read_text()
    new = text.replace("country: US", "country: CA").replace("source: google-maps\n", "")
    with open(ent / "_index.md", "w") as f:
        f.write(new)
    recs = records(m, target(ent))
    assert sorted((r.field, r.value, r.tombstone) for r in recs) == [
        ("country", "CA", False), ("source", "", True)]
    assert (ent / "_index.md").read_text() == new


def test_sed_i_is_consumed_and_leaves_no_temp_file(m: Mount, ent: Path) -> None:
    subprocess.run(["sed", "-i", "s/^city: .*/city: Lyon/", str(ent / "_index.md")], check=True)
    assert [(r.field, r.value) for r in records(m, target(ent))] == [("city", "Lyon")]
    assert "city: Lyon" in (ent / "_index.md").read_text()
    assert sorted(os.listdir(ent)) == ["_index.md", "tags.lst"]
    store = sorted(os.listdir(m.data / "companies" / ent.name))
    assert store == ["_index.md", "tags.lst"]
    assert not any((m.data / ".cocli-fs" / "scratch").rglob("sed*"))


def test_python_atomic_save_with_os_replace(m: Mount, ent: Path) -> None:
    text = (ent / "_index.md").read_text().replace("employees: ", "employees: 9")
    tmp = ent / ".tmp-save"
    tmp.write_text(text)
    os.replace(tmp, ent / "_index.md")
    recs = records(m, target(ent))
    assert len(recs) == 1 and recs[0].field == "employees"
    assert not (m.data / "companies" / ent.name / ".tmp-save").exists()
    assert (ent / "_index.md").read_text() == text


def test_append_to_tags_and_truncate_write(m: Mount, ent: Path) -> None:
    old = (ent / "tags.lst").read_text().split()
    subprocess.run(f"echo vip >> {ent}/tags.lst", shell=True, check=True)
    assert (ent / "tags.lst").read_text().split() == [*old, "vip"]
    with open(ent / "_fields" / "phone_number", "r+") as f:
        f.truncate(0)
        f.write("+1-555-0100\n")
    assert (ent / "_fields" / "phone_number").read_text() == "+1-555-0100\n"
    fields = [(r.field, r.value) for r in records(m, target(ent))]
    assert fields == [("tags", f'{__import__("json").dumps([*old, "vip"], separators=(",", ":"))}'),
                      ("phone_number", "+1-555-0100")]


def test_vim_with_default_swap_and_backup(m: Mount, ent: Path) -> None:
    subprocess.run(
        ["vim", "-es", "-u", "DEFAULTS", "-i", "NONE", "-c", "%s/^state: .*/state: QC/",
         "-c", "wq", str(ent / "_index.md")],
        check=True, timeout=30, capture_output=True,
    )
    assert [(r.field, r.value) for r in records(m, target(ent))] == [("state", "QC")]
    assert "state: QC" in (ent / "_index.md").read_text()
    assert sorted(os.listdir(ent)) == ["_index.md", "tags.lst"]
    assert sorted(os.listdir(m.data / "companies" / ent.name)) == ["_index.md", "tags.lst"]


def test_fsync_works_on_every_kind_of_file(m: Mount, ent: Path) -> None:
    for p in (ent / "_fields" / "hours", ent / "_index.md", ent / "notes.txt"):
        fd = os.open(p, os.O_RDWR | os.O_CREAT)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    (ent / "notes").mkdir()
    with open(ent / "notes" / "call.md", "w") as f:
        f.write("called\n")
        f.flush()
        os.fsync(f.fileno())
    assert (m.data / "companies" / ent.name / "notes" / "call.md").read_text() == "called\n"


def test_invalid_yaml_fails_close_with_einval_and_changes_nothing(m: Mount, ent: Path) -> None:
    before = (ent / "_index.md").read_text()
    fd = os.open(ent / "_index.md", os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"---\nname: [unclosed\n---\n")
    with pytest.raises(OSError) as exc:
        os.close(fd)
    assert exc.value.errno == errno.EINVAL
    assert (ent / "_index.md").read_text() == before
    assert records(m, target(ent)) == []
    assert "refused write to" in m.log_text()


def test_separator_bytes_in_a_value_are_refused(m: Mount, ent: Path) -> None:
    fd = os.open(ent / "_fields" / "email", os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"a\x1fb\n")
    with pytest.raises(OSError) as exc:
        os.close(fd)
    assert exc.value.errno == errno.EINVAL
    assert records(m, target(ent)) == []


def test_bad_paths_get_clear_errnos(m: Mount, ent: Path) -> None:
    cases: list[tuple[Callable[[], object], int]] = [
        (lambda: (m.path("wal") / "x.usv").write_text("x"), errno.EROFS),
        (lambda: os.mkdir(m.path("widgets")), errno.EINVAL),
        (lambda: os.mkdir(m.path("companies", "Bad Slug!")), errno.EINVAL),
        (lambda: os.mkdir(ent / "_fields" / "sub"), errno.EINVAL),
        (lambda: os.listdir(m.path(".cocli-fs")), errno.EACCES),
    ]
    for fn, code in cases:
        with pytest.raises(OSError) as exc:
            fn()
        assert exc.value.errno == code, fn
    for j in os.listdir(m.path("wal")):
        with pytest.raises(OSError) as exc:
            os.unlink(m.path("wal", j))
        assert exc.value.errno == errno.EROFS
    with pytest.raises(OSError) as exc:
        (ent / "_fields" / "bad name").write_text("x")
    assert exc.value.errno == errno.EINVAL
    assert ".cocli-fs" not in os.listdir(m.mnt)


def test_new_entity_and_notes_go_straight_to_the_store(m: Mount) -> None:
    ent = m.path("companies", "fresh-co")
    ent.mkdir()
    (ent / "_index.md").write_text("---\nname: Fresh Co\n---\n\nNew.\n")
    (ent / "notes").mkdir()
    (ent / "notes" / "a.md").write_text("hello\n")
    store = m.data / "companies" / "fresh-co"
    assert (store / "_index.md").read_text() == "---\nname: Fresh Co\n---\n\nNew.\n"
    assert (store / "notes" / "a.md").read_text() == "hello\n"
    assert records(m, "companies/fresh-co") == []
    assert (ent / "_fields" / "name").read_text() == "Fresh Co\n"
    # now it has a base: the next edit is a record
    (ent / "_fields" / "name").write_text("Fresh Company\n")
    assert [(r.field, r.value) for r in records(m, "companies/fresh-co")] == [
        ("name", "Fresh Company")]


def test_editor_scratch_files_stay_node_local(m: Mount, ent: Path) -> None:
    (ent / ".x.swp").write_bytes(b"swap")
    (ent / "notes~").write_text("backup")
    assert (ent / ".x.swp").read_bytes() == b"swap"
    assert {".x.swp", "notes~"} <= set(os.listdir(ent))
    store = m.data / "companies" / ent.name
    assert not (store / ".x.swp").exists() and not (store / "notes~").exists()
    os.unlink(ent / ".x.swp")
    assert ".x.swp" not in os.listdir(ent)


def test_pending_top_level_file_reaches_the_store_after_close(m: Mount, ent: Path) -> None:
    (ent / "website.txt").write_text("kept\n")
    store = m.data / "companies" / ent.name / "website.txt"
    import time

    deadline = time.monotonic() + 10
    while not store.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.read_text() == "kept\n"
    assert (ent / "website.txt").read_text() == "kept\n"


def test_temp_file_renamed_to_a_normal_name_goes_to_the_store(m: Mount, ent: Path) -> None:
    (ent / "draft.tmp").write_text("kept as a note\n")
    os.rename(ent / "draft.tmp", ent / "summary.md")
    store = m.data / "companies" / ent.name
    assert (store / "summary.md").read_text() == "kept as a note\n"
    assert not (store / "draft.tmp").exists()
    assert (ent / "summary.md").read_text() == "kept as a note\n"
    assert records(m, target(ent)) == []


def test_replace_over_tags_and_field_and_append_to_index(m: Mount, ent: Path) -> None:
    (ent / "t.new").write_text("alpha\nbeta\n")
    os.replace(ent / "t.new", ent / "tags.lst")
    (ent / "f.new").write_text("Closed\n")
    os.replace(ent / "f.new", ent / "_fields" / "status")
    with open(ent / "_index.md", "a") as f:
        f.write("\nMore about them.\n")
    got = [(r.field, r.value) for r in records(m, target(ent))]
    assert got[0] == ("tags", '["alpha","beta"]')
    assert got[1] == ("status", "Closed")
    assert got[2][0] == "description" and got[2][1].endswith("More about them.")
    assert (ent / "tags.lst").read_text() == "alpha\nbeta\n"
    assert sorted(os.listdir(m.data / "companies" / ent.name)) == ["_index.md", "tags.lst"]


def test_truncate_of_a_field_without_opening_it(m: Mount, ent: Path) -> None:
    os.truncate(ent / "_fields" / "hours", 0)
    assert (ent / "_fields" / "hours").read_text() == "\n"
    assert [(r.field, r.value) for r in records(m, target(ent))] == [("hours", "")]


def test_nano_saves_an_edit(m: Mount, ent: Path) -> None:
    """nano driven through a pseudo-terminal (``script``): end of line 2 (``name:``), type,
    save (^O, Enter), quit (^X)."""
    old = (ent / "_fields" / "name").read_text().strip()
    keys = [b"\x05", b" Jr", b"\x0f", b"\r", b"\x18"]
    p = subprocess.Popen(
        ["script", "-qec", f"TERM=xterm nano +2 {ent / '_index.md'}", "/dev/null"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert p.stdin is not None
    import time

    time.sleep(1.0)
    for k in keys:
        p.stdin.write(k)
        p.stdin.flush()
        time.sleep(0.4)
    p.stdin.close()
    assert p.wait(20) == 0
    assert [(r.field, r.value) for r in records(m, target(ent))] == [("name", f"{old} Jr")]
    assert (ent / "_fields" / "name").read_text() == f"{old} Jr\n"


def test_tags_set_through_fields_list_a_tags_lst_the_store_lacks(m: Mount) -> None:
    new = m.path("companies", "tagless-co")
    new.mkdir()
    (new / "_index.md").write_text("---\nname: Tagless\n---\n")
    assert sorted(os.listdir(new)) == ["_index.md"]  # no tags: no tags.lst
    (new / "_fields" / "tags").write_text('["b2b", "vip"]\n')
    assert sorted(os.listdir(new)) == ["_index.md", "tags.lst"]  # from the overlay alone
    assert (new / "tags.lst").read_text() == "b2b\nvip\n"
    assert sorted(os.listdir(m.data / "companies" / "tagless-co")) == ["_index.md"]
    os.unlink(new / "_fields" / "tags")  # a tombstone: the view-only file goes again
    assert sorted(os.listdir(new)) == ["_index.md"]


def test_tags_set_through_fields_show_at_once_in_a_cached_tags_lst(m: Mount, ent: Path) -> None:
    before = (ent / "tags.lst").read_text()  # the kernel may now cache its pages and size
    tags = [f"tag-{i}-longer-than-anything-before" for i in range(8)]
    (ent / "_fields" / "tags").write_text(json.dumps(tags) + "\n")
    assert (ent / "tags.lst").read_text() == "".join(t + "\n" for t in tags) != before
    assert os.stat(ent / "tags.lst").st_size == sum(len(t) + 1 for t in tags)


def test_mv_of_a_field_renames_it_in_one_write(m: Mount, ent: Path) -> None:
    """``mv _fields/a _fields/b``: b takes a's value and a is deleted, two records of one
    write; the base ``_index.md`` in the store is untouched. Renaming a view onto another
    routed file reads the view on the loop (the views belong to it)."""
    before = base_text(m, ent)
    (ent / "_fields" / "phone").write_text("+1 555 0100\n")
    subprocess.run(["mv", str(ent / "_fields" / "phone"), str(ent / "_fields" / "mobile")],
                   check=True)
    assert (ent / "_fields" / "mobile").read_text() == "+1 555 0100\n"
    assert not (ent / "_fields" / "phone").exists()
    assert "mobile: +1 555 0100" in (ent / "_index.md").read_text()
    assert "phone:" not in (ent / "_index.md").read_text()
    got = [(r.field, r.value, r.tombstone) for r in records(m, target(ent))
           if r.field in ("phone", "mobile")]
    assert got == [("phone", "+1 555 0100", False), ("mobile", "+1 555 0100", False),
                   ("phone", "", True)]
    assert base_text(m, ent) == before


def test_writes_go_on_when_the_helper_process_is_killed(tmp_path: Path) -> None:
    """The journal's fsyncs and the first base reads go through a helper process
    (``cocli_fs/helper.py``; the reads here too, though the page cache has the files:
    ``COCLI_FS_NO_CACHED_READS``); kill -9 it while writers are busy: every close() still
    returns once its record is durable, now by worker threads, and the mount stays up."""
    import threading

    import psutil

    sample_data(tmp_path / "data", 12)
    with Mount(tmp_path / "data", tmp_path / "mnt", node="a",
               env={"COCLI_FS_NO_CACHED_READS": "1"}) as mount:
        assert mount.proc is not None
        helpers = [p for p in psutil.Process(mount.proc.pid).children()
                   if "cocli_fs.helper" in " ".join(p.cmdline())]
        assert len(helpers) == 1
        slugs = sorted(d.name for d in (mount.data / "companies").iterdir())
        errors: list[BaseException] = []

        def writer(k: int) -> None:
            try:
                for i in range(40):
                    s = slugs[(k * 40 + i) % len(slugs)]
                    mount.path("companies", s, "_fields", "phone").write_text(f"{k}-{i}\n")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        helpers[0].kill()
        for t in threads:
            t.join(60)
        assert errors == []
        values = {r.value for r in records(mount) if r.field == "phone"}
        assert values == {f"{k}-{i}" for k in range(4) for i in range(40)}
        assert mount.path("companies", slugs[0], "_fields", "phone").read_text()
        assert not helpers[0].is_running()
        assert "helper process lost" in mount.log.read_text()
        # The mount's loop is not left polling the dead helper's socket.
        cpu = psutil.Process(mount.proc.pid).cpu_times()
        time.sleep(1)
        after = psutil.Process(mount.proc.pid).cpu_times()
        assert after.user + after.system - cpu.user - cpu.system < 0.5


def test_the_poll_for_the_next_request_ends_when_a_call_finishes(tmp_path: Path) -> None:
    """pyfuse3 patch change 8. After each reply the receive loop polls for the next request
    (``poll_spin_us``), and trio runs nothing meanwhile. A lone writer's field write waits
    for the helper process (the journal's sync, and the entity's first read: not from the
    page cache here, ``COCLI_FS_NO_CACHED_READS``) and, the day's first, for a worker thread
    (the journal file's open); nothing else comes to end the poll. It must end when those
    calls finish, not run out its time: with a 4 s poll, each write would take 4 s or more."""
    import pyfuse3

    if not getattr(pyfuse3, "COCLI_FS_PATCH", ""):
        pytest.skip("needs the patched pyfuse3 (scripts/build-pyfuse3)")
    slugs = sample_data(tmp_path / "data", 8)
    cfg = tmp_path / "config.toml"
    cfg.write_text("[mount]\npoll_spin_us = 4000000\n")
    with Mount(tmp_path / "data", tmp_path / "mnt", node="a", config=cfg,
               env={"COCLI_FS_NO_CACHED_READS": "1"}) as mount:
        took = []
        for s in slugs:
            t0 = time.monotonic()
            mount.path("companies", s, "_fields", "phone").write_text(f"{s}\n")
            took.append(time.monotonic() - t0)
        assert max(took) < 2.0, took
        assert sorted(r.value for r in records(mount) if r.field == "phone") == sorted(slugs)


def test_a_plain_files_fsync_and_a_rename_over_a_routed_file_end_the_poll(
        tmp_path: Path) -> None:
    """As above, for the two calls a request hands to a worker thread: the ``fsync`` of a
    plain file (an editor saving a note) and the read of a temp file renamed over a routed
    one (``sed -i``). With a 4 s poll each would take 4 s or more if its result did not end it."""
    import pyfuse3

    if not getattr(pyfuse3, "COCLI_FS_PATCH", ""):
        pytest.skip("needs the patched pyfuse3 (scripts/build-pyfuse3)")
    slugs = sample_data(tmp_path / "data", 2)
    cfg = tmp_path / "config.toml"
    cfg.write_text("[mount]\npoll_spin_us = 4000000\n")
    with Mount(tmp_path / "data", tmp_path / "mnt", node="a", config=cfg) as mount:
        notes = mount.path("companies", slugs[0], "notes")
        notes.mkdir()
        took = []
        for i in range(4):
            fd = os.open(notes / f"n{i}.md", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.write(fd, b"met them\n")
                t0 = time.monotonic()
                os.fsync(fd)
                took.append(time.monotonic() - t0)
            finally:
                os.close(fd)
        for i, s in enumerate(slugs):
            ent = mount.path("companies", s)
            tmp = ent / f".tmp-{i}"
            tmp.write_text(ent.joinpath("_index.md").read_text().replace(
                "---\n", f"---\nfax: '{i}'\n", 1))
            t0 = time.monotonic()
            os.replace(tmp, ent / "_index.md")
            took.append(time.monotonic() - t0)
        assert max(took) < 2.0, took
        assert (notes / "n3.md").read_text() == "met them\n"
        assert sorted(r.value for r in records(mount) if r.field == "fax") == ["0", "1"]


def test_a_first_write_reads_the_cached_base_on_the_loop(tmp_path: Path) -> None:
    """The entities were just written, so their ``_index.md`` is in the page cache: each
    first field write reads it on the event loop (``pagecache``), not in the helper, and
    ``status`` counts that (``cached_reads``). Turned off, the same writes go through the
    helper with the same results."""
    from cocli_fs import control

    slugs = sample_data(tmp_path / "data", 4)
    for field, env in (("phone", {}), ("pager", {"COCLI_FS_NO_CACHED_READS": "1"})):
        with Mount(tmp_path / "data", tmp_path / f"mnt-{field}", node="a", env=env) as mount:
            for s in slugs:  # first visits: nothing of the entity read before
                mount.path("companies", s, "_fields", field).write_text(f"+1 {s}\n")
            for s in slugs:
                assert f"{field}: +1 {s}" in mount.path("companies", s, "_index.md").read_text()
            st = control.request(mount.data / ".cocli-fs", "status", timeout=10)
            assert st is not None
            if env:
                assert st["cached_reads"] == {"enabled": False, "hits": 0, "misses": 0}
            else:
                assert st["cached_reads"]["enabled"]
                assert st["cached_reads"]["hits"] >= len(slugs)
            assert sorted(r.target for r in records(mount) if r.field == field) == sorted(
                f"companies/{s}" for s in slugs)
