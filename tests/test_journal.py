"""Node-day journals on a real disk: torn tails, corruption, group commit, cocli's forms."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from cocli_fs import record as rec
from cocli_fs.config import Config
from cocli_fs.journal import (
    JournalWriter,
    ReplicaWriter,
    ScanReport,
    check_node_name,
    journal_name,
    parse_journal,
    parse_journal_name,
    read_journal,
    scan_wal,
)
from cocli_fs.record import Record
from cocli_fs.state import DataDir, NodeState
from tests import cocli_reader

HLC = 1_764_000_000_000 << rec.HLC_LOGICAL_BITS


def ours(seq: int, node: str = "n1", value: object = "v", field: str = "f") -> Record:
    return rec.make(hlc=HLC + seq, node_id=node, seq=seq, target="companies/acme", field=field,
                    value=value)


def nopos(records: list[Record]) -> list[Record]:
    """Records as written (the reader adds each one's position in its file)."""
    return [replace(r, pos=0) for r in records]


def only_file(wal: Path) -> Path:
    (path,) = list(wal.iterdir())
    return path


def test_names() -> None:
    assert journal_name("20261125", "pi-1") == "20261125_pi-1.usv"
    assert parse_journal_name("20261125_pi-1.usv") == ("20261125", "pi-1")
    assert parse_journal_name("20261125_pi_1.usv") == ("20261125", "pi_1")
    for bad in ("notes.md", "2026112_pi.usv", "20261125_pi-1.usv.tmp", ".20261125_x.usv"):
        assert parse_journal_name(bad) is None
    for bad_node in ("", "-x", "a/b", "a b", "x" * 64, "..", "a\x1fb"):
        with pytest.raises(ValueError, match="invalid node name"):
            check_node_name(bad_node)
    assert ours(1).day == datetime.fromtimestamp(1_764_000_000, UTC).strftime("%Y%m%d")


def test_torn_tail_at_every_offset_loses_only_the_last_record(tmp_path: Path) -> None:
    records = [ours(1), ours(2, value=["x", "y"]), ours(3, value="last one, long enough " * 3)]
    full = b"".join(rec.encode(r) for r in records)
    last_len = len(rec.encode(records[2]))
    follow_up = ours(4, value="after the crash")
    for cut in range(1, last_len + 1):  # cut=last_len: nothing of the last record survives
        wal = tmp_path / f"cut{cut}"
        wal.mkdir()
        path = wal / journal_name(records[0].day, "n1")
        path.write_bytes(full[:-cut])
        res = read_journal(path)
        assert nopos(res.records) == records[:2], cut
        assert res.corrupt == []
        assert res.torn_tail == last_len - cut
        assert res.valid_end == len(full) - last_len
        # The next writer cuts the torn part off, so the next record is not glued to it.
        w = JournalWriter(wal, "n1", next_seq=3)
        w.write_sync([follow_up])
        w.close()
        again = read_journal(path)
        assert nopos(again.records) == [*records[:2], follow_up], cut
        assert again.torn_tail == 0 and again.corrupt == []


@pytest.mark.parametrize("mask", [0x01, 0x20, 0x80])
def test_a_corrupt_record_in_the_middle_is_reported_and_skipped(mask: int) -> None:
    records = [ours(1), ours(2, value={"k": [1, 2]}), ours(3)]
    parts = [rec.encode(r) for r in records]
    start = len(parts[0])
    for i in range(len(parts[1]) - 1):  # every byte of the middle record but its terminator
        data = bytearray(b"".join(parts))
        data[start + i] ^= mask
        res = parse_journal(bytes(data))
        got = {r.seq: r for r in nopos(res.records)}
        assert got.get(1) == records[0] and got.get(3) == records[2], i
        if 2 in got:
            # Only a harmless flip may pass: the case of a hex digit of the checksum.
            assert got[2] == records[1] and parts[1][i : i + 1] in b"abcdef", i
            assert i >= len(parts[1]) - 9, i
            continue
        assert res.corrupt, i
        assert all(start <= off < start + len(parts[1]) for off, _ in res.corrupt), i
        assert all(r.seq for r in res.records)  # no damaged remnant read as a cocli record


def test_scan_reports_corrupt_and_torn_files(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    a, b = ours(1, node="a"), ours(1, node="b")
    (wal / journal_name(a.day, "a")).write_bytes(rec.encode(a) + b"garbage\x1e" + rec.encode(a)[:9])
    (wal / journal_name(b.day, "b")).write_bytes(rec.encode(b))
    (wal / "README.txt").write_text("not a journal")
    report = ScanReport()
    got = list(scan_wal(wal, report))
    assert nopos(got) == [a, b]
    assert report.files == 2 and report.records == 2
    assert [(name, off) for name, off, _ in report.corrupt] == [
        (journal_name(a.day, "a"), len(rec.encode(a)))
    ]
    assert report.torn == [(journal_name(a.day, "a"), 9)]


def test_replicas_go_to_the_origin_node_day_file(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    day2 = HLC + (86_400_000 << rec.HLC_LOGICAL_BITS)
    recs = [
        ours(1, node="peer"),
        rec.make(hlc=day2, node_id="peer", seq=2, target="companies/b", field="f", value=1),
        ours(1, node="other"),
    ]
    rw = ReplicaWriter(wal)
    rw.write(recs)
    rw.close()
    names = sorted(p.name for p in wal.iterdir())
    assert names == sorted({journal_name(r.day, r.node_id) for r in recs}) and len(names) == 3
    assert sorted(nopos(list(scan_wal(wal))), key=lambda r: (r.node_id, r.seq)) == sorted(
        recs, key=lambda r: (r.node_id, r.seq)
    )


@pytest.mark.parametrize("mode", ["thread", "inline", "inline-company"])
async def test_group_commit_shares_fsyncs_and_keeps_seq_order(tmp_path: Path, mode: str) -> None:
    wal = tmp_path / "wal"
    w = JournalWriter(wal, "n1")
    if mode != "thread":  # the mount's setting: lone appenders sync on the event loop
        w.inline_sync_under = 10.0
        w.company = (lambda: True) if mode == "inline-company" else None
    appends = 0

    async def appender(k: int) -> None:
        nonlocal appends
        for _ in range(15):
            r = rec.make(hlc=HLC + w.next_seq, node_id="n1", seq=w.take_seq(),
                         target=f"companies/c{k}", field="f", value=k)
            await w.append([r])
            appends += 1
            # Durable on return: the record is in the file already.
            assert rec.encode(r) in only_file(wal).read_bytes()

    async with trio.open_nursery() as nursery:
        for k in range(30):
            nursery.start_soon(appender, k)
    w.close()
    assert appends == 450
    assert 0 < w.batches < appends, w.batches
    res = read_journal(only_file(wal))
    assert [r.seq for r in res.records] == list(range(1, 451))
    assert res.corrupt == [] and res.torn_tail == 0


async def test_a_failed_append_raises_and_the_writer_recovers(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    w = JournalWriter(wal, "n1")
    await w.append([ours(1)])
    w.close()  # drop the open descriptor, so the next append must open the file again
    wal.rename(tmp_path / "moved")
    wal.write_text("a file where the folder was")  # opening wal/<name> now fails: ENOTDIR
    with pytest.raises(OSError):
        await w.append([ours(2)])  # the error reaches the appender: nothing acknowledged
    wal.unlink()
    (tmp_path / "moved").rename(wal)
    await w.append([ours(3)])
    w.close()
    assert [r.seq for r in read_journal(only_file(wal)).records] == [1, 3]


def test_sequence_numbers_and_clock_are_recovered_on_restart(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    st = NodeState(data, Config(node="n1"))
    st.load()
    written = [st.write_fields_sync("companies/acme", {"f": i, "g": str(i)}) for i in range(5)]
    st.close()
    last = written[-1][-1]
    assert last.seq == 10
    st2 = NodeState(data, Config(node="n1"))
    st2.load()
    assert st2.journal is not None and st2.journal.next_seq == 11
    assert st2.clock.last >= last.hlc
    (r,) = st2.write_fields_sync("companies/acme", {"f": "after restart"})
    assert r.seq == 11 and r.hlc > last.hlc
    st2.close()
    st3 = NodeState(data, Config(node="n1"))
    st3.load()
    assert replace(st3.overlay.winner("companies/acme", "f") or r, pos=0) == r
    assert st3.overlay.contiguous() == {"n1": 11}
    st3.close()


@pytest.mark.parametrize("nfields", [6, 7, 8])
def test_cocli_journals_load_in_timestamp_node_position_order(tmp_path: Path, nfields: int) -> None:
    """Records cocli writes today (empty causality, ``datetime.now(UTC).isoformat()``) order by
    timestamp, then node id, then position in their file."""
    wal = tmp_path / "wal"
    wal.mkdir()
    t0 = datetime(2026, 11, 25, 9, 30, 0, 250_000, tzinfo=UTC)

    def line(ts: datetime, node: str, field: str, value: str) -> str:
        r = cocli_reader.DatagramRecord(ts.isoformat(), node, "camp", "prod", "companies/acme",
                                        field, value, "")
        return cocli_reader.write_record(r, nfields)

    same_us = t0 + timedelta(microseconds=400)
    files = {
        "alpha": [
            line(t0, "alpha", "a", "old"),
            line(t0 + timedelta(microseconds=900), "alpha", "a", "later in the same ms"),
            line(same_us, "alpha", "b", "alpha first in file"),
            line(same_us, "alpha", "b", "alpha second in file"),  # same stamp: position wins
            line(same_us, "alpha", "c", "alpha"),
        ],
        "beta": [
            line(t0 + timedelta(microseconds=100), "beta", "a", "beta, earlier"),
            line(same_us, "beta", "c", "beta wins the node tie"),
        ],
    }
    for node, lines in files.items():
        (wal / journal_name("20261125", node)).write_text("\n".join(lines) + "\n")
    st = NodeState(DataDir(tmp_path), Config(node="reader"))
    report = st.load()
    assert report.corrupt == [] and report.records == 7
    got = {f: r.value for f, r in st.overlay.get("companies/acme").items()}
    assert got == {"a": "later in the same ms", "b": "alpha second in file",
                   "c": "beta wins the node tie"}
    assert all(r.seq == 0 for r in st.overlay.get("companies/acme").values())
    # Our own write after loading cocli's data orders after all of it.
    (mine,) = st.write_fields_sync("companies/acme", {"a": "ours"})
    assert st.overlay.winner("companies/acme", "a") == mine
    st.close()


async def test_a_cancelled_appender_still_lands_its_records(tmp_path: Path) -> None:
    """Once queued, records carry sequence numbers: a cancelled caller (an interrupted close())
    must not leave them unwritten, or our sequence would have a gap that nothing fills."""
    wal = tmp_path / "wal"
    w = JournalWriter(wal, "n1")
    r = ours(1)
    finished = []

    async def appender(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as cs:
            task_status.started(cs)
            await w.append([r])
            finished.append(True)

    async with trio.open_nursery() as nursery:
        w._busy = True  # a batch is being written: the appender has to wait
        cs = await nursery.start(appender)
        await trio.sleep(0.01)
        cs.cancel()
        await trio.sleep(0.01)
        assert finished == []  # still waiting, cancelled or not
        w._unpark()  # the batch ends: the appender writes its own
    w.close()
    assert nopos(read_journal(only_file(wal)).records) == [r]
    assert finished == [True]  # it returned normally: the caller may apply what it wrote


async def test_a_failed_batch_fails_every_appender_in_it_and_only_those(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    w = JournalWriter(wal, "n1")
    await w.append([ours(1)])
    w.close()
    wal.rename(tmp_path / "moved")
    wal.write_text("a file where the folder was")  # the next batch cannot open its file
    outcomes: dict[int, str] = {}

    async def appender(seq: int) -> None:
        try:
            await w.append([ours(seq)])
            outcomes[seq] = "ok"
        except OSError:
            outcomes[seq] = "failed"

    async with trio.open_nursery() as nursery:
        w._busy = True  # a batch is being written: these three queue up behind it
        for seq in (2, 3, 4):
            nursery.start_soon(appender, seq)
        await trio.sleep(0.01)
        assert outcomes == {}
        w._unpark()  # the batch ends; one of the three writes all three, and that fails
    assert outcomes == {2: "failed", 3: "failed", 4: "failed"}
    wal.unlink()
    (tmp_path / "moved").rename(wal)
    await w.append([ours(5)])
    w.close()
    assert [r.seq for r in read_journal(only_file(wal)).records] == [1, 5]
    assert w._failed == {}


async def test_retire_waits_for_the_batch_being_written(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    w = JournalWriter(wal, "n1")
    await w.append([ours(1)])
    path = only_file(wal)
    done: list[list[Path]] = []

    async def retire() -> None:
        done.append(await w.retire([(path, path.stat().st_size)]))

    async with trio.open_nursery() as nursery:
        w._busy = True
        nursery.start_soon(retire)
        await trio.sleep(0.01)
        assert done == [] and path.exists()  # not while a batch may be writing to it
        w._unpark()
    assert done == [[path]] and not path.exists()
    w.close()
