"""Gossip without sockets: datagram sealing, untrusted decoding, packing and chunking of records,
replay window, membership states, digest/want computation and serving records from journals."""

from __future__ import annotations

import contextlib
import itertools
import random
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocli_fs import record as rec
from cocli_fs import wire
from cocli_fs.config import Config, GossipConfig
from cocli_fs.gossip import GossipService, JournalIndex, RateLimiter, _subtract
from cocli_fs.journal import JournalWriter
from cocli_fs.membership import Membership, PeerState
from cocli_fs.state import DataDir, NodeState
from cocli_fs.wire import Msg, WireError

KEY = b"k" * 32


def _rec(seq: int, value: str = "v", node: str = "a", target: str = "companies/x") -> rec.Record:
    return rec.make(
        hlc=(1_700_000_000_000 << 16) + seq,
        node_id=node,
        seq=seq,
        target=target,
        field="f",
        value=value,
    )


def test_seal_open_decode_roundtrip() -> None:
    data = wire.seal(KEY, Msg.PING, "node-1", 7, 42, [1, 2])
    assert len(data) <= wire.MAX_DATAGRAM
    d = wire.decode_untrusted(wire.open_untrusted(KEY, data))
    assert (d.type, d.sender, d.boot, d.counter, d.body) == (Msg.PING, "node-1", 7, 42, [1, 2])


@pytest.mark.parametrize(
    ("mangle", "kind"),
    [
        (lambda d: d[:-1], "forged"),  # truncated: the tag no longer matches
        (lambda d: d[:4] + bytes(16) + d[20:], "forged"),
        (lambda d: b"XXXX" + d[4:], "malformed"),
        (lambda d: d[:10], "malformed"),
        (lambda d: d + bytes(2000), "oversized"),
    ],
)
def test_open_rejects_tampering(mangle: object, kind: str) -> None:
    data = wire.seal(KEY, Msg.PING, "a", 1, 1, [1, 2])
    with pytest.raises(WireError) as e:
        wire.open_untrusted(KEY, mangle(data))  # type: ignore[operator]
    assert e.value.kind == kind


def test_wrong_key_is_forged() -> None:
    data = wire.seal(b"x" * 32, Msg.PING, "a", 1, 1, [1, 2])
    with pytest.raises(WireError) as e:
        wire.open_untrusted(KEY, data)
    assert e.value.kind == "forged"


@pytest.mark.parametrize(
    "obj",
    [
        [1, "a", 1, 1],  # short envelope
        [99, "a", 1, 1, []],  # unknown type
        [1, "../x", 1, 1, [1, 2]],  # bad sender
        [1, "a", -1, 1, [1, 2]],
        [3, "a", 1, 1, ["not bytes"]],
        [4, "a", 1, 1, [1, 5, 3, b"x"]],  # chunk index beyond total
        [4, "a", 1, 1, [1, 0, 10**6, b"x"]],  # absurd chunk count
        [5, "a", 1, 1, [True, {"a": [1]}]],
        [6, "a", 1, 1, {"a": [[5, 3]]}],  # reversed range
        {"a": 1},
    ],
)
def test_decode_rejects_bad_shapes(obj: object) -> None:
    with pytest.raises(WireError):
        wire.decode_untrusted(msgpack.packb(obj))


def test_decode_rejects_truncated_msgpack() -> None:
    payload = msgpack.packb([3, "a", 1, 1, [b"x" * 100]])
    with pytest.raises(WireError):
        wire.decode_untrusted(payload[:50])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500))
def test_decode_untrusted_never_crashes(data: bytes) -> None:
    with contextlib.suppress(WireError):
        wire.decode_untrusted(data)
    with contextlib.suppress(WireError):
        wire.record_untrusted(data)


def test_record_untrusted_checks_crc_seq_and_target() -> None:
    raw = rec.encode(_rec(3))
    assert wire.record_untrusted(raw).seq == 3
    with pytest.raises(WireError):
        wire.record_untrusted(raw.replace(b"companies/x", b"companies/y"))  # CRC breaks
    with pytest.raises(WireError):
        wire.record_untrusted(rec.encode(_rec(3, target="companies/../../etc")))
    with pytest.raises(WireError):
        wire.record_untrusted(raw[:-1])


def test_pack_records_fits_datagrams_and_chunks_big_ones() -> None:
    small = [rec.encode(_rec(i, "x" * random.Random(i).randrange(10, 300))) for i in range(1, 200)]
    big = rec.encode(_rec(200, "y" * 200_000))
    encoded = [*small[:100], big, *small[100:]]
    got: list[bytes] = []
    r = wire.Reassembler()
    for n, (t, body) in enumerate(wire.pack_records(encoded)):
        if t is Msg.CHUNK:
            body[0] = 1
        data = wire.seal(KEY, t, "a", 1, n + 1, body)
        assert len(data) <= wire.MAX_DATAGRAM
        d = wire.decode_untrusted(wire.open_untrusted(KEY, data))
        if d.type is Msg.RECORDS:
            got.extend(d.body)
        else:
            whole = r.add("a", 1, *d.body)
            if whole is not None:
                got.append(whole)
    assert got == encoded
    assert r.bytes == 0 and not r.partials


def test_reassembler_is_bounded_and_times_out() -> None:
    r = wire.Reassembler(max_bytes=1000, max_partials=2, timeout=5.0)
    assert r.add("a", 1, 1, 0, 3, b"x" * 400, now=0.0) is None
    assert r.add("a", 1, 2, 0, 3, b"x" * 400, now=0.0) is None
    assert r.add("a", 1, 3, 0, 3, b"x" * 10, now=0.0) is None  # too many in flight
    assert r.add("a", 1, 1, 1, 3, b"x" * 400, now=0.0) is None  # over max_bytes: dropped
    assert r.bytes == 400 and r.dropped == 2
    r.expire(10.0)
    assert r.bytes == 0 and not r.partials


def test_replay_window() -> None:
    w = wire.ReplayWindow(size=64)
    assert w.accept(10, 5)
    assert not w.accept(10, 5)  # duplicate
    assert w.accept(10, 3)  # reordered, still new
    assert w.accept(10, 100)
    assert not w.accept(10, 30)  # fell out of the window
    assert not w.accept(9, 200)  # an older boot: replayed
    assert w.accept(11, 1)  # the sender restarted


def test_rate_limiter() -> None:
    lim = RateLimiter(rate=10, burst=5)
    a = ("127.0.0.1", 1)
    assert sum(lim.allow(a, 0.0) for _ in range(20)) == 5
    assert lim.allow(a, 1.0)


def test_membership_states_and_backoff() -> None:
    m = Membership(["127.0.0.1:1"], ping_interval=1.0, suspect_after=3.0, dead_after=10.0)
    p = m.peers[0]
    m.set_address(p, ("127.0.0.1", 1))
    assert m.state(p, 0.0) is PeerState.UNKNOWN
    m.heard(p, "b", now=0.0)
    assert m.state(p, 1.0) is PeerState.ALIVE
    assert m.state(p, 5.0) is PeerState.SUSPECT
    assert m.state(p, 20.0) is PeerState.DEAD
    times = []
    now = 20.0
    for _ in range(60):
        if m.due_pings(now):
            times.append(now)
        now += 0.5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[-1] > gaps[0]  # backing off
    m.heard(p, "b", now=now)
    assert m.state(p, now) is PeerState.ALIVE and p.backoff == 0


def _state(tmp_path: Path, node: str = "a") -> NodeState:
    cfg = Config(node=node, gossip=GossipConfig(insecure=True, peers=["127.0.0.1:9"]))
    s = NodeState(DataDir(tmp_path), cfg)
    s.load()
    return s


def test_wants_pulls_gaps_and_unknown_origins(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.receive([_rec(s, node="b") for s in (1, 2, 3, 5, 8)])
    g = GossipService(state)
    assert g.digest()["b"] == [3, 8]
    # The peer holds b up to 9 and c up to 2: we lack b 4, 6-7, 9 and all of c.
    assert g.wants({"b": [9, 9], "c": [2, 2]}) == {"b": [[4, 4], [6, 7], [9, 9]], "c": [[1, 2]]}
    assert g.wants({"b": [3, 3]}) == {}
    state.close()


def test_wants_skips_ranges_just_asked_for(tmp_path: Path) -> None:
    state = _state(tmp_path)
    g = GossipService(state)
    first = g.wants({"b": [0, 12_000]}, now=100.0)
    assert first == {"b": [[1, 5000]]}  # at most REQUEST_LIMIT per origin and round
    g._mark_asked(first, now=100.0)
    assert g.wants({"b": [0, 12_000]}, now=100.1) == {}  # 5,000 in flight: wait for them
    state.receive([_rec(s, node="b") for s in range(1, 2501)])  # half of the answer arrived
    assert g.wants({"b": [0, 12_000]}, now=100.2) == {"b": [[5001, 7500]]}
    # The rest never came: once the ask expires it is asked for again.
    assert g.wants({"b": [0, 12_000]}, now=200.0) == {"b": [[2501, 7500]]}
    state.close()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 300), max_size=40, unique=True),
    st.lists(st.tuples(st.integers(1, 300), st.integers(0, 40)), max_size=8),
)
def test_subtract_ranges(points: list[int], taken: list[tuple[int, int]]) -> None:
    pts = sorted(points)[: len(points) // 2 * 2]
    gaps = [(pts[i], pts[i + 1]) for i in range(0, len(pts), 2)]
    tk = [(a, a + n) for a, n in taken]
    got = [x for lo, hi in _subtract(gaps, tk) for x in range(lo, hi + 1)]
    want = sorted(
        {x for lo, hi in gaps for x in range(lo, hi + 1)}
        - {x for lo, hi in tk for x in range(lo, hi + 1)}
    )
    assert got == want


def test_journal_index_serves_records_by_seq(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path, "b")
    records = [_rec(s, f"v{s}", node="b") for s in range(1, 301)]
    w.write_sync(records[:200])
    idx = JournalIndex(tmp_path)
    got = idx.lookup("b", {1, 150, 250})
    assert set(got) == {1, 150}
    w.write_sync(records[200:])  # the file grew: indexed incrementally
    got = idx.lookup("b", {150, 250, 400})
    assert set(got) == {150, 250}
    assert wire.record_untrusted(got[250]).value == "v250"
    assert idx.lookup("other", {1}) == {}
    w.close()


def test_gossip_refuses_to_start_without_key(tmp_path: Path) -> None:
    cfg = Config(node="a", gossip=GossipConfig(peers=["127.0.0.1:9"]))
    state = NodeState(DataDir(tmp_path), cfg)
    state.load()
    with pytest.raises(wire.ClusterKeyError, match="insecure = true"):
        GossipService(state)
    state.close()
