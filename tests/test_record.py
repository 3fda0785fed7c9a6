"""The journal record codec: round trips, refusals, cocli compatibility, hostile bytes."""

from __future__ import annotations

import json
import os
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
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x1e\x1f")
)
def _fast() -> Any:
    """The optional C extension module, or None (untyped: it is built from C)."""
    return getattr(rec, "_fastjournal", None)


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


def test_a_multibyte_value_over_the_limit_is_refused() -> None:
    # Under the limit in characters, over it in UTF-8 bytes.
    value = "\u00e9" * (rec.MAX_FIELD_BYTES // 2 + 1)
    with pytest.raises(RecordError, match="larger"):
        rec.make(hlc=HLC, node_id="n1", seq=1, target="companies/a", field="f", value=value)
    ok = "\U0001f600" * (rec.MAX_FIELD_BYTES // 4)  # exactly the limit
    assert rec.make(hlc=HLC, node_id="n1", seq=1, target="companies/a", field="f", value=ok)


@pytest.mark.parametrize("where", ["node_id", "campaign_name", "environment"])
def test_a_bad_constant_is_refused_every_time(where: str) -> None:
    """make() skips checking the node id, campaign and environment it has already passed: a
    bad one is never among them, however often it is tried and whatever passed before."""
    kwargs: dict[str, Any] = {"hlc": HLC, "node_id": "n1", "seq": 1, "target": "companies/a",
                              "field": "f", "value": "v", "campaign_name": "c",
                              "environment": "prod"}
    assert rec.make(**kwargs).campaign_name == "c"
    for _ in range(3):
        with pytest.raises(RecordError, match=rf"{where}.*separator"):
            rec.make(**{**kwargs, where: "bad\x1ftext"})
        with pytest.raises(RecordError, match=rf"{where}.*surrogate"):
            rec.make(**{**kwargs, where: "bad\udcfftext"})


@SETTINGS
@given(ms=st.one_of(
    st.integers(0, 2**42 + 10**6),  # 1970 .. 2109 and a little beyond (the cached strings end)
    st.integers(1, 51_000).map(lambda d: d * 86_400_000 - 1),  # the last ms of a day
    st.integers(2**42, 253_402_300_799_999),  # up to the end of year 9999
), low=st.integers(0, 2**16 - 1))
def test_timestamp_and_day_are_the_datetime_formatting(ms: int, low: int) -> None:
    """The cached per-second and per-day strings give exactly what formatting each clock value
    with datetime gives (the bytes of every record depend on it)."""
    hlc = ms << rec.HLC_LOGICAL_BITS | low
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    assert rec.hlc_to_iso(hlc) == dt.isoformat(timespec="milliseconds")
    assert rec.hlc_day(hlc) == dt.strftime("%Y%m%d")
    for edge in (ms - ms % 86_400_000, ms - ms % 86_400_000 + 86_399_999):  # its day's ends
        e = datetime.fromtimestamp(edge / 1000, UTC)
        assert rec.hlc_to_iso(edge << rec.HLC_LOGICAL_BITS) == e.isoformat(timespec="milliseconds")
        assert rec.hlc_day(edge << rec.HLC_LOGICAL_BITS) == e.strftime("%Y%m%d")


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


# --- the optional C decoder (cocli_fs/_fastjournal.c) agrees with the Python one -----------------


def test_the_c_decoder_is_in_use_when_built() -> None:
    """scripts/bootstrap builds the extension (gcc and the Python headers are on every machine of
    the project); a silent fall-back to the slower decoder would go unnoticed otherwise."""
    from importlib.machinery import EXTENSION_SUFFIXES
    from pathlib import Path

    pkg = Path(rec.__file__).parent
    built = any((pkg / f"_fastjournal{suffix}").exists() for suffix in EXTENSION_SUFFIXES)
    if not built and not os.environ.get("CI"):
        pytest.skip("the C extension is not built here (pip install -e . builds it)")
    assert rec.FAST_DECODER
    assert _fast() is not None and rec.decode_buffer_c is _fast().decode_buffer
    from cocli_fs import overlay

    assert overlay._apply_fresh is _fast().apply_fresh
    data = rec.encode(rec.make(hlc=HLC, node_id="n", seq=1, target="companies/x", field="f",
                               value=[1, "a"]))
    assert _fast().crc32(data) == zlib.crc32(data)
    assert rec.decode_buffer(data, len(data)) == ([rec.decode_untrusted(data[:-1], 1)], [])


def _with_crc(fields: list[str], extra: bytes = b"") -> bytes:
    """Eight fields as one of our records, with a correct checksum whatever the fields say."""
    head = rec.US.join(fields).encode("utf-8", "surrogatepass") + extra
    return head + rec.CRC_TAG + b"%08x" % zlib.crc32(head)


# Causality and values that are loose, odd or wrong, each behind a *valid* checksum, so that the
# decoders must agree on the parsing itself and not only on checksum failures.
_causalities = st.sampled_from([
    "hlc={h:016x};seq={s};t={k}", "hlc={h:016X};seq={s};t={k}", "hlc={h:016x};seq=0{s};t={k}",
    "hlc={h:016x};seq=+{s};t={k}", "hlc={h:016x};seq= {s};t={k}", "hlc={h:016x};seq=0;t={k}",
    "hlc={h:015x};seq={s};t={k}", "hlc={h:016x};seq={s};t=x", "hlc={h:016x};seq={s};t={k};",
    "hlc={h:016x};seq={s}0000000000000000000;t={k}", "hlc= {h:015x};seq={s};t={k}",
    "hlc={h:016x};seq=١٢;t={k}", "t={k};seq={s};hlc={h:016x}", "hlc=-{h:015x};seq={s};t={k}",
    "hlc={h:016x};seq={s};t={k}x", "", "free text",
])
_odd_json = st.sampled_from([
    "NaN", "-Infinity", "[1,]", "[" * 40 + "]" * 40, "[" * 20 + "]" * 20, "1" * 50, "1" * 5000,
    '"\\ud800"', " [1] ", "\ufeff[1]", "01", "-", "1.", "1.5e-3", '{"a":1,}', '{"a":[true,null]}',
    '"\\x"', '"a\tb"', '"a\\tb"', "", "tru", "[1 2]", '{"a" 1}', "-0", "1E+2", '"\u00e9\U0001f600"',
])


@st.composite
def _journal_chunks(draw: st.DrawFn) -> list[bytes]:
    chunks: list[bytes] = []
    for i in range(draw(st.integers(0, 10))):
        node = draw(st.sampled_from(["n", "n", "m", "né", ""]))
        target = draw(st.sampled_from(["companies/x", "companies/ÿ", "people/p", "x", ""]))
        field = draw(st.sampled_from(["f", "f", "email", "tags", ""]))
        campaign = draw(st.sampled_from(["", "k", "roadshow"]))
        env = draw(st.sampled_from(["prod", "test", ""]))
        choice = draw(st.integers(0, 5))
        if choice <= 1:  # well formed, any value
            value: Any = draw(json_values | safe_text)
            try:
                r = rec.make(hlc=HLC + i, node_id=node or "n", seq=i + 1, target=target or "t/x",
                             field=field or "f", value=value, campaign_name=campaign,
                             environment=env, tombstone=draw(st.booleans()) and choice == 1)
            except RecordError:
                continue
            chunks.append(rec.encode(r)[:-1])
        elif choice == 2:  # odd causality or JSON behind a valid checksum
            kind = draw(st.sampled_from("sjd"))
            caus = draw(_causalities).format(h=HLC + i, s=i + 1, k=kind)
            value = draw(_odd_json) if kind == "j" else draw(safe_text)
            ts = rec.hlc_to_iso(HLC + i)
            chunks.append(_with_crc([ts, node, campaign, env, target, field, value, caus]))
        elif choice == 3:  # a record by cocli itself (6, 7 or 8 fields)
            n = draw(st.sampled_from([6, 7, 8]))
            chunks.append(cocli_reader.write_record(
                cocli_reader.DatagramRecord(datetime.now(UTC).isoformat(), node or "c", campaign,
                                            env, target, field or "f", draw(safe_text), ""), n
            ).encode("utf-8", "surrogatepass")[:-1])
        elif choice == 4:  # junk, blank lines, invalid UTF-8 behind a valid checksum
            chunks.append(draw(st.sampled_from([
                b"", b"\n", b"\r\n", draw(st.binary(max_size=60)),
                _with_crc(["ts", "n", "", "prod", "companies/x", "f", "v", "hlc="], b"\xff"),
            ])))
        else:  # a good record, then damaged: a flipped byte, a cut, a leading newline
            r = rec.make(hlc=HLC + i, node_id="n", seq=i + 1, target="companies/x", field="f",
                         value=draw(json_values))
            data = bytearray(rec.encode(r)[:-1])
            how = draw(st.integers(0, 2))
            if how == 0:
                at = draw(st.integers(0, len(data) - 1))
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif how == 1:
                del data[draw(st.integers(0, len(data))) :]
            else:
                data[:0] = b"\n"
            chunks.append(bytes(data))
    return chunks


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_journal_chunks(), st.binary(max_size=20), st.integers(1, 5))
def test_c_and_python_decoders_agree_on_any_journal(
    chunks: list[bytes], tail: bytes, first_pos: int
) -> None:
    data = b"".join(c + rec.RS_B for c in chunks) + tail.replace(rec.RS_B, b"")
    end = data.rfind(rec.RS_B) + 1
    want = rec.decode_buffer_py(data, end, first_pos)
    assert want == rec.decode_chunks(data[:end].split(rec.RS_B)[:-1], first_pos)
    if _fast() is None:
        pytest.skip("the C extension is not built")
    got = _fast().decode_buffer(data, end, first_pos)
    assert got == want
    for a, b in zip(got[0], want[0], strict=True):  # same types too (True == 1, 1.0 == 1)
        assert [type(getattr(a, s)) for s in Record.__slots__] == [
            type(getattr(b, s)) for s in Record.__slots__
        ]
