"""Reads that the kernel's caches answer at once, or not at all (``cocli_fs/pagecache.py``),
and ``offload.load_base``, which tries them before it sends a read off the event loop."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from cocli_fs import helper as helper_mod
from cocli_fs import offload, pagecache
from cocli_fs.pagecache import NotCached, Reader
from tests.mounting import ROOT
from tests.residency import evict


@pytest.mark.parametrize("size", [0, 1, 700, mmap.PAGESIZE, 3 * mmap.PAGESIZE + 5,
                                  (1 << 16) + 3, 200_000])
def test_a_cached_file_is_read_whole(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    f = tmp_path / "f"
    f.write_bytes(data)  # just written: its pages and its name are cached
    assert Reader().read(str(f)) == data


def test_a_name_the_cache_knows_is_missing_is_none(tmp_path: Path) -> None:
    assert not (tmp_path / "missing").exists()  # the lookup leaves a negative entry
    (tmp_path / "file").write_bytes(b"x")
    assert pagecache.read_files([str(tmp_path / "missing"), str(tmp_path / "file")]) == [
        None, b"x"]
    # Whatever the cache says of a path below a file, it names no file.
    base, _ = trio.run(offload.load_base, [str(tmp_path / "file" / "under-a-file")], False)
    assert not base.has_index


def test_pages_not_in_the_cache_are_not_waited_for(tmp_path: Path) -> None:
    f = tmp_path / "cold"
    f.write_bytes(b"front: matter\n" * 100)
    if not evict(f):
        pytest.skip("this file system keeps the pages (tmpfs)")
    with pytest.raises(NotCached):
        pagecache.read_files([str(f)])
    # offload.load_base then reads it off the loop (a worker thread here: no helper).
    base, _ = trio.run(offload.load_base, [str(f)], False)
    assert base.body == "front: matter\n" * 100


def test_a_file_larger_than_the_limit_is_left_to_the_caller(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pagecache, "LIMIT", 1 << 16)
    f = tmp_path / "big"
    f.write_bytes(b"y" * (1 << 18))
    with pytest.raises(NotCached):
        Reader().read(str(f))


def test_a_folder_is_left_to_the_read_off_the_loop(tmp_path: Path) -> None:
    r = Reader()
    with pytest.raises(NotCached):  # preadv2(RWF_NOWAIT) of a folder: EOPNOTSUPP
        r.read(str(tmp_path))
    assert r.enabled  # files are still read here
    with pytest.raises(OSError) as exc:
        trio.run(offload.load_base, [str(tmp_path)], False)
    assert exc.value.errno == errno.EISDIR


def test_a_fifo_is_left_to_the_read_off_the_loop(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer; the loop must not. In a child
    process: such a wait holds the GIL (the open is a PyDLL call), so a thread could not
    even time it out."""
    fifo = tmp_path / "_index.md"
    os.mkfifo(fifo)
    code = ("import sys; from cocli_fs.pagecache import Reader, NotCached\n"
            "r = Reader()\n"
            "try:\n    r.read(sys.argv[1])\nexcept NotCached:\n"
            "    print('not cached', r.enabled)\n")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True,
                             text=True, timeout=10, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail("the read of a FIFO waited for a writer")
    assert out.stdout == "not cached True\n", out.stderr


def test_a_kernel_without_openat2_turns_the_reads_off(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    r = Reader()

    def no_openat2(*_: object) -> int:
        ctypes.set_errno(errno.ENOSYS)
        return -1

    r._syscall = no_openat2  # type: ignore[assignment]
    with pytest.raises(NotCached):
        r.read(str(tmp_path / "f"))
    assert not r.enabled
    with pytest.raises(NotCached):  # from now on without trying
        r.read(str(tmp_path / "f"))


def test_the_environment_turns_the_reads_off(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"x")
    monkeypatch.setenv("COCLI_FS_NO_CACHED_READS", "1")
    with pytest.raises(NotCached):
        Reader().read(str(tmp_path / "f"))


def test_reading_a_base_leaves_its_atime(tmp_path: Path) -> None:
    """Parsing a base is not a user's read: neither reader moves the atime (``O_NOATIME``),
    which relatime would on a file not read since it was written."""
    f = tmp_path / "_index.md"
    f.write_bytes(b"---\nname: Acme\n---\n")
    st = f.stat()
    os.utime(f, ns=(st.st_mtime_ns - 10**9, st.st_mtime_ns))
    assert Reader().read(str(f)) == b"---\nname: Acme\n---\n"
    assert helper_mod.read_file(str(f)) == b"---\nname: Acme\n---\n"
    assert f.stat().st_atime_ns == st.st_mtime_ns - 10**9
    with open(f, "rb") as fh:  # an ordinary read does move it (the check can fail)
        fh.read()
    assert f.stat().st_atime_ns > st.st_mtime_ns - 10**9
