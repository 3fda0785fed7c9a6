"""Hub compaction on real data folders: LWW into base files, checkpoint, late records, gaps,
cocli's own journals, unreadable records, retirement, pending_records, the CLI and the
in-mount service over a real control socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocli_fs import checkpoint as ckpt
from cocli_fs import compaction as comp
from cocli_fs import control
from cocli_fs import record as rec
from cocli_fs.config import Config, HubConfig
from cocli_fs.control import ControlServer
from cocli_fs.document import load_base, merge
from cocli_fs.journal import journal_name
from cocli_fs.overlay import Overlay
from cocli_fs.record import Record
from cocli_fs.state import DataDir, NodeState

DAY_MS = 1_764_115_200_000  # 2025-11-26T00:00Z
ENTITIES = ["companies/acme", "companies/globex", "companies/initech", "people/jane"]


def base_index(slug: str) -> str:
    return (
        "---\n"
        f"name: {slug.title()}  # the name as scraped\n"
        f"domain: {slug}.com\n"
        "phone: '+1-555-0100'\n"
        "keywords:\n- a\n- b\n"
        "---\n\n"
        f"{slug} does things.\n"
    )


def make_tree(root: Path, entities: Iterable[str] = ENTITIES) -> None:
    for t in entities:
        d = root / t
        d.mkdir(parents=True)
        (d / "_index.md").write_text(base_index(t.split("/")[1]))
        (d / "tags.lst").write_text("prospect\nlocal\n")
    (root / "wal").mkdir(exist_ok=True)


def write_records(root: Path, records: Iterable[Record]) -> None:
    """Append records to their node-day journals, as a node or a replica writer would."""
    by_file: dict[str, list[bytes]] = {}
    for r in records:
        by_file.setdefault(journal_name(r.day, r.node_id), []).append(rec.encode(r))
    for name, chunks in by_file.items():
        with open(root / "wal" / name, "ab") as f:
            f.write(b"".join(chunks))


def cocli_line(ts_ms: int, node: str, target: str, field: str, value: str) -> bytes:
    """A record as cocli itself writes it: 8 fields, empty causality, no checksum."""
    ts = rec.hlc_to_iso(ts_ms << 16)
    return "\x1f".join((ts, node, "camp", "prod", target, field, value, "")).encode() + b"\x1e"


def mk(node: str, seq: int, ms: int, target: str, field: str, value: Any = None) -> Record:
    return rec.make(
        hlc=(DAY_MS + ms) << 16,
        node_id=node,
        seq=seq,
        target=target,
        field=field,
        value=value,
        tombstone=value is None,
    )


def load_state(root: Path, node: str = "hub") -> NodeState:
    st_ = NodeState(DataDir(root), Config(node=node))
    st_.load()
    return st_


def expected_view(
    base_root: Path, records: Iterable[Record], targets: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Base documents as they were before any compaction, with every record applied (LWW)."""
    ov = Overlay()
    for r in records:
        ov.apply(r)
    out = {}
    for t in targets:
        d = base_root / t
        idx = (d / "_index.md").read_text() if (d / "_index.md").exists() else None
        tags = (d / "tags.lst").read_text() if (d / "tags.lst").exists() else None
        out[t] = merge(load_base(idx, tags), ov.get(t))
    return out


def view(root: Path, targets: Iterable[str]) -> dict[str, dict[str, Any]]:
    s = load_state(root)
    try:
        return {t: s.merged(t)[1] for t in targets}
    finally:
        s.close()


def snapshot_tree(root: Path) -> dict[str, bytes]:
    """Every entity file and the checkpoint's content (minus its timestamp)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(".cocli-fs"):
            data = p.read_bytes()
            if p.name == ckpt.CHECKPOINT_NAME:
                doc = json.loads(data)
                doc.pop("compacted_at")
                data = json.dumps(doc, sort_keys=True).encode()
            out[rel] = data
    return out


# --- the basics -----------------------------------------------------------------------------------


def test_compaction_folds_records_keeps_untouched_text_and_retires(tmp_path: Path) -> None:
    make_tree(tmp_path)
    records = [
        mk("a", 1, 10, "companies/acme", "email", "x@acme.com"),
        mk("a", 2, 11, "companies/acme", "phone", None),  # tombstone removes the key
        mk("b", 1, 12, "companies/acme", "email", "y@acme.com"),  # newer: wins
        mk("b", 2, 13, "companies/globex", "tags", ["customer", "hot"]),
        mk("a", 3, 14, "companies/globex", "description", "New body text."),
        mk("a", 4, 15, "people/jane", "rating", 4.5),
    ]
    write_records(tmp_path, records)
    want = expected_view(tmp_path, records, ENTITIES)
    res = comp.compact(tmp_path)
    assert res.compacted == 6 and res.pending == 0 and not res.skipped
    acme = (tmp_path / "companies/acme/_index.md").read_text()
    # untouched keys keep their exact text (comment included) and order; the body stays
    assert acme.startswith("---\nname: Acme  # the name as scraped\ndomain: acme.com\n")
    assert "phone" not in acme and "email: y@acme.com\n" in acme
    assert acme.endswith("---\n\nacme does things.\n")
    assert (tmp_path / "companies/globex/tags.lst").read_text() == "customer\nhot\n"
    assert (tmp_path / "companies/globex/_index.md").read_text().endswith("\nNew body text.\n")
    assert (tmp_path / "companies/initech/_index.md").read_text() == base_index("initech")
    cp = ckpt.load(tmp_path / "wal")
    assert cp.watermarks == {"a": 4, "b": 2}
    assert cp.fields["companies/acme"]["email"] == records[2].order
    assert view(tmp_path, ENTITIES) == want
    retired = comp.retire_offline(tmp_path, cp, s3=False)
    assert sorted(retired) == sorted({journal_name(r.day, r.node_id) for r in records})
    assert view(tmp_path, ENTITIES) == want
    # node "a" restarts with its journal gone: numbering continues above the watermark
    s = load_state(tmp_path, node="a")
    assert s.journal is not None and s.journal.next_seq == 5
    assert s.overlay.entries == 0 and s.overlay.contiguous() == {"a": 4, "b": 2}
    s.close()
    # a second run has nothing to do and changes nothing
    again = comp.compact(tmp_path)
    assert again.compacted == 0 and again.checkpoint.generation == cp.generation


def test_late_older_record_loses_newer_wins(tmp_path: Path) -> None:
    """The laptop back after four hours: its records arrive after the compaction."""
    make_tree(tmp_path)
    write_records(tmp_path, [mk("hub", 1, 5_000, "companies/acme", "email", "new@acme.com")])
    comp.compact(tmp_path)
    comp.retire_offline(tmp_path, ckpt.load(tmp_path / "wal"), s3=False)
    laptop = [
        mk("laptop", 1, 1_000, "companies/acme", "email", "old@acme.com"),  # older: loses
        mk("laptop", 2, 1_001, "companies/acme", "domain", "acme.org"),  # never written: wins
    ]
    write_records(tmp_path, laptop)
    # before compaction, a restarted node already shows the compacted value, not the late one
    assert view(tmp_path, ["companies/acme"])["companies/acme"]["email"] == "new@acme.com"
    assert comp.pending_records(load_state(tmp_path)) == 2
    res = comp.compact(tmp_path)
    assert res.compacted == 2 and set(res.winners["companies/acme"]) == {"domain"}
    v = view(tmp_path, ["companies/acme"])["companies/acme"]
    assert v["email"] == "new@acme.com" and v["domain"] == "acme.org"
    newer = mk("laptop", 3, 9_000, "companies/acme", "email", "newest@acme.com")
    write_records(tmp_path, [newer])
    comp.compact(tmp_path)
    assert "email: newest@acme.com\n" in (tmp_path / "companies/acme/_index.md").read_text()


def test_gap_holds_back_the_origin_and_pending_counts(tmp_path: Path) -> None:
    make_tree(tmp_path)
    recs = [mk("a", s, s, "companies/acme", f"f{s}", s) for s in (1, 2, 4, 5)]
    recs.append(mk("b", 1, 9, "companies/globex", "email", "g@x"))
    write_records(tmp_path, recs)
    assert comp.pending_records(load_state(tmp_path)) == 5
    res = comp.compact(tmp_path)
    assert res.checkpoint.watermarks == {"a": 2, "b": 1}
    assert "seq 3 missing" in res.held["a"] and res.pending == 2
    s = load_state(tmp_path)
    assert comp.pending_records(s) == 2
    assert s.merged("companies/acme")[1]["f5"] == 5  # still visible from the overlay
    s.close()
    write_records(tmp_path, [mk("a", 3, 3, "companies/acme", "f3", 3)])  # the gap fills
    res = comp.compact(tmp_path)
    assert res.checkpoint.watermarks["a"] == 5 and res.pending == 0
    assert comp.pending_records(load_state(tmp_path)) == 0


def test_cocli_journals_without_seq_compact_by_position(tmp_path: Path) -> None:
    make_tree(tmp_path)
    name = "20251126_cocli-pi.usv"
    with open(tmp_path / "wal" / name, "ab") as f:
        f.write(cocli_line(DAY_MS + 1, "cocli-pi", "companies/acme", "email", "a@cocli"))
        f.write(b"\n")  # cocli's writer may leave newlines between records
        f.write(cocli_line(DAY_MS + 2, "cocli-pi", "companies/acme", "tags", '["x","y"]'))
    assert comp.pending_records(load_state(tmp_path)) == 2
    res = comp.compact(tmp_path)
    assert res.compacted == 2 and res.checkpoint.positions == {name: 2}
    assert (tmp_path / "companies/acme/tags.lst").read_text() == "x\ny\n"
    assert comp.pending_records(load_state(tmp_path)) == 0
    with open(tmp_path / "wal" / name, "ab") as f:  # cocli appends more later
        f.write(cocli_line(DAY_MS + 3, "cocli-pi", "companies/acme", "email", "b@cocli"))
    assert comp.pending_records(load_state(tmp_path)) == 1
    res = comp.compact(tmp_path)
    assert res.compacted == 1 and res.checkpoint.positions == {name: 3}
    assert "email: b@cocli\n" in (tmp_path / "companies/acme/_index.md").read_text()
    assert comp.retire_offline(tmp_path, res.checkpoint, s3=False) == [name]
    assert view(tmp_path, ["companies/acme"])["companies/acme"]["email"] == "b@cocli"


def test_unreadable_records_are_reported_and_the_rest_compacts(tmp_path: Path) -> None:
    make_tree(tmp_path)
    good_b = mk("b", 1, 1, "companies/globex", "email", "g@x")
    a = [mk("a", s, s, "companies/acme", "email", f"v{s}") for s in (1, 2, 3)]
    write_records(tmp_path, [*a, good_b])
    path = tmp_path / "wal" / journal_name(a[0].day, "a")
    data = bytearray(path.read_bytes())
    second = data.index(b"\x1e") + 1
    data[second + 30] ^= 0x01  # bit rot inside the second record
    path.write_bytes(bytes(data) + b"2025-11-26T00:00:00.000+00:00\x1fa\x1f")  # and a torn tail
    res = comp.compact(tmp_path)
    reasons = [(s.file, s.offset, s.reason) for s in res.skipped]
    assert (path.name, second, "checksum mismatch") in reasons
    assert any("torn" in why for _, _, why in reasons)
    assert res.checkpoint.watermarks == {"a": 1, "b": 1}  # seq 2 unreadable: a gap
    assert "email: v1\n" in (tmp_path / "companies/acme/_index.md").read_text()
    assert "email: g@x\n" in (tmp_path / "companies/globex/_index.md").read_text()
    # a journal with an unreadable record is never retired
    assert comp.retire_offline(tmp_path, res.checkpoint, s3=False) == [
        journal_name(good_b.day, "b")
    ]
    out = comp.render_summary({**res.summary(), "retired": []})
    assert "checksum mismatch" in out and "skipped record" in out


def test_missing_base_holds_back_then_is_created_after_the_grace(tmp_path: Path) -> None:
    make_tree(tmp_path)
    recs = [
        mk("a", 1, 1, "companies/acme", "email", "a@x"),
        mk("a", 2, 2, "companies/newco", "email", "n@x"),  # its folder has not arrived yet
        mk("a", 3, 3, "companies/acme", "phone", "1"),
    ]
    write_records(tmp_path, recs)
    now = DAY_MS + 60_000
    res = comp.compact(tmp_path, create_after=3600, now_ms=now)
    assert res.checkpoint.watermarks == {"a": 1} and "no base yet" in res.held["a"]
    assert not (tmp_path / "companies/newco").exists()
    res = comp.compact(tmp_path, create_after=3600, now_ms=now + 3_600_000)
    assert res.checkpoint.watermarks == {"a": 3}
    assert (tmp_path / "companies/newco/_index.md").read_text() == "---\nemail: n@x\n---\n"


def test_broken_base_is_held_back_not_clobbered(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "companies/acme/_index.md").write_text("---\nname: [unclosed\n---\n")
    recs = [mk("a", 1, 1, "companies/globex", "email", "g@x")]
    recs.append(mk("a", 2, 2, "companies/acme", "x", 1))
    write_records(tmp_path, recs)
    res = comp.compact(tmp_path)
    assert res.checkpoint.watermarks == {"a": 1}
    assert "does not parse" in res.held["companies/acme"]
    assert (tmp_path / "companies/acme/_index.md").read_text() == "---\nname: [unclosed\n---\n"


# --- the property: compaction never changes what a reader sees ------------------------------------

NODES = ["n1", "n2", "n3"]
FIELDS = ["email", "phone", "tags", "description", "name", "extra"]
TARGETS = ENTITIES[:3]


def _value(field: str, i: int) -> Any:
    if field == "tags":
        return [f"t{i % 3}", "x"] if i % 4 else []
    if field == "extra":
        return {"n": i} if i % 2 else i
    return f"{field}-{i}"


ops = st.lists(
    st.tuples(
        st.sampled_from(NODES),
        st.integers(0, 40),  # wall ms: small range, so concurrent writers collide
        st.sampled_from(TARGETS),
        st.sampled_from(FIELDS),
        st.booleans(),  # tombstone
        st.integers(0, 2),  # delivery round (0, 1 or 2): late and out-of-order arrival
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, cocli=st.lists(st.tuples(st.integers(0, 40), st.sampled_from(FIELDS)), max_size=5))
def test_compaction_result_equals_the_overlay_view(
    ops: list[tuple[str, int, str, str, bool, int]], cocli: list[tuple[int, str]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        pristine = Path(tmp) / "pristine"
        make_tree(root, TARGETS)
        make_tree(pristine, TARGETS)
        seqs = dict.fromkeys(NODES, 0)
        rounds: list[list[Record]] = [[], [], []]
        for i, (node, ms, target, field, tomb, rnd) in enumerate(ops):
            seqs[node] += 1
            rounds[rnd].append(
                mk(node, seqs[node], ms, target, field, None if tomb else _value(field, i))
            )
        delivered: list[Record] = []
        cocli_lines = [
            cocli_line(DAY_MS + ms, "cocli-1", TARGETS[0], f, f"c{i}")
            for i, (ms, f) in enumerate(cocli)
            if f not in ("tags", "extra")
        ]
        cocli_recs = rec_from_lines(cocli_lines)
        # the hub's own running view (an "in-mount" state) must never change either
        live = load_state(root)
        for rnd, batch in enumerate(rounds):
            write_records(root, batch)
            delivered += batch
            for r in batch:
                live.overlay.apply(r)
            if rnd == 1 and cocli_lines:
                with open(root / "wal" / "20251126_cocli-1.usv", "ab") as f:
                    f.write(b"".join(cocli_lines))
                for r in cocli_recs:
                    live.overlay.apply(r)
                delivered += cocli_recs
            want = expected_view(pristine, delivered, TARGETS)
            before = {t: live.merged(t)[1] for t in TARGETS}
            assert before == want
            res = comp.compact(root)
            comp.adopt_checkpoint(live, res.checkpoint)
            assert {t: live.merged(t)[1] for t in TARGETS} == want
            assert view(root, TARGETS) == want
            comp.retire_offline(root, res.checkpoint, s3=False)
            assert view(root, TARGETS) == want
            pend = load_state(root)
            assert comp.pending_records(pend) == res.pending
            pend.close()
        live.close()


def rec_from_lines(lines: list[bytes]) -> list[Record]:
    from cocli_fs.journal import parse_journal

    return parse_journal(b"".join(lines)).records


# --- CLI and the in-mount service -----------------------------------------------------------------


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cocli_fs.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_compact_and_status_pending(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_tree(data)
    write_records(data, [mk("a", s, s, "companies/acme", "email", f"v{s}") for s in (1, 2, 4)])
    cfg = tmp_path / "hub.toml"
    cfg.write_text('node = "hub"\n[gossip]\nenabled = false\n[hub]\nenabled = true\n')
    st_json = _run_cli("status", str(data), "--node", "hub", "--json")
    assert json.loads(st_json.stdout)["pending_records"] == 3
    refused = _run_cli("compact", str(data), "--node", "hub")
    assert refused.returncode == 2 and "not the hub" in refused.stderr
    out = _run_cli("compact", str(data), "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "records compacted  2" in out.stdout and "seq 3 missing" in out.stdout
    assert "email: v2\n" in (data / "companies/acme/_index.md").read_text()
    st_json = _run_cli("status", str(data), "--node", "hub", "--json")
    assert json.loads(st_json.stdout)["pending_records"] == 1


async def test_service_compacts_inside_a_running_node_over_the_control_socket(
    tmp_path: Path,
) -> None:
    make_tree(tmp_path)
    cfg = Config(node="hub", hub=HubConfig(enabled=True, interval=0.0))
    state = NodeState(DataDir(tmp_path), cfg)
    state.load()
    await state.write_fields("companies/acme", {"email": "live@acme.com"})
    state.receive([mk("w1", 1, 1, "companies/globex", "phone", "42")], sync=True)
    seen_files: list[str] = []
    seen_targets: set[str] = set()
    state.file_listeners.append(seen_files.extend)
    state.listeners.append(lambda t, r, local: seen_targets.update(t))
    ctl = ControlServer(state.data.private)
    svc = comp.CompactionService(state, ctl)
    assert svc.status()["pending_records"] == 2
    progress: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(ctl.serve)
        await nursery.start(svc.run)
        result = await trio.to_thread.run_sync(
            lambda: control.request(state.data.private, "compact", {}, progress.append, 30)
        )
        nursery.cancel_scope.cancel()
    assert result is not None and result["records_compacted"] == 2
    assert result["overlay_dropped"] == 2 and state.overlay.entries == 0
    assert any("entities written" in p for p in progress)
    assert "companies/acme/_index.md" in seen_files and seen_targets >= {"companies/acme"}
    assert state.merged("companies/acme")[1]["email"] == "live@acme.com"
    assert "email: live@acme.com" in (tmp_path / "companies/acme/_index.md").read_text()
    assert svc.status()["pending_records"] == 0
    dirty = {e.path for e in state.dirty.snapshot()}
    assert {"companies/acme/_index.md", "wal/checkpoint.json"} <= dirty
    # our own journal and the replica were retired under their writers: nothing is left but
    # the checkpoint, and the next write lands in a fresh file
    assert len(result["retired"]) == 2 and os.listdir(tmp_path / "wal") == ["checkpoint.json"]
    await state.write_fields("companies/acme", {"email": "after@acme.com"})
    state.close()
    s2 = load_state(tmp_path)
    assert s2.merged("companies/acme")[1]["email"] == "after@acme.com"
    assert s2.journal is not None and s2.journal.next_seq == 3
    s2.close()


@pytest.mark.parametrize("s3", [True])
def test_retirement_waits_for_s3_push(tmp_path: Path, s3: bool) -> None:
    make_tree(tmp_path)
    write_records(tmp_path, [mk("a", 1, 1, "companies/acme", "email", "x")])
    from cocli_fs.dirty import DirtySet

    ds = DirtySet(tmp_path / ".cocli-fs")
    res = comp.compact(tmp_path, mark=comp._marker(ds))
    assert comp.retire_offline(tmp_path, res.checkpoint, s3=s3) == []  # not pushed yet
    ds.clear(ds.snapshot())  # what the S3 push does once uploaded
    ds.close()
    assert comp.retire_offline(tmp_path, res.checkpoint, s3=s3) == [
        journal_name(res.winners["companies/acme"]["email"].day, "a")
    ]


def test_parallel_render_path_with_a_broken_base(tmp_path: Path, monkeypatch: Any) -> None:
    """Big runs render in worker processes while earlier chunks are written."""
    targets = [f"companies/p{i:02d}" for i in range(24)]
    make_tree(tmp_path, targets)
    (tmp_path / targets[5] / "_index.md").write_text("---\nname: [unclosed\n---\n")
    recs = [mk("a", i + 1, i, t, "email", f"e{i}") for i, t in enumerate(targets)]
    write_records(tmp_path, recs)
    monkeypatch.setattr(comp, "PARALLEL_MIN", 10)
    monkeypatch.setattr(comp, "RENDER_CHUNK", 4)
    res = comp.compact(tmp_path, batch=6)
    assert res.checkpoint.watermarks == {"a": 5}  # seq 6 is the broken entity's record
    assert "does not parse" in res.held[targets[5]]
    for i, t in enumerate(targets[:5]):
        assert f"email: e{i}\n" in (tmp_path / t / "_index.md").read_text()
    assert set(res.winners) == set(targets[:5])
    # records past the cut stay pending and reach the base once the file is repaired
    (tmp_path / targets[5] / "_index.md").write_text(base_index("p05"))
    res = comp.compact(tmp_path, batch=6)
    assert res.checkpoint.watermarks == {"a": 24} and res.pending == 0
    assert all(
        f"email: e{i}\n" in (tmp_path / t / "_index.md").read_text() for i, t in enumerate(targets)
    )


async def test_service_compacts_periodically(tmp_path: Path) -> None:
    make_tree(tmp_path)
    state = NodeState(DataDir(tmp_path), Config(node="hub", hub=HubConfig(True, 0.05)))
    state.load()
    svc = comp.CompactionService(state, None)
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        await state.write_fields("companies/acme", {"email": "tick@acme.com"})
        with trio.fail_after(20):
            while "email: tick@acme.com" not in (tmp_path / "companies/acme/_index.md").read_text():
                await trio.sleep(0.05)
            while not svc.runs:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert svc.status()["pending_records"] == 0 and state.overlay.entries == 0
    assert state.merged("companies/acme")[1]["email"] == "tick@acme.com"
    state.close()


def test_records_for_invalid_targets_are_reported_and_never_written(tmp_path: Path) -> None:
    """Targets come from other nodes' journals: nothing may be written outside <kind>/<slug>."""
    make_tree(tmp_path / "data")
    root = tmp_path / "data"
    recs = [
        mk("a", 1, 1, "companies/../../escape", "email", "x"),
        mk("a", 2, 2, "secrets/acme", "email", "x"),
        mk("a", 3, 3, "companies/acme", "email", "ok@acme.com"),
    ]
    write_records(root, recs)
    res = comp.compact(root)
    assert res.checkpoint.watermarks == {"a": 3}  # they do not hold the origin back
    assert sorted(s.reason for s in res.skipped) == [
        "invalid target 'companies/../../escape': not written",
        "invalid target 'secrets/acme': not written",
    ]
    assert not (tmp_path / "escape").exists() and not (root / "secrets").exists()
    assert "email: ok@acme.com\n" in (root / "companies/acme/_index.md").read_text()
