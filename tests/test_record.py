"""The journal record codec: round trips, refusals, cocli compatibility, hostile bytes."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocli_fs import record as rec
from cocli_fs.record import Record, RecordError
from tests import cocli_reader

SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Every string that may ride in a record: anything but the two separators (and lone
# surrogates, which are not text that UTF-8 can carry at all).
safe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x1e\x1f")
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | safe_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(safe_text, inner, max_size=4),
    max_leaves=12,
)
HLC = 1_764_000_000_000 << rec.HLC_LOGICAL_BITS


def roundtrip(r: Record) -> Record:
    data = rec.encode(r)
    assert data.endswith(rec.RS_B) and data.count(rec.RS_B) == 1
    return rec.decode_untrusted(data[:-1])


@SETTINGS
@given(
    value=safe_text,
    target=safe_text.filter(bool),
    field=safe_text.filter(bool),
    campaign=safe_text,
    env=safe_text,
    node=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
    seq=st.integers(1, 2**40),
    hlc=st.integers(HLC, HLC + 2**40),
)
def test_every_string_round_trips(
    value: str, target: str, field: str, campaign: str, env: str, node: str, seq: int, hlc: int
) -> None:
    r = rec.make(
        hlc=hlc,
        node_id=node,
        seq=seq,
        target=target,
        field=field,
        value=value,
        campaign_name=campaign,
        environment=env,
    )
    back = roundtrip(r)
    assert back == r
    assert back.decoded_value() == value
    assert back.kind == rec.KIND_STRING


@SETTINGS
@given(value=json_values)
def test_structured_values_round_trip_with_their_type(value: Any) -> None:
    r = rec.make(hlc=HLC, node_id="n1", seq=1, target="companies/a", field="f", value=value)
    back = roundtrip(r)
    assert back == r
    if isinstance(value, str):
        assert back.kind == rec.KIND_STRING
    else:
        assert back.kind == rec.KIND_JSON
        # JSON escapes control characters, so separators inside a list are fine.
    assert back.decoded_value() == value


def test_tombstone_round_trips() -> None:
    r = rec.make(hlc=HLC, node_id="n1", seq=7, target="companies/a", field="f", tombstone=True)
    back = roundtrip(r)
    assert back.tombstone and back.value == "" and back.decoded_value() is None
    assert back == r


@pytest.mark.parametrize("sep", ["\x1e", "\x1f"])
@pytest.mark.parametrize("where", ["value", "target", "field", "campaign_name", "environment"])
def test_separator_bytes_are_refused_with_a_clear_error(sep: str, where: str) -> None:
    kwargs: dict[str, Any] = {
        "hlc": HLC,
        "node_id": "n1",
        "seq": 1,
        "target": "companies/a",
        "field": "f",
        "value": "v",
    }
    kwargs[where] = f"bad{sep}text"
    with pytest.raises(RecordError, match=rf"{where}.*separator"):
        rec.make(**kwargs)


def test_separators_inside_a_list_travel_escaped() -> None:
    r = rec.make(hlc=HLC, node_id="n1", seq=1, target="companies/a", field="f", value=["a\x1eb"])
    assert "\x1e" not in r.value
    assert roundtrip(r).decoded_value() == ["a\x1eb"]


def test_unencodable_text_is_refused() -> None:
    with pytest.raises(RecordError, match="surrogate"):
        rec.make(hlc=HLC, node_id="n1", seq=1, target="companies/a", field="f", value="x\udcff")


def test_oversized_value_is_refused() -> None:
    with pytest.raises(RecordError, match="larger"):
        rec.make(
            hlc=HLC,
            node_id="n1",
            seq=1,
            target="companies/a",
            field="f",
            value="x" * (rec.MAX_FIELD_BYTES + 1),
        )


def test_causality_carries_clock_seq_kind_and_checksum() -> None:
    r = rec.make(hlc=HLC + 5, node_id="pi-1", seq=42, target="companies/a", field="f", value=[1])
    data = rec.encode(r)[:-1]
    causality = data.split(rec.US_B)[-1].decode()
    body, _, crc = causality.rpartition(";crc=")
    assert body == f"hlc={HLC + 5:016x};seq=42;t=j"
    head = data[: data.rindex(b";crc=")]
    assert int(crc, 16) == zlib.crc32(head)
    # Fixed-width hex: text order of the clock is numeric order.
    assert f"{HLC:016x}" < f"{HLC + 1:016x}"


# --- cocli compatibility ----------------------------------------------------------------------


def test_our_records_parse_with_a_reader_written_from_cocli_docs() -> None:
    recs = [
        rec.make(hlc=HLC + i, node_id="pi-1", seq=i + 1, target=f"companies/c{i}", field="email",
                 value=v, campaign_name="roadshow", environment="dev")
        for i, v in enumerate(["a@b.c", ["x", "y"], {"k": 1}, "multi\nline"])
    ]
    text = b"".join(rec.encode(r) for r in recs).decode()
    parsed = cocli_reader.read_text(text)
    assert len(parsed) == len(recs)
    for ours, theirs in zip(recs, parsed, strict=True):
        assert theirs.node_id == ours.node_id
        assert theirs.campaign_name == "roadshow"
        assert theirs.environment == "dev"
        assert theirs.target == ours.target
        assert theirs.field == ours.field
        assert theirs.value == ours.value  # JSON for lists and dicts, as cocli writes them
        assert datetime.fromisoformat(theirs.timestamp).tzinfo is not None
        assert theirs.causality.startswith("hlc=")
    assert json.loads(parsed[1].value) == ["x", "y"]


@pytest.mark.parametrize("nfields", [6, 7, 8])
def test_cocli_records_of_every_version_decode(nfields: int) -> None:
    ts = datetime.now(UTC).isoformat()
    r = cocli_reader.DatagramRecord(ts, "scraper-2", "camp", "prod", "companies/acme", "tags",
                                    '["a","b"]', "")
    text = cocli_reader.write_record(r, nfields)
    got = rec.decode_untrusted(text.encode()[:-1], pos=3)
    assert (got.node_id, got.target, got.field, got.seq, got.pos) == (
        "scraper-2", "companies/acme", "tags", 0, 3
    )
    assert got.decoded_value() == ["a", "b"]
    assert got.campaign_name == {6: "unknown", 7: "camp", 8: "camp"}[nfields]
    assert got.timestamp == ts
    assert got.hlc == rec.iso_to_hlc(ts)
    # cocli's own values that merely look like JSON stay strings.
    plain = text.replace('["a","b"]', "[not json")
    assert rec.decode_untrusted(plain.encode()[:-1]).decoded_value() == "[not json"


def test_cocli_timestamps_order_at_full_precision() -> None:
    base = datetime(2026, 11, 25, 12, 0, 0, 123_000, tzinfo=UTC)
    stamps = [base + timedelta(microseconds=us) for us in (0, 1, 500, 999, 1000, 1001)]
    hlcs = [rec.iso_to_hlc(t.isoformat()) for t in stamps]
    assert hlcs == sorted(hlcs) and len(set(hlcs)) == len(hlcs)
    # the physical part is the millisecond, so the day of the journal is right
    assert rec.iso_to_hlc(base.isoformat()) >> rec.HLC_LOGICAL_BITS == int(base.timestamp() * 1000)
    assert rec.iso_to_hlc("2026-11-25T12:00:00Z") == rec.iso_to_hlc("2026-11-25T12:00:00+00:00")
    assert rec.iso_to_hlc("2026-11-25T13:00:00+01:00") == rec.iso_to_hlc("2026-11-25T12:00:00")


def test_damaged_record_of_ours_is_never_read_as_a_cocli_record() -> None:
    r = rec.make(hlc=HLC, node_id="n1", seq=1, target="companies/a", field="f", value="v")
    data = rec.encode(r)[:-1]
    for bad in (data.replace(b";crc=", b";crd="), data[: data.rindex(b";crc=")]):
        with pytest.raises(RecordError, match="checksum"):
            rec.decode_untrusted(bad)
    # A record cut short at a separator must not be read with its fields shifted.
    cut = data[: data.index(b"\x1f", data.index(b"companies/a"))]  # ts..target: 5 fields
    with pytest.raises(RecordError):
        rec.decode_untrusted(cut + b"\x1fvalue\x1f")  # 7 fields, 'prod' as the target


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.lists(st.binary(max_size=40), max_size=9).map(b"\x1f".join))
def test_hostile_bytes_raise_only_record_error(raw: bytes) -> None:
    try:
        got = rec.decode_untrusted(raw)
    except RecordError:
        return
    # What is accepted is a well-formed record that re-encodes to a decodable record.
    assert got.node_id and got.target and got.field
    assert got.kind in ("s", "j", "d")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=60) | st.just(b"\n"), max_size=12), st.data())
def test_batch_decoder_agrees_with_the_single_record_decoder(
    junk: list[bytes], data: st.DataObject
) -> None:
    good = [
        rec.encode(rec.make(hlc=HLC + i, node_id="n", seq=i + 1, target="companies/x", field="f",
                            value=data.draw(json_values)))[:-1]
        for i in range(4)
    ]
    cocli = cocli_reader.write_record(
        cocli_reader.DatagramRecord(datetime.now(UTC).isoformat(), "c", "k", "prod",
                                    "companies/y", "f", "v", ""), 8
    ).encode()[:-1]
    chunks = data.draw(st.permutations([*good, cocli, b"\n" + good[0], *junk]))
    records, bad = rec.decode_chunks(chunks, first_pos=1)
    want, want_bad = [], []
    for i, c in enumerate(chunks):
        raw = c.strip(b"\r\n") if c[:1] in (b"\n", b"\r") else c
        if not raw:
            continue
        try:
            want.append(rec.decode_untrusted(raw, i + 1))
        except RecordError:
            want_bad.append(i)
    assert records == want
    assert bad == want_bad
