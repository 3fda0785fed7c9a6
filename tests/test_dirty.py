"""The persisted dirty set: survives restarts and torn writes, never forgets a re-marked file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocli_fs.dirty import LOG_NAME, DirtySet


def paths(d: DirtySet) -> dict[str, bool]:
    return {e.path: e.exists for e in d.snapshot()}


def test_marks_survive_a_reopen(tmp_path: Path) -> None:
    d = DirtySet(tmp_path)
    d.mark("companies/a/notes/1.md")
    d.mark("companies/b/_index.md")
    d.mark_deleted("companies/c/notes/old.md")
    d.mark("companies/b/_index.md")  # marked twice: one entry
    d.close()
    again = DirtySet(tmp_path)
    assert paths(again) == {
        "companies/a/notes/1.md": True,
        "companies/b/_index.md": True,
        "companies/c/notes/old.md": False,
    }
    assert len(again) == 3 and "companies/b/_index.md" in again
    again.close()


def test_a_torn_last_line_is_ignored_and_cut(tmp_path: Path) -> None:
    d = DirtySet(tmp_path)
    d.mark("companies/a/x.md")
    d.close()
    log = tmp_path / LOG_NAME
    with open(log, "ab") as f:
        f.write(b"+\tcompanies/b/half")  # a crash in the middle of an append
    again = DirtySet(tmp_path)
    assert paths(again) == {"companies/a/x.md": True}
    assert log.read_bytes().endswith(b"\n")
    again.mark("companies/c/y.md")  # the next line is not glued to the torn one
    again.close()
    assert paths(DirtySet(tmp_path)) == {"companies/a/x.md": True, "companies/c/y.md": True}


def test_clear_keeps_entries_marked_again_after_the_snapshot(tmp_path: Path) -> None:
    d = DirtySet(tmp_path)
    d.mark("a")
    d.mark("b")
    snap = d.snapshot()
    d.mark("b")  # written again while the push of the snapshot was running
    d.mark("c")
    d.clear(snap)
    assert paths(d) == {"b": True, "c": True}
    d.close()
    assert paths(DirtySet(tmp_path)) == {"b": True, "c": True}


def test_clear_after_a_compacting_rewrite_still_respects_newer_marks(tmp_path: Path) -> None:
    d = DirtySet(tmp_path, fsync=False)
    for i in range(1500):
        d.mark(f"companies/c{i}/notes/n.md")
    d.mark("hot")
    old = d.snapshot()  # a push starts with everything
    d.clear([e for e in old if e.path != "hot"])  # it pushes all but one: the log is rewritten
    assert (tmp_path / LOG_NAME).stat().st_size < 200
    d.mark("hot")  # written again
    d.clear([e for e in old if e.path == "hot"])  # the push finishes the old snapshot
    assert paths(d) == {"hot": True}
    d.close()
    assert paths(DirtySet(tmp_path)) == {"hot": True}


def test_a_log_from_before_generations_were_written_still_reads(tmp_path: Path) -> None:
    (tmp_path / LOG_NAME).write_text("+\ta\n-\tb\n=\ta\t1\n+\tc\n")
    d = DirtySet(tmp_path)
    assert paths(d) == {"b": False, "c": True}
    d.mark("a")
    d.close()
    assert paths(DirtySet(tmp_path)) == {"a": True, "b": False, "c": True}


def test_bad_paths_are_refused(tmp_path: Path) -> None:
    d = DirtySet(tmp_path)
    for bad in ("a\nb", "a\tb"):
        with pytest.raises(ValueError, match="unsupported character"):
            d.mark(bad)
    assert len(d) == 0
    d.close()
