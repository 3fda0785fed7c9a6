"""kill -9 during writes: every record whose append returned is on disk after a restart.

A child process appends in a loop through ``NodeState.write_fields`` from several trio tasks at
once (so group commit is in play) and prints each record's sequence number only after the
call returned. The parent kills it with SIGKILL at random moments, several rounds, restarting
on the same data folder each time; then it checks the journal and the replayed overlay.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cocli_fs.config import Config
from cocli_fs.journal import read_journal
from cocli_fs.state import DataDir, NodeState

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import trio

    from cocli_fs.config import Config
    from cocli_fs.state import DataDir, NodeState

    async def writer(st: NodeState, k: int) -> None:
        i = 0
        while True:
            i += 1
            value = f"task {k} write {i}"
            (r,) = await st.write_fields(f"companies/c{k}", {"f": value})
            # Acknowledged: the append returned. Only now does the parent learn of it.
            sys.stdout.write(f"{r.seq} {r.target} {value}\\n")
            sys.stdout.flush()

    async def main() -> None:
        st = NodeState(DataDir(Path(sys.argv[1])), Config(node="crashy"))
        st.load()
        sys.stdout.write("ready\\n")
        sys.stdout.flush()
        async with trio.open_nursery() as nursery:
            for k in range(4):
                nursery.start_soon(writer, st, k)

    trio.run(main)
    """
)


def run_round(data: Path, rng: random.Random) -> list[tuple[int, str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    deadline = time.monotonic() + rng.uniform(0.05, 0.6)
    acked = []
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            buf += chunk
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.set_blocking(proc.stdout.fileno(), True)
    buf += proc.stdout.read()  # lines printed before the kill are acknowledged too
    proc.stdout.close()
    lines = buf.split(b"\n")
    for line in lines[:-1]:  # the last piece may be a line cut by the kill
        seq, target, value = line.decode().split(" ", 2)
        acked.append((int(seq), target, value))
    return acked


@pytest.mark.slow
def test_no_acknowledged_record_is_lost_to_kill_9(tmp_path: Path) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    acked: list[tuple[int, str, str]] = []
    for _ in range(5):
        got = run_round(tmp_path, rng)
        acked.extend(got)
    assert len(acked) > 20, "the child never got going"

    # Every acknowledged record is in the journal, with its value.
    on_disk: dict[int, tuple[str, str]] = {}
    for p in (tmp_path / "wal").iterdir():
        res = read_journal(p)
        assert res.corrupt == []  # a kill can tear the tail, never damage the middle
        for r in res.records:
            assert r.seq not in on_disk, "a sequence number was reused after a restart"
            on_disk[r.seq] = (r.target, r.value)
    missing = [(s, t, v) for s, t, v in acked if on_disk.get(s) != (t, v)]
    assert missing == []

    # ... and in the overlay after a restart: for each entity, the newest acknowledged write
    # or something newer still.
    st = NodeState(DataDir(tmp_path), Config(node="crashy"))
    st.load()
    newest: dict[str, int] = {}
    for s, t, _v in acked:
        newest[t] = max(newest.get(t, 0), s)
    for t, s in newest.items():
        w = st.overlay.winner(t, "f")
        assert w is not None and w.seq >= s
    assert st.overlay.contiguous()["crashy"] >= max(s for s, _t, _v in acked)
    assert st.journal is not None and st.journal.next_seq == max(on_disk) + 1
    st.close()
