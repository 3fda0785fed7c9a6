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
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
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
        ms = self.hlc >> HLC_LOGICAL_BITS
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y%m%d")

    def decoded_value(self) -> Any:
        return decode_value(self.kind, self.value)


# --- values -----------------------------------------------------------------------------------


def check_text(name: str, text: str) -> None:
    """Refuse text that would break the USV framing."""
    if US in text or RS in text:
        raise RecordError(f"{name} contains a USV separator byte (\\x1e or \\x1f)")


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
    if len(text.encode()) > MAX_FIELD_BYTES:
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


def hlc_to_iso(hlc: int) -> str:
    ms = hlc >> HLC_LOGICAL_BITS
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def iso_to_hlc(timestamp: str) -> int:
    """cocli timestamps (``datetime.now(UTC).isoformat()``) -> an HLC value with counter 0."""
    ts = timestamp.strip()
    if ts.endswith("Z"):
        ts = ts[:-1] + "+00:00"
    dt = datetime.fromisoformat(ts)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000) << HLC_LOGICAL_BITS


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
    for name, text in (
        ("node_id", node_id),
        ("target", target),
        ("field", field),
        ("campaign_name", campaign_name),
        ("environment", environment),
    ):
        check_text(name, text)
    if not field or not target or not node_id:
        raise RecordError("node_id, target and field must not be empty")
    if tombstone:
        kind, text = KIND_TOMBSTONE, ""
    else:
        kind, text = encode_value(value)
    return Record(
        hlc=hlc,
        node_id=node_id,
        seq=seq,
        target=target,
        field=field,
        kind=kind,
        value=text,
        campaign_name=campaign_name,
        environment=environment,
        timestamp=hlc_to_iso(hlc),
    )


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


def decode_untrusted(raw: bytes, pos: int = 0) -> Record:
    """One record's bytes (without the trailing ``\\x1e``) -> Record.

    Accepts our records (checksum verified) and cocli's 6/7/8-field records with a free-form or
    empty causality. Raises RecordError for anything else: this parses bytes from disk, S3 and
    the network.
    """
    crc_at = raw.rfind(CRC_TAG)
    if crc_at >= 0 and len(raw) - crc_at == len(CRC_TAG) + 8:
        try:
            want = int(raw[crc_at + len(CRC_TAG) :], 16)
        except ValueError:
            raise RecordError("malformed checksum") from None
        if zlib.crc32(raw[:crc_at]) != want:
            raise RecordError("checksum mismatch")
        body = raw[:crc_at]
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
        return Record(hlc, node, seq, target, field, kind, value, campaign, env, ts, pos)
    # A record by cocli itself: order by its timestamp, then node id, then file position.
    try:
        hlc = iso_to_hlc(ts)
    except ValueError:
        raise RecordError(f"bad timestamp {ts!r}") from None
    return Record(hlc, node, 0, target, field, _guess_kind(value), value, campaign, env, ts, pos)


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
