"""The helper process for blocking calls (``cocli_fs/helper.py``), reached through
``offload.fdatasync`` and ``offload.load_base`` as the mount uses them: results, errors, files
too large for a reply, and the helper dying with calls in flight."""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from cocli_fs import helper as helper_mod
from cocli_fs import offload, pagecache
from cocli_fs.document import shown_base_of


@pytest.fixture(autouse=True)
def _reads_leave_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files these tests just wrote are in the page cache, and ``load_base`` would read
    them on the loop itself (``pagecache``); here the reads must go to the helper."""
    monkeypatch.setattr(pagecache.READER, "enabled", False)


async def _started() -> offload.Completions:
    c = offload.completions()
    await c.start_helper()
    assert c.helper is not None and c.helper.alive
    return c


async def _body(paths: list[str]) -> str:
    """The body of the base ``offload.load_base`` reads (these files have no front matter)."""
    base, _ = await offload.load_base(paths, len(paths) > 1)
    return base.body


def test_sync_and_reads_are_answered_by_the_helper(tmp_path: Path) -> None:
    f = tmp_path / "j.usv"
    f.write_bytes(b"")
    (tmp_path / "big").write_bytes(b"x" * (helper_mod.MAX_REPLY + 10))
    (tmp_path / "a").write_bytes(b"alpha\n")

    async def main() -> None:
        c = await _started()
        assert c.helper is not None
        fd = os.open(f, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"record\x1e")
            await offload.fdatasync(fd)
        finally:
            os.close(fd)
        assert f.read_bytes() == b"record\x1e"
        assert await _body([str(tmp_path / "a"), str(tmp_path / "missing")]) == "alpha\n"
        assert await _body([str(tmp_path / "a" / "under-a-file")]) == ""  # no such file
        # Too large for one reply: read by a thread instead, in full.
        assert await _body([str(tmp_path / "big")]) == "x" * (helper_mod.MAX_REPLY + 10)
        # All went through the helper (its reply counter moved), none is left pending.
        assert c.helper._seen >= 4 and not c.helper.pending

    trio.run(main)


def test_a_base_is_read_and_parsed_by_the_helper_as_on_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``offload.load_base`` through the helper gives what ``shown_base_of`` gives in this
    process, for a plain base, one without tags.lst, broken files and one too large; only
    the one too large for a reply is parsed in this process."""
    parsed_here: list[list[bytes | None]] = []

    def counted(files: list[bytes | None], tags: bool) -> object:
        parsed_here.append(files)
        return shown_base_of(files, tags)

    monkeypatch.setattr(offload, "shown_base_of", counted)
    from cocli_fs import sample

    ent = sample.write_tree(tmp_path, 1)[0]
    d = tmp_path / "companies" / ent.slug
    index, tags = str(d / "_index.md"), str(d / "tags.lst")
    (tmp_path / "bad.md").write_bytes(b"---\nname: \xff\n---\n")
    (tmp_path / "bad.lst").write_bytes(b"a\n\xfe\n")
    (tmp_path / "yaml.md").write_text("---\nname: [\n---\n")
    (tmp_path / "big.md").write_text("---\nname: x\n---\n" + "y" * helper_mod.MAX_REPLY)
    cases = [([index, tags], True), ([index], False), ([str(tmp_path / "nothing.md")], False),
             ([str(tmp_path / "bad.md"), tags], True), ([index, str(tmp_path / "bad.lst")], True),
             ([str(tmp_path / "yaml.md")], False), ([str(tmp_path / "big.md")], False)]

    async def main() -> None:
        c = await _started()
        assert c.helper is not None
        for paths, with_tags in cases:
            seen = c.helper._seen
            base, problems = await offload.load_base(paths, with_tags)
            assert c.helper._seen == seen + 1  # the helper answered (big.md: declined)
            want, want_problems = shown_base_of(
                [Path(p).read_bytes() if Path(p).exists() else None for p in paths], with_tags)
            assert base.packed() == want.packed() and problems == want_problems, paths
        assert base.body.endswith("y" * 100)  # too large for a reply: read by a thread
        assert len(parsed_here) == 1 and parsed_here[0][0] == (tmp_path / "big.md").read_bytes()
        base, problems = await offload.load_base([index, str(tmp_path / "bad.lst")], True)
        assert base.fields()["name"] == ent.name and base.tags is None
        assert [name for name, _ in problems] == ["tags.lst"]

    trio.run(main)


_HELPER_BUG = """
import sys
if sys.orig_argv[1:3] == ["-m", "cocli_fs.helper"]:  # the helper process only
    from cocli_fs import document
    real = document.shown_base_of
    def shown_base_of(files, tags):
        if files[0] is not None and b"poison" in files[0]:
            raise RuntimeError("an unforeseen bug in the parse")
        return real(files, tags)
    document.shown_base_of = shown_base_of
"""


def test_a_parse_that_fails_in_the_helper_is_left_to_the_caller(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the parse (planted in the helper process only) does not end the helper: it
    declines, the caller parses itself, and the helper answers the next call."""
    bug = tmp_path / "bug"
    bug.mkdir()
    (bug / "sitecustomize.py").write_text(_HELPER_BUG)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(bug), *sys.path]))
    (tmp_path / "poison.md").write_text("---\nname: poison\n---\n")
    (tmp_path / "fine.md").write_text("---\nname: fine\n---\n")

    async def main() -> None:
        c = await _started()
        h = c.helper
        assert h is not None and h._proc is not None
        pid = h._proc.pid
        for name in ("poison", "fine"):
            seen = h._seen
            base, _ = await offload.load_base([str(tmp_path / f"{name}.md")], False)
            assert base.front == {"name": name} and h._seen == seen + 1
        assert h.alive and h._proc.pid == pid and h._proc.poll() is None

    trio.run(main)


def test_errors_come_back_as_oserror(tmp_path: Path) -> None:
    async def main() -> None:
        await _started()
        r, w = os.pipe()
        try:
            with pytest.raises(OSError) as exc:
                await offload.fdatasync(r)  # a pipe cannot be synced
            assert exc.value.errno == errno.EINVAL
        finally:
            os.close(r)
            os.close(w)
        with pytest.raises(OSError) as exc:
            await offload.load_base([str(tmp_path)], False)  # a folder
        assert exc.value.errno == errno.EISDIR

    trio.run(main)


def test_a_reply_is_seen_without_a_system_call_and_drained_between_requests(
        tmp_path: Path) -> None:
    """What the patched receive loop does: it tests ``Completions`` after each request and
    drains when true; the idle wake-up (the socket) is not needed for that."""
    (tmp_path / "a").write_bytes(b"a")

    async def main() -> None:
        c = await _started()
        got: list[str] = []

        async def reader() -> None:
            got.append(await _body([str(tmp_path / "a")]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            deadline = time.monotonic() + 5
            while not c:  # blocking, as a busy loop does: trio runs nothing meanwhile
                assert time.monotonic() < deadline
                time.sleep(0.0005)
            assert not got
            assert c.drain() is True
            await trio.testing.wait_all_tasks_blocked()
            assert got == ["a"]
            assert not c

    trio.run(main)


def test_calls_in_flight_when_the_helper_dies_are_redone_and_a_new_helper_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helper_mod, "RESTART_S", 0.2)
    f = tmp_path / "j.usv"
    f.write_bytes(b"")
    (tmp_path / "a").write_bytes(b"alpha")

    async def main() -> None:
        c = await _started()
        h = c.helper
        assert h is not None and h._proc is not None
        first = h._proc.pid
        os.kill(first, signal.SIGSTOP)  # the calls below stay in flight
        fd = os.open(f, os.O_WRONLY | os.O_APPEND)
        results: list[object] = []

        async def sync() -> None:
            await offload.fdatasync(fd)
            results.append("synced")

        async def read() -> None:
            results.append(await _body([str(tmp_path / "a")]))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sync)
                nursery.start_soon(read)
                await trio.testing.wait_all_tasks_blocked()
                assert len(h.pending) == 2 and not results
                os.kill(first, signal.SIGKILL)
            assert sorted(map(str, results)) == ["alpha", "synced"]
            # Meanwhile calls go to threads; a new helper comes after RESTART_S.
            assert await _body([str(tmp_path / "a")]) == "alpha"
            with trio.fail_after(10):
                while not (h.alive and h._proc is not None and h._proc.pid != first):
                    await trio.sleep(0.05)
            assert h.restarts == 1
            await offload.fdatasync(fd)
            assert await _body([str(tmp_path / "a")]) == "alpha"
        finally:
            os.close(fd)

    trio.run(main)


def test_without_a_helper_the_calls_run_in_threads(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCLI_FS_NO_HELPER", "1")
    (tmp_path / "a").write_bytes(b"a")

    async def main() -> None:
        c = offload.completions()
        await c.start_helper()
        assert c.helper is None and not offload.helper_running()
        base, problems = await offload.load_base([str(tmp_path / "a"), str(tmp_path / "b")],
                                                 True)
        assert (base.body, base.has_index, base.tags, problems) == ("a", True, None, [])
        fd = os.open(tmp_path / "a", os.O_RDONLY)
        try:
            await offload.fdatasync(fd)
        finally:
            os.close(fd)

    trio.run(main)


def test_the_helper_ends_with_the_run(tmp_path: Path) -> None:
    pids: list[int] = []

    async def main() -> None:
        c = await _started()
        assert c.helper is not None and c.helper._proc is not None
        pids.append(c.helper._proc.pid)

    trio.run(main)
    with pytest.raises(ProcessLookupError):  # ended and reaped
        os.kill(pids[0], 0)
