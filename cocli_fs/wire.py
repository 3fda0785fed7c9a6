"""Gossip datagrams: one definition of the wire format, its authentication and its limits.

A datagram is::

    MAGIC (4 bytes "CFG1") | TAG (16 bytes) | PAYLOAD (msgpack)

``TAG`` is HMAC-SHA256 over ``MAGIC | PAYLOAD`` with the shared cluster key, truncated to 128 bits
(as RFC 4868 truncates HMAC-SHA256 for IPsec). ``PAYLOAD`` is the msgpack array
``[type, sender, boot, counter, body]``:

* ``sender``  the sending node's name;
* ``boot``    the sender's start time in microseconds (a new one on every restart);
* ``counter`` the sender's datagram counter within this boot (1, 2, 3 …); ``(boot, counter)``
  lets the receiver drop replayed and duplicated datagrams (``ReplayWindow``);
* ``body``    depends on ``type`` (see ``Msg``).

Records travel as the USV bytes of ``record.encode`` (they carry their own CRC, so a record is
checked end to end, from the origin's journal to the peer's replica). A record too large for one
datagram is cut into ``CHUNK`` datagrams and reassembled (``Reassembler``, bounded in memory and
time).

Everything parsing bytes from the network is named ``..._untrusted`` and raises ``WireError``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import msgpack

from . import record as rec
from .config import ConfigError
from .journal import NODE_RE
from .record import Record, RecordError

MAGIC = b"CFG1"
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + TAG_BYTES
MAX_DATAGRAM = 1400  # what we send: fits a 1,500-byte Ethernet path with IP/UDP headers
MAX_ACCEPT = 1472  # what we accept: the largest UDP payload that avoids fragmentation
# Room for records in one RECORDS datagram (header, msgpack framing and envelope subtracted).
RECORDS_BUDGET = MAX_DATAGRAM - HEADER_BYTES - 96
CHUNK_BYTES = RECORDS_BUDGET - 32
MAX_RECORD = rec.MAX_FIELD_BYTES + 8192  # a maximal value plus the other fields
MAX_CHUNKS = MAX_RECORD // CHUNK_BYTES + 1
INSECURE_KEY = b"cocli-fs insecure test cluster"


class WireError(ValueError):
    """A datagram that is not ours: forged, malformed, oversized or replayed."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind  # the counter this drop goes to


class Msg(IntEnum):
    PING = 1  # [sent_ns, hlc]                  -> ACK
    ACK = 2  # [echoed sent_ns, hlc, wall_ms]
    RECORDS = 3  # [record bytes, ...]
    CHUNK = 4  # [msg_id, index, total, bytes]  one piece of a record too large for a datagram
    DIGEST = 5  # [reply_wanted, {origin: [contiguous, highest]}]
    REQUEST = 6  # {origin: [[lo, hi], ...]}     records the sender misses, inclusive ranges


@dataclass(frozen=True)
class Datagram:
    type: Msg
    sender: str
    boot: int
    counter: int
    body: Any


# --- keys ---------------------------------------------------------------------------------------


class ClusterKeyError(ConfigError):
    """No usable cluster key (a config error: the CLI reports it and exits 2)."""


def load_key(key: str | None, key_file: Path | None, insecure: bool) -> bytes:
    """The cluster key from config (inline ``key`` or ``key_file``). Without one, gossip refuses
    to run unless the cluster is explicitly insecure (then a fixed, public key is used so framing
    and integrity checks still work)."""
    if key:
        data = key.encode()
    elif key_file is not None:
        try:
            data = key_file.read_bytes().strip()
        except OSError as exc:
            raise ClusterKeyError(f"cannot read gossip key_file {key_file}: {exc}") from None
    elif insecure:
        return INSECURE_KEY
    else:
        raise ClusterKeyError(
            "gossip needs a shared cluster key: set [gossip] key_file (or key) in the config, "
            "or insecure = true for a test cluster on a trusted network"
        )
    if len(data) < 16:
        raise ClusterKeyError("the gossip cluster key must be at least 16 bytes")
    return data


# --- sealing ------------------------------------------------------------------------------------


def _tag(key: bytes, payload: bytes) -> bytes:
    tag: bytes = hmac.new(key, MAGIC + payload, hashlib.sha256).digest()
    return tag[:TAG_BYTES]


def seal(key: bytes, type_: Msg, sender: str, boot: int, counter: int, body: Any) -> bytes:
    payload: bytes = msgpack.packb([int(type_), sender, boot, counter, body], use_bin_type=True)
    return MAGIC + _tag(key, payload) + payload


def open_untrusted(key: bytes, data: bytes) -> bytes:
    """Check size, magic and tag; return the authenticated payload (still unparsed)."""
    if len(data) > MAX_ACCEPT:
        raise WireError("oversized", f"{len(data)} bytes")
    if len(data) < HEADER_BYTES + 1 or data[: len(MAGIC)] != MAGIC:
        raise WireError("malformed", "no magic")
    payload = data[HEADER_BYTES:]
    if not hmac.compare_digest(data[len(MAGIC) : HEADER_BYTES], _tag(key, payload)):
        raise WireError("forged", "bad tag")
    return payload


def decode_untrusted(payload: bytes) -> Datagram:
    """Authenticated payload -> Datagram. The key only proves a cluster member sent it; the
    shape is still checked, since a buggy or newer peer must not crash us."""
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_ACCEPT,
            max_bin_len=MAX_ACCEPT,
            max_array_len=512,
            max_map_len=512,
        )
    except Exception as exc:  # msgpack raises many types for garbage: all mean "malformed"
        raise WireError("malformed", f"msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, list) or len(obj) != 5:
        raise WireError("malformed", "envelope is not a 5-array")
    type_, sender, boot, counter, body = obj
    try:
        t = Msg(type_)
    except (ValueError, TypeError):
        raise WireError("malformed", f"unknown type {type_!r}") from None
    if not isinstance(sender, str) or not NODE_RE.match(sender):
        raise WireError("malformed", "bad sender")
    if not _uint(boot) or not _uint(counter):
        raise WireError("malformed", "bad boot/counter")
    _check_body(t, body)
    return Datagram(t, sender, boot, counter, body)


def _uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 64


def _check_body(t: Msg, body: Any) -> None:
    ok: bool
    if t is Msg.PING:
        ok = isinstance(body, list) and len(body) == 2 and all(_uint(x) for x in body)
    elif t is Msg.ACK:
        ok = isinstance(body, list) and len(body) == 3 and all(_uint(x) for x in body)
    elif t is Msg.RECORDS:
        ok = isinstance(body, list) and all(isinstance(x, bytes) for x in body)
    elif t is Msg.CHUNK:
        ok = (
            isinstance(body, list)
            and len(body) == 4
            and all(_uint(x) for x in body[:3])
            and isinstance(body[3], bytes)
            and 0 < body[2] <= MAX_CHUNKS
            and body[1] < body[2]
        )
    elif t is Msg.DIGEST:
        ok = (
            isinstance(body, list)
            and len(body) == 2
            and isinstance(body[0], bool)
            and isinstance(body[1], dict)
            and all(
                isinstance(k, str)
                and NODE_RE.match(k)
                and isinstance(v, list)
                and len(v) == 2
                and all(_uint(x) for x in v)
                for k, v in body[1].items()
            )
        )
    else:  # REQUEST
        ok = isinstance(body, dict) and all(
            isinstance(k, str)
            and NODE_RE.match(k)
            and isinstance(v, list)
            and all(
                isinstance(r, list) and len(r) == 2 and _uint(r[0]) and _uint(r[1]) and r[0] <= r[1]
                for r in v
            )
            for k, v in body.items()
        )
    if not ok:
        raise WireError("malformed", f"bad {t.name} body")


# --- records ------------------------------------------------------------------------------------


def check_target(target: str) -> bool:
    """``<kind>/<slug>``: a peer must not make us write outside an entity folder."""
    parts = target.split("/")
    return len(parts) == 2 and all(p and p not in (".", "..") and "\\" not in p for p in parts)


def record_untrusted(raw: bytes) -> Record:
    """USV bytes of one record from a peer -> Record. Only our own records (with causality and
    a sequence number) travel by gossip; cocli's plain records come through files and S3."""
    if not raw.endswith(rec.RS_B):
        raise WireError("malformed", "record without separator")
    try:
        r = rec.decode_untrusted(raw[:-1])
    except RecordError as exc:
        raise WireError("malformed", f"record: {exc}") from None
    if r.seq < 1 or not NODE_RE.match(r.node_id) or not check_target(r.target):
        raise WireError("malformed", "record without seq, or bad node/target")
    return r


def pack_records(encoded: list[bytes]) -> Iterator[tuple[Msg, list[Any]]]:
    """Group encoded records into datagram bodies of at most ``RECORDS_BUDGET`` bytes; a record
    larger than that becomes a run of CHUNK bodies (msg_id is filled in by the sender)."""
    batch: list[Any] = []
    size = 0
    for raw in encoded:
        n = len(raw) + 5  # msgpack bin header
        if n > RECORDS_BUDGET:
            if batch:  # keep the records in order
                yield Msg.RECORDS, batch
                batch, size = [], 0
            total = (len(raw) + CHUNK_BYTES - 1) // CHUNK_BYTES
            for i in range(total):
                yield Msg.CHUNK, [0, i, total, raw[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]]
            continue
        if size + n > RECORDS_BUDGET and batch:
            yield Msg.RECORDS, batch
            batch, size = [], 0
        batch.append(raw)
        size += n
    if batch:
        yield Msg.RECORDS, batch


# --- replay protection --------------------------------------------------------------------------


@dataclass
class ReplayWindow:
    """Anti-replay for one sender (like IPsec's sliding window): accepts each ``(boot, counter)``
    once, within the newest ``size`` counters of the newest boot. Duplicates from the network
    land here too; dropping them is harmless (records merge idempotently anyway)."""

    size: int = 4096
    boot: int = -1
    top: int = 0
    bits: int = 0  # bit i set: counter (top - i) seen

    def accept(self, boot: int, counter: int) -> bool:
        if boot > self.boot:  # the sender restarted: a new window
            self.boot, self.top, self.bits = boot, counter, 1
            return True
        if boot < self.boot:
            return False
        if counter > self.top:
            shift = counter - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << self.size) - 1)
            self.top = counter
            return True
        back = self.top - counter
        if back >= self.size or self.bits >> back & 1:
            return False
        self.bits |= 1 << back
        return True


# --- reassembly ---------------------------------------------------------------------------------


@dataclass
class _Partial:
    total: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Puts chunked records back together, with bounded memory: at most ``max_bytes`` buffered
    and ``max_partials`` records in flight; a record not complete after ``timeout`` is dropped
    (anti-entropy will fetch it again)."""

    def __init__(
        self, max_bytes: int = 8 << 20, max_partials: int = 64, timeout: float = 10.0
    ) -> None:
        self.max_bytes = max_bytes
        self.max_partials = max_partials
        self.timeout = timeout
        self.partials: dict[tuple[str, int, int], _Partial] = {}
        self.bytes = 0
        self.dropped = 0

    def add(
        self,
        sender: str,
        boot: int,
        msg_id: int,
        index: int,
        total: int,
        data: bytes,
        now: float | None = None,
    ) -> bytes | None:
        """One chunk; the whole record's bytes when this completed it."""
        now = time.monotonic() if now is None else now
        self.expire(now)
        key = (sender, boot, msg_id)
        p = self.partials.get(key)
        if p is None:
            if len(self.partials) >= self.max_partials:
                self.dropped += 1
                return None
            p = self.partials[key] = _Partial(total, now)
        if p.total != total or index in p.parts:
            return None
        if self.bytes + len(data) > self.max_bytes or p.size + len(data) > MAX_RECORD:
            self._forget(key)
            self.dropped += 1
            return None
        p.parts[index] = data
        p.size += len(data)
        self.bytes += len(data)
        if len(p.parts) < total:
            return None
        self._forget(key)
        return b"".join(p.parts[i] for i in range(total))

    def expire(self, now: float) -> None:
        for key in [k for k, p in self.partials.items() if now - p.started > self.timeout]:
            self._forget(key)
            self.dropped += 1

    def _forget(self, key: tuple[str, int, int]) -> None:
        p = self.partials.pop(key, None)
        if p is not None:
            self.bytes -= p.size
