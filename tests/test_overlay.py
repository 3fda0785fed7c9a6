"""The LWW overlay: a semilattice join, so order, duplication and re-delivery never matter."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocli_fs import overlay as overlay_mod
from cocli_fs import record as rec
from cocli_fs.overlay import Applied, OriginSeqs, Overlay
from cocli_fs.record import Record

HLC = 1_764_000_000_000 << rec.HLC_LOGICAL_BITS
NODES = ["a", "b", "c"]
TARGETS = ["companies/x", "companies/y", "people/z"]
FIELDS = ["email", "phone", "tags"]


@st.composite
def record_sets(draw: st.DrawFn) -> list[Record]:
    """Records of ours (unique (node, seq)) and of cocli (no seq), over a few keys and a tiny
    clock range, so equal clocks from different nodes, tombstones and ties are common."""
    out: list[Record] = []
    seqs = dict.fromkeys(NODES, 0)
    for _ in range(draw(st.integers(0, 40))):
        node = draw(st.sampled_from(NODES))
        target = draw(st.sampled_from(TARGETS))
        field = draw(st.sampled_from(FIELDS))
        hlc = HLC + draw(st.integers(0, 3))
        tomb = draw(st.integers(0, 4)) == 0
        value = draw(st.sampled_from(["v1", "v2", "", "[1]"])) if not tomb else None
        if draw(st.integers(0, 3)) == 0:  # a cocli record: no seq, ordered by position
            ts = rec.hlc_to_iso(hlc)
            value_text = "" if value is None else value
            out.append(
                Record(hlc, node, 0, target, field, "s", value_text, "", "prod", ts,
                       draw(st.integers(1, 3)))
            )
        else:
            seqs[node] += 1
            out.append(
                rec.make(hlc=hlc, node_id=node, seq=seqs[node], target=target, field=field,
                         value=value, tombstone=tomb)
            )
    return out


def state(o: Overlay) -> dict[str, dict[str, Record]]:
    return {t: dict(f) for t, f in o.by_target.items() if f}


def build(records: list[Record]) -> Overlay:
    o = Overlay()
    for r in records:
        o.apply(r)
    return o


def reference(records: list[Record]) -> dict[str, dict[str, Record]]:
    """The state written the slow, obvious way: per key, the maximum under the total order."""
    best: dict[tuple[str, str], Record] = {}

    def key(r: Record) -> tuple[object, ...]:
        return (*r.order, r.kind, r.value, r.timestamp, r.campaign_name, r.environment,
                r.seq, r.pos)

    for r in records:
        k = (r.target, r.field)
        if k not in best or key(r) > key(best[k]):
            best[k] = r
    out: dict[str, dict[str, Record]] = {}
    for (t, f), r in best.items():
        out.setdefault(t, {})[f] = r
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=record_sets(), data=st.data())
def test_any_permutation_and_duplication_gives_the_same_state_and_digest(
    records: list[Record], data: st.DataObject
) -> None:
    first = build(records)
    assert state(first) == reference(records)
    batch = Overlay()  # the replay path: same state, digest and counters as one by one
    batch.apply_all([*records, *records[:3]])
    one_by_one = build([*records, *records[:3]])
    assert state(batch) == state(one_by_one) and batch.digest() == one_by_one.digest()
    assert (batch.applied, batch.duplicates, batch.entries) == (
        one_by_one.applied, one_by_one.duplicates, one_by_one.entries
    )
    # ... and with the C extension's fast path switched off (the pure-Python loop).
    saved, overlay_mod._apply_fresh = overlay_mod._apply_fresh, None
    try:
        py = Overlay()
        py.apply_all([*records, *records[:3]])
    finally:
        overlay_mod._apply_fresh = saved
    assert state(py) == state(batch) and py.digest() == batch.digest()
    assert (py.applied, py.duplicates, py.entries) == (
        batch.applied, batch.duplicates, batch.entries
    )
    shuffled = data.draw(st.permutations(records))
    dups = data.draw(st.lists(st.sampled_from(records), max_size=20)) if records else []
    again = build([*shuffled, *dups, *reversed(records)])
    assert state(again) == state(first)
    assert again.digest() == first.digest()
    assert again.contiguous() == first.contiguous()
    # Associativity: merging two halves built separately is the same as one replay.
    cut = data.draw(st.integers(0, len(records)))
    left, right = build(shuffled[:cut]), build(shuffled[cut:])
    for f in right.by_target.values():
        for r in f.values():
            left.apply(r)
    assert state(left) == state(first) and left.digest() == first.digest()


def test_digest_tracks_the_state_and_not_the_history() -> None:
    r1 = rec.make(hlc=HLC, node_id="a", seq=1, target="companies/x", field="f", value="1")
    r2 = rec.make(hlc=HLC + 1, node_id="a", seq=2, target="companies/x", field="f", value="2")
    only2 = build([r2])
    both = build([r1, r2])
    assert both.digest() == only2.digest()  # r1 was overwritten: no trace of it remains
    assert build([r1]).digest() != only2.digest()
    assert Overlay().digest() != only2.digest()


def test_outcomes_and_tombstones() -> None:
    o = Overlay()
    r1 = rec.make(hlc=HLC + 5, node_id="b", seq=1, target="companies/x", field="f", value="1")
    older = rec.make(hlc=HLC + 4, node_id="a", seq=1, target="companies/x", field="f", value="0")
    tomb = rec.make(hlc=HLC + 6, node_id="a", seq=2, target="companies/x", field="f",
                    tombstone=True)
    assert o.apply(r1) is Applied.WON
    assert o.apply(r1) is Applied.DUPLICATE
    assert o.apply(older) is Applied.LOST
    assert o.winner("companies/x", "f") == r1
    assert o.apply(tomb) is Applied.WON
    assert o.winner("companies/x", "f") == tomb and o.entries == 1  # a tombstone is an entry
    # Same clock, different nodes: the node id decides, whatever the arrival order.
    p = rec.make(hlc=HLC + 9, node_id="p", seq=1, target="companies/y", field="f", value="p")
    q = rec.make(hlc=HLC + 9, node_id="q", seq=1, target="companies/y", field="f", value="q")
    assert build([p, q]).winner("companies/y", "f") == q
    assert build([q, p]).winner("companies/y", "f") == q


def test_drop_forgets_only_what_the_base_now_holds() -> None:
    r1 = rec.make(hlc=HLC, node_id="a", seq=1, target="companies/x", field="f", value="1")
    r2 = rec.make(hlc=HLC + 1, node_id="a", seq=2, target="companies/x", field="f", value="2")
    o = build([r1, r2])
    assert not o.drop("companies/x", "f", r1.order)  # a newer winner stays
    assert o.drop("companies/x", "f", r2.order)
    assert o.entries == 0 and o.get("companies/x") == {}
    assert o.digest() == Overlay().digest()


def test_origin_seqs_contiguous_and_missing() -> None:
    s = OriginSeqs()
    order = list(range(1, 101))
    random.Random(4).shuffle(order)
    held = set()
    for seq in order[:70]:
        assert s.add(seq)
        held.add(seq)
        assert not s.add(seq)
    expect = 0
    while expect + 1 in held:
        expect += 1
    assert s.contiguous == expect
    gaps = s.missing(100)
    missing = {n for lo, hi in gaps for n in range(lo, hi + 1)}
    assert missing == set(range(1, 101)) - held
    assert all(s.has(n) for n in held)
    capped = s.missing(100, limit=5)
    assert sum(hi - lo + 1 for lo, hi in capped) == min(5, len(missing))
    for seq in order[70:]:
        s.add(seq)
    assert s.contiguous == 100 and not s.above and s.missing(100) == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=record_sets(), data=st.data())
def test_digest_after_a_bulk_load_and_later_changes_matches_one_by_one(
    records: list[Record], data: st.DataObject
) -> None:
    """apply_all leaves the digest to be recomputed on demand; whether it is asked for before,
    between or after later applies and drops, it must equal the incrementally kept one."""
    cut = data.draw(st.integers(0, len(records)))
    ask_early = data.draw(st.booleans())
    bulk, inc = Overlay(), Overlay()
    bulk.apply_all(records[:cut])
    for r in records[:cut]:
        inc.apply(r)
    if ask_early:
        assert bulk.digest() == inc.digest()
    for r in records[cut:]:
        assert bulk.apply(r) == inc.apply(r)
    for r in data.draw(st.lists(st.sampled_from(records), max_size=5)) if records else []:
        assert bulk.drop(r.target, r.field, r.order) == inc.drop(r.target, r.field, r.order)
    assert bulk.digest() == inc.digest()
    bulk.apply_all(records[::-1])  # a second bulk load on top of a known digest
    for r in records[::-1]:
        inc.apply(r)
    assert bulk.digest() == inc.digest()
