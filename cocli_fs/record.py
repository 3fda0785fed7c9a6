"""Journal records: cocli's ``DatagramRecord`` V3 in USV, the one definition of the format.

A record is eight fields joined by ``\\x1f`` and ended by ``\\x1e``::

    timestamp, node_id, campaign_name, environment, target, field, value, causality

cocli leaves ``causality`` free; we carry our ordering and integrity data there as
``hlc=<16 hex>;seq=<n>;t=<s|j|d>;crc=<8 hex>``:

* ``hlc``  hybrid logical clock (48 bit ms << 16 | 16 bit counter), fixed-width hex so that
  text order is numeric order;
* ``seq``  the origin node's sequence number (1, 2, 3 … without gaps);
* ``t``    value kind: ``s`` plain string, ``j`` JSON (lists, dicts, numbers, booleans, null),
  ``d`` tombstone (the field was deleted; ``value`` is empty);
* ``crc``  CRC-32 of every byte of the record before ``;crc=``.

cocli's own reader splits on the separators and keeps ``causality`` as an opaque string, so it
reads our journals; we read its 6-, 7- and 8-field records (older ones without causality order
by timestamp, then node id, then position in their file).
"""

from __future__ import annotations

import json
import re
import sys
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

US = "\x1f"  # unit separator: between fields
RS = "\x1e"  # record separator: after each record
US_B = b"\x1f"
RS_B = b"\x1e"
CRC_TAG = b";crc="

KIND_STRING = "s"
KIND_JSON = "j"
KIND_TOMBSTONE = "d"
_KINDS = frozenset((KIND_STRING, KIND_JSON, KIND_TOMBSTONE))

HLC_LOGICAL_BITS = 16
MAX_FIELD_BYTES = 1 << 20  # one value may hold a long description, not a whole file dump


class RecordError(ValueError):
    """A record (or a value for one) that cannot be encoded or decoded."""


@dataclass(frozen=True, slots=True)
class Record:
    """One field change. ``seq == 0`` marks a record written by cocli itself (no causality):
    its ``pos`` (position in its file) breaks ties instead."""

    hlc: int
    node_id: str
    seq: int
    target: str
    field: str
    kind: str
    value: str
    campaign_name: str = ""
    environment: str = "prod"
    timestamp: str = ""
    pos: int = 0

    @property
    def order(self) -> tuple[int, str, int]:
        """Total order for last-write-wins: ``(hlc, node_id)``, then seq/position for cocli
        records that share a timestamp (our own records never share ``(hlc, node_id)``)."""
        return (self.hlc, self.node_id, self.seq or self.pos)

    @property
    def tombstone(self) -> bool:
        return self.kind == KIND_TOMBSTONE

    @property
    def day(self) -> str:
        """UTC day (``YYYYMMDD``) of the node-day journal this record belongs in. Derived from
        the clock, not the receiver's wall time, so origin and replicas agree on the file."""
        return hlc_day(self.hlc)

    def decoded_value(self) -> Any:
        return decode_value(self.kind, self.value)


class _RecordSlots:
    """Same slot layout as Record, without the frozen ``__setattr__``. A frozen dataclass sets
    each field through ``object.__setattr__`` (about 2 us a record); replay builds a million
    records, so the decoder fills one of these and re-labels it as a Record (``__class__``
    assignment checks that the layouts match). The result is an ordinary, frozen Record."""

    __slots__ = Record.__slots__

    def __init__(
        self,
        hlc: int,
        node_id: str,
        seq: int,
        target: str,
        field: str,
        kind: str,
        value: str,
        campaign_name: str,
        environment: str,
        timestamp: str,
        pos: int,
    ) -> None:
        self.hlc = hlc
        self.node_id = node_id
        self.seq = seq
        self.target = target
        self.field = field
        self.kind = kind
        self.value = value
        self.campaign_name = campaign_name
        self.environment = environment
        self.timestamp = timestamp
        self.pos = pos


def _new_record(
    hlc: int,
    node_id: str,
    seq: int,
    target: str,
    field: str,
    kind: str,
    value: str,
    campaign_name: str,
    environment: str,
    timestamp: str,
    pos: int,
) -> Record:
    """``Record(...)`` with positional arguments, about four times faster (see _RecordSlots)."""
    r: Any = _RecordSlots(
        hlc, node_id, seq, target, field, kind, value, campaign_name, environment, timestamp, pos
    )
    r.__class__ = Record
    return r  # type: ignore[no-any-return]


# --- values -----------------------------------------------------------------------------------


def check_text(name: str, text: str) -> None:
    """Refuse text that would break the USV framing, or that cannot be written as UTF-8 (a lone
    surrogate, e.g. from a file name decoded with ``surrogateescape``)."""
    if US in text or RS in text:
        raise RecordError(f"{name} contains a USV separator byte (\\x1e or \\x1f)")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError(f"{name} is not valid Unicode text (lone surrogate)") from None


def encode_value(value: Any) -> tuple[str, str]:
    """Python value -> (kind, text). Strings stay plain (what cocli writes); everything else is
    JSON so that numbers, booleans and lists come back with their type."""
    if isinstance(value, str):
        text, kind = value, KIND_STRING
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise RecordError(f"value is not JSON-serialisable: {exc}") from exc
        kind = KIND_JSON
    check_text("value", text)
    # UTF-8 takes at most 4 bytes a character: only a long text needs encoding to be measured.
    if len(text) > MAX_FIELD_BYTES // 4 and len(text.encode()) > MAX_FIELD_BYTES:
        raise RecordError(f"value larger than {MAX_FIELD_BYTES} bytes")
    return kind, text


def decode_value(kind: str, text: str) -> Any:
    if kind == KIND_JSON:
        return json.loads(text)
    if kind == KIND_TOMBSTONE:
        return None
    return text


def _guess_kind(text: str) -> str:
    """cocli writes lists and dicts as JSON and everything else with ``str()``."""
    if text[:1] in ("[", "{"):
        try:
            json.loads(text)
        except ValueError:
            return KIND_STRING
        return KIND_JSON
    return KIND_STRING


# --- clock <-> timestamp ------------------------------------------------------------------------


# Every local write formats its clock twice (the record's timestamp, its journal's day), and
# ``fromtimestamp`` + ``isoformat``/``strftime`` cost microseconds each: the strings are built
# once per second (timestamp up to the seconds) and once per day, and then only looked up.
# Below _EXACT_MS the old float path (``ms / 1000``) was exact to the microsecond, so the cached
# strings are the very same bytes; above it (after the year 2109) the old path is kept as is.
_EXACT_MS = 1 << 42
_MS_PER_DAY = 86_400_000
_CACHE_MAX = 4096  # entries per cache; cleared when full (replays span many seconds)
_iso_seconds: dict[int, str] = {}  # second -> "YYYY-MM-DDTHH:MM:SS."
_days: dict[int, str] = {}  # day number -> "YYYYMMDD"


def hlc_to_iso(hlc: int) -> str:
    """The record timestamp of a clock value: ISO-8601 UTC with milliseconds."""
    ms = hlc >> HLC_LOGICAL_BITS
    if ms >= _EXACT_MS:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    sec, milli = divmod(ms, 1000)
    head = _iso_seconds.get(sec)
    if head is None:
        if len(_iso_seconds) >= _CACHE_MAX:
            _iso_seconds.clear()
        # "...T09:30:00+00:00" -> "...T09:30:00."
        head = _iso_seconds[sec] = datetime.fromtimestamp(sec, UTC).isoformat()[:-6] + "."
    return f"{head}{milli:03d}+00:00"


def hlc_day(hlc: int) -> str:
    """UTC day (``YYYYMMDD``) of a clock value (see ``Record.day``)."""
    ms = hlc >> HLC_LOGICAL_BITS
    if ms >= _EXACT_MS:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y%m%d")
    n = ms // _MS_PER_DAY
    day = _days.get(n)
    if day is None:
        if len(_days) >= _CACHE_MAX:
            _days.clear()
        day = _days[n] = datetime.fromtimestamp(n * 86_400, UTC).strftime("%Y%m%d")
    return day


def iso_to_hlc(timestamp: str) -> int:
    """cocli timestamps (``datetime.now(UTC).isoformat()``) -> an HLC value.

    The physical part is the millisecond; the sub-millisecond microseconds (0-999) go into the
    counter, so cocli records keep their documented order "by timestamp" at full precision (two
    records in the same millisecond from different nodes must not fall back to node order).
    """
    ts = timestamp.strip()
    if ts.endswith("Z"):
        ts = ts[:-1] + "+00:00"
    dt = datetime.fromisoformat(ts)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    us = (dt - _EPOCH) // _MICROSECOND
    if us < 0:
        raise ValueError(f"timestamp {timestamp!r} is before 1970")
    ms, sub = divmod(us, 1000)
    return ms << HLC_LOGICAL_BITS | sub


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# --- encoding -----------------------------------------------------------------------------------


def make(
    *,
    hlc: int,
    node_id: str,
    seq: int,
    target: str,
    field: str,
    value: Any = None,
    tombstone: bool = False,
    campaign_name: str = "",
    environment: str = "prod",
) -> Record:
    """Build a validated record of ours (raises RecordError on bad input)."""
    # Same checks in the same order as always; a node stamps every record with the same
    # node id, campaign and environment, so those are looked up among strings already passed.
    if node_id not in _clean:
        _check_constant("node_id", node_id)
    check_text("target", target)
    check_text("field", field)
    if campaign_name not in _clean:
        _check_constant("campaign_name", campaign_name)
    if environment not in _clean:
        _check_constant("environment", environment)
    if not field or not target or not node_id:
        raise RecordError("node_id, target and field must not be empty")
    if tombstone:
        kind, text = KIND_TOMBSTONE, ""
    else:
        kind, text = encode_value(value)
    return _new_record(
        hlc, node_id, seq, target, field, kind, text, campaign_name, environment,
        hlc_to_iso(hlc), 0,
    )


_clean: set[str] = set()  # texts check_text has passed (node ids, campaigns, environments)


def _check_constant(name: str, text: str) -> None:
    check_text(name, text)  # raises for a bad one, which is therefore never remembered
    if len(_clean) < 256:
        _clean.add(text)


def encode(rec: Record) -> bytes:
    """Record -> one USV record, ``\\x1e`` included. Only records with ``seq > 0`` are ours."""
    head = US.join(
        (
            rec.timestamp or hlc_to_iso(rec.hlc),
            rec.node_id,
            rec.campaign_name,
            rec.environment,
            rec.target,
            rec.field,
            rec.value,
            f"hlc={rec.hlc:016x};seq={rec.seq};t={rec.kind}",
        )
    ).encode()
    return head + CRC_TAG + b"%08x" % zlib.crc32(head) + RS_B


# Our causality exactly as ``encode`` writes it: the fast path. Anything else that carries a
# valid checksum goes through ``_parse_causality``, which accepts the same data written loosely.
_CAUSALITY_RE = re.compile(r"hlc=([0-9a-f]{16});seq=([1-9][0-9]{0,18});t=([sjd])")
_intern = sys.intern


def decode_untrusted(raw: bytes, pos: int = 0) -> Record:
    """One record's bytes (without the trailing ``\\x1e``) -> Record.

    Accepts our records (checksum verified) and cocli's 6/7/8-field records with a free-form or
    empty causality. Raises RecordError for anything else: this parses bytes from disk, S3 and
    the network. A record that carries our causality (``hlc=...``) but no valid checksum is
    refused rather than read as a cocli record: it is one of ours, damaged. Repeated strings
    (node, campaign, environment, target, field) are interned: a replayed overlay holds a
    million records, and most of those strings are shared.
    """
    if raw[-13:-8] == CRC_TAG:
        try:
            want = int(raw[-8:], 16)
        except ValueError:
            raise RecordError("malformed checksum") from None
        body = raw[:-13]
        if zlib.crc32(body) != want:
            raise RecordError("checksum mismatch")
        checked = True
    else:
        body = raw
        checked = False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError("record is not valid UTF-8") from None
    parts = text.split(US)
    n = len(parts)
    if checked and n == 8:
        ts, node, campaign, env, target, field, value, causality = parts
        m = _CAUSALITY_RE.fullmatch(causality)
        if m is not None and node and target and field:
            kind = m[3]
            if kind == KIND_JSON:
                try:
                    json.loads(value)
                except ValueError:
                    raise RecordError("JSON value does not parse") from None
            return _new_record(
                int(m[1], 16),
                _intern(node),
                int(m[2]),
                _intern(target),
                _intern(field),
                kind,
                value,
                _intern(campaign),
                _intern(env),
                ts,
                pos,
            )
    if n == 8:
        ts, node, campaign, env, target, field, value, causality = parts
    elif n == 7:
        ts, node, campaign, target, field, value, causality = parts
        env = "prod"
    elif n == 6:
        ts, node, target, field, value, causality = parts
        campaign, env = "unknown", "prod"
    else:
        raise RecordError(f"expected 6, 7 or 8 fields, found {n}")
    if not node or not target or not field:
        raise RecordError("empty node_id, target or field")
    if checked:
        hlc, seq, kind = _parse_causality(causality)
        if kind == KIND_JSON:
            try:
                json.loads(value)
            except ValueError:
                raise RecordError("JSON value does not parse") from None
        return _new_record(
            hlc,
            _intern(node),
            seq,
            _intern(target),
            _intern(field),
            kind,
            value,
            _intern(campaign),
            _intern(env),
            ts,
            pos,
        )
    # A record by cocli itself: order by its timestamp, then node id, then file position.
    if causality.startswith("hlc="):
        raise RecordError("record in cocli-fs format without a valid checksum")
    if "/" not in target:
        # cocli's targets are '<kind>/<slug>'; anything else is a record cut short or shifted
        # (e.g. a damaged separator), which must not be applied with its fields misread.
        raise RecordError(f"target {target!r} is not '<kind>/<slug>'")
    try:
        hlc = iso_to_hlc(ts)
    except ValueError:
        raise RecordError(f"bad timestamp {ts!r}") from None
    return _new_record(
        hlc,
        _intern(node),
        0,
        _intern(target),
        _intern(field),
        _guess_kind(value),
        value,
        _intern(campaign),
        _intern(env),
        ts,
        pos,
    )


def decode_chunks(chunks: list[bytes], first_pos: int = 1) -> tuple[list[Record], list[int]]:
    """Decode many records at once (a journal split on ``\\x1e``): the start-up replay path.

    Returns the records and the indexes of the chunks that failed (the caller decodes those
    again with ``decode_untrusted`` to learn why). The result is exactly what calling
    ``decode_untrusted(chunk, first_pos + i)`` on each non-blank chunk would give (up to which
    equal strings are shared); this loop only handles our own well-formed records inline, with
    the per-record work cut to the bone (one checksum, one decode, one split, a few slices,
    shared strings for the few distinct node/campaign/environment/field values), and hands
    everything else — cocli's records, hand-edited ones, newlines between records, damage — to
    ``decode_untrusted``.
    """
    records: list[Record] = []
    bad: list[int] = []
    append = records.append
    crc32 = zlib.crc32
    loads = json.loads
    slots = _RecordSlots
    new_object = object.__new__
    record_class = Record
    strings: dict[str, str] = {}  # node, campaign, environment, field: few distinct values
    share = strings.setdefault
    # the previous record's node, campaign, environment and field (shared objects)
    l_node = l_campaign = l_env = l_field = ""
    tag = CRC_TAG
    sep = US
    kinds = "sjd"
    pos = first_pos - 1
    for chunk in chunks:
        pos += 1
        # Ours, well formed: ``...;crc=<8 hex>``, not preceded by a newline (those, and
        # everything below that does not hold, take the general path at the end).
        if chunk[-13:-8] == tag and chunk[0] not in (10, 13):
            body = chunk[:-13]
            try:
                parts = body.decode().split(sep) if crc32(body) == int(chunk[-8:], 16) else ()
            except ValueError:  # a bad hex digit, or not UTF-8
                parts = ()
            if len(parts) == 8:
                ts, node, campaign, env, target, field, value, c = parts
                # ``hlc=<16 hex>;seq=<n>;t=<k>`` read by position; whatever int() accepts here,
                # _parse_causality accepts too, with the same result.
                kind = c[-1:]
                if (
                    c[:4] == "hlc="
                    and c[20:25] == ";seq="
                    and c[-4:-1] == ";t="
                    and kind
                    and kind in kinds
                    and node
                    and target
                    and field
                ):
                    try:
                        hlc = int(c[4:20], 16)
                        seq = int(c[25:-4])
                    except ValueError:
                        hlc = -1
                    if hlc >= 0 and seq >= 1:
                        if kind == "j":
                            try:
                                loads(value)
                            except ValueError:
                                bad.append(pos - first_pos)
                                continue
                        # Share the few distinct strings: usually the previous record's
                        # (one string compare), else the table's.
                        if node != l_node:
                            l_node = share(node, node)
                        if campaign != l_campaign:
                            l_campaign = share(campaign, campaign)
                        if env != l_env:
                            l_env = share(env, env)
                        if field != l_field:
                            l_field = share(field, field)
                        r: Any = new_object(slots)  # filled in place: no __init__ frame
                        r.hlc = hlc
                        r.node_id = l_node
                        r.seq = seq
                        r.target = target
                        r.field = l_field
                        r.kind = kind
                        r.value = value
                        r.campaign_name = l_campaign
                        r.environment = l_env
                        r.timestamp = ts
                        r.pos = pos
                        r.__class__ = record_class  # see _RecordSlots
                        append(r)
                        continue
        # The general path: cocli's records, loose forms, blank chunks, errors.
        got = _decode_general(chunk, pos)
        if isinstance(got, Record):
            append(got)
        elif got is False:
            bad.append(pos - first_pos)
    return records, bad


def _decode_general(chunk: bytes, pos: int) -> Record | bool | None:
    """One chunk the fast paths do not take: a Record, None for a blank chunk (newlines between
    records), False for one that does not decode (``decode_untrusted`` says why)."""
    raw = chunk.strip(b"\r\n") if chunk[:1] in (b"\n", b"\r") else chunk
    if not raw:
        return None
    try:
        return decode_untrusted(raw, pos)
    except RecordError:
        return False


def decode_buffer_py(data: bytes, end: int, first_pos: int = 1) -> tuple[list[Record], list[int]]:
    """``decode_buffer`` in pure Python: split ``data[:end]`` on ``\\x1e``, then decode_chunks."""
    chunks = data[:end].split(RS_B)
    chunks.pop()  # what follows the last separator is not a record
    return decode_chunks(chunks, first_pos)


try:
    from . import _fastjournal  # type: ignore[attr-defined]
except ImportError:  # the optional C extension was not built: the Python decoder does it all
    _fastjournal = None

if _fastjournal is not None:
    _fastjournal.setup(Record, _decode_general, json.loads)
    decode_buffer_c = _fastjournal.decode_buffer
    FAST_DECODER = True
else:
    decode_buffer_c = decode_buffer_py
    FAST_DECODER = False


def decode_buffer(data: bytes, end: int, first_pos: int = 1) -> tuple[list[Record], list[int]]:
    """The records of ``data[:end]`` (a journal up to just after its last ``\\x1e``), with the
    indexes of the chunks that do not decode: exactly ``decode_chunks`` of its chunks. Uses the
    C extension (``cocli_fs/_fastjournal.c``) when it was built: it decodes our own well-formed
    records itself and hands every other chunk to the same Python general path."""
    result: tuple[list[Record], list[int]] = decode_buffer_c(data, end, first_pos)
    return result


def _parse_causality(causality: str) -> tuple[int, int, str]:
    try:
        items = dict(item.split("=", 1) for item in causality.split(";"))
        hlc = int(items["hlc"], 16)
        seq = int(items["seq"])
        kind = items["t"]
    except (KeyError, ValueError):
        raise RecordError(f"malformed causality {causality!r}") from None
    if kind not in _KINDS or seq < 1 or hlc < 0 or hlc >= 1 << 64:
        raise RecordError(f"malformed causality {causality!r}")
    return hlc, seq, kind
