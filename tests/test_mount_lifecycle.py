"""Starting, refusing, stopping and crashing a real mount; status over the control socket."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cocli_fs.journal import scan_wal
from cocli_fs.process import wait_exit
from tests.mounting import ROOT, Mount, is_mounted, sample_data, unmount

pytestmark = pytest.mark.mount


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cocli_fs.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_refuses_missing_busy_and_non_data_folders(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sample_data(data, 1)
    r = cli("mount", str(data), str(tmp_path / "nope"), "--node", "a", "--foreground")
    assert r.returncode == 1 and "does not exist" in r.stderr
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "random.txt").write_text("x")
    (tmp_path / "mnt").mkdir()
    r = cli("mount", str(junk), str(tmp_path / "mnt"), "--node", "a", "--foreground")
    assert r.returncode == 1 and "does not look like a cocli data folder" in r.stderr
    with Mount(data, tmp_path / "mnt", node="a"):
        r = cli("mount", str(data), str(tmp_path / "mnt"), "--node", "a", "--foreground")
        assert r.returncode == 1 and "busy" in r.stderr
        (tmp_path / "mnt2").mkdir()
        r = cli("mount", str(data), str(tmp_path / "mnt2"), "--node", "a", "--foreground")
        assert r.returncode == 1 and "already mounted" in r.stderr
    r = cli("mount", str(data), str(data / "companies"), "--node", "a", "--foreground")
    assert r.returncode == 1 and "inside the data folder" in r.stderr


@pytest.mark.parametrize("how", ["sigterm", "sigint", "fusermount"])
def test_clean_unmount(tmp_path: Path, how: str) -> None:
    data = tmp_path / "data"
    sample_data(data, 1)
    m = Mount(data, tmp_path / "mnt", node="a").start()
    try:
        assert m.proc is not None
        if how == "fusermount":
            subprocess.run(["fusermount3", "-u", str(m.mnt)], check=True)
        else:
            m.proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
        assert m.proc.wait(10) == 0
        assert not is_mounted(m.mnt)
        assert not (data / ".cocli-fs" / "control.sock").exists()
    finally:
        m.stop()


def test_daemon_mode_returns_once_mounted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sample_data(data, 1)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = cli("mount", str(data), str(mnt), "--node", "a")
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)  # ready when the parent returns, no polling needed
        assert os.listdir(mnt / "companies")
        status = json.loads(cli("status", str(data), "--node", "a", "--json").stdout)
        assert status["mounted"] is True and status["mountpoint"] == str(mnt)
        pid = status["pid"]
    finally:
        unmount(mnt)
    if not wait_exit(pid, 10):
        os.kill(pid, signal.SIGKILL)
        pytest.fail("daemon did not exit after fusermount3 -u")


def test_status_asks_the_running_mount(tmp_path: Path) -> None:
    data = tmp_path / "data"
    slug = sample_data(data, 1)[0]
    with Mount(data, tmp_path / "mnt", node="a") as m:
        (m.path("companies", slug, "_fields", "email")).write_text("s@example.org\n")
        (m.path("companies", slug, "note.txt")).write_text("x\n")
        with pytest.raises(OSError):
            os.mkdir(m.path("gadgets"))
        info = json.loads(cli("status", str(data), "--node", "a", "--json").stdout)
        assert info["mounted"] is True and info["refused_writes"] == 1
        assert info["node"] == "a" and info["overlay_entries"] == 1
        for key in ("digest", "peers", "pending_records", "dirty"):
            assert key in info
    info = json.loads(cli("status", str(data), "--node", "a", "--json").stdout)
    assert info["mounted"] is False and info["overlay_entries"] == 1


def test_kill_9_loses_nothing_acknowledged_and_mounts_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    slugs = sample_data(data, 3)
    m = Mount(data, tmp_path / "mnt", node="a").start()
    acked = 0
    try:
        writer = subprocess.Popen([sys.executable, "-c", (
            "import sys,os\n"
            "d=sys.argv[1]\n"
            "i=0\n"
            "while True:\n"
            "    open(os.path.join(d,'_fields','counter'),'w').write(f'{i}\\n')\n"
            "    print(i, flush=True)\n"
            "    i+=1\n"
        ), str(m.path("companies", slugs[0]))], stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        for line in writer.stdout:
            acked = int(line)
            if acked >= 50:
                break
        m.kill()  # kill -9 while the writer is still writing
        writer.kill()
        writer.wait()
    finally:
        m.stop()
    values = {int(r.value) for r in scan_wal(data / "wal") if r.field == "counter"}
    assert set(range(acked + 1)) <= values
    with Mount(data, tmp_path / "mnt", node="a") as m2:
        got = int(m2.path("companies", slugs[0], "_fields", "counter").read_text())
        assert got >= acked
        m2.path("companies", slugs[1], "_fields", "email").write_text("after@crash.example\n")
    seqs = sorted(r.seq for r in scan_wal(data / "wal") if r.node_id == "a")
    assert seqs == list(range(1, len(seqs) + 1))  # numbering continued without a gap or reuse


_BUG = '''
import sys
if "mount" in sys.argv:
    import errno
    import cocli_fs.fs as f
    orig_lookup, orig_read = f.Operations.lookup, f.Operations.read

    async def lookup(self, parent_inode, name, ctx):
        if name == b"boom":
            raise RuntimeError("an unforeseen bug in lookup")
        return await orig_lookup(self, parent_inode, name, ctx)

    async def read(self, fh, off, size):
        if self.handles[fh].node.parts[-1:] == ("tags.lst",):
            raise KeyError("an unforeseen bug in read")
        return await orig_read(self, fh, off, size)

    f.Operations.lookup, f.Operations.read = lookup, read
'''


def test_an_unforeseen_error_in_a_handler_answers_eio_and_the_mount_stays(
        tmp_path: Path) -> None:
    """pyfuse3 patch change 7: any exception a request handler raises besides FUSEError
    answers EIO and is logged; stock pyfuse3 ends its main loop, unmounting for everyone.
    The bugs are planted by a ``sitecustomize`` in the mount process only."""
    import pyfuse3

    if not getattr(pyfuse3, "COCLI_FS_PATCH", ""):
        pytest.skip("needs the patched pyfuse3 (scripts/build-pyfuse3)")
    bug = tmp_path / "bug"
    bug.mkdir()
    (bug / "sitecustomize.py").write_text(_BUG)
    slugs = sample_data(tmp_path / "data", 3)
    env = {"PYTHONPATH": os.pathsep.join([str(bug), str(ROOT)])}
    with Mount(tmp_path / "data", tmp_path / "mnt", node="a", env=env) as m:
        comp = m.mnt / "companies"
        for _ in range(2):
            with pytest.raises(OSError) as exc:
                os.stat(comp / "boom")
            assert exc.value.errno == errno.EIO
        ent = comp / sorted(slugs)[0]
        with pytest.raises(OSError) as exc:
            (ent / "tags.lst").read_bytes()  # its lookup and open work, its read fails
        assert exc.value.errno == errno.EIO
        # Everything else still works, and the log says what happened.
        assert sorted(os.listdir(comp)) == sorted(slugs)
        assert (ent / "_index.md").read_text().startswith("---")
        (ent / "_fields" / "email").write_text("still@example.org\n")
        assert (ent / "_fields" / "email").read_text() == "still@example.org\n"
        assert is_mounted(m.mnt)
    log = m.log.read_text()
    assert "request handler failed, answering EIO" in log
    assert "an unforeseen bug in lookup" in log and "an unforeseen bug in read" in log
