"""UDP gossip: push new records to every peer at once, and repair what UDP lost by anti-entropy.

* **Push**: a state listener enqueues our new records (never blocks: it may run inside a FUSE
  handler); one task packs them into datagrams (``wire.pack_records``) and sends each to every
  reachable peer.
* **Anti-entropy** (Scuttlebutt-style): every ``anti_entropy_interval`` we send a DIGEST
  ``{origin: [contiguous, highest]}`` to one random alive peer. Each side compares it with its own
  ``OriginSeqs`` and sends a REQUEST for exactly the sequence numbers it lacks (gaps included); the
  other side serves them from memory (recent records) or from the journals in ``wal/``, paced per
  peer, so a node back after hours catches up without flooding anyone.
* **Membership**: PING/ACK (``membership.py``), with round trip and clock skew.
* **Robustness**: the receive loop only checks size, rate and the HMAC tag, then hands the
  datagram to a bounded queue; everything else happens in the processing task. Every drop has a
  counter in ``status()``.

Wire format and limits: ``wire.py``; design notes: ``docs/gossip.md``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from . import record as rec
from . import wire
from .config import ConfigError, parse_address
from .journal import journal_files, parse_journal_name
from .membership import Address, Membership, Peer, PeerState
from .overlay import OriginSeqs
from .record import Record, RecordError
from .state import NodeState
from .wire import Msg, WireError

log = logging.getLogger(__name__)

INBOX = 8192  # authenticated datagrams waiting for the processing task, all peers
INBOX_PER_SOURCE = 2048  # … per source address, so one peer cannot starve the others
SOURCES_MAX = 4096  # rate-limiter entries (sources may be spoofed: the table is bounded)
RATE = 20_000.0  # datagrams/s accepted per source address
BURST = 4_000.0
PUSH_QUEUE = 10_000  # batches of local records waiting to be pushed
REQUEST_LIMIT = 5_000  # sequence numbers asked for per origin and round
RANGES_PER_REQUEST = 90  # ranges per REQUEST datagram (keeps it under MAX_DATAGRAM)
ORIGINS_PER_DIGEST = 40
SERVE_PENDING = 20_000  # sequence numbers queued for one requester; more are dropped
SERVING_MAX = 64  # requesters served at once
SERVE_RATE = 5_000.0  # datagrams/s when serving one requester (about 7 MB/s)
RECENT = 100_000  # recent records kept in memory to serve anti-entropy without disk reads
FLUSH_INTERVAL = 1.0  # replicas written with sync=False are fsynced this often
RCVBUF = 4 << 20
# A requested range is not asked for again while its answer is on its way: for ASKED_FOR (plus
# time for a big answer), extended while answers for that origin keep arriving, never beyond
# ASKED_MAX. Then whatever is still missing (lost) is asked for again.
ASKED_FOR = 0.25
ASKED_MAX = 5.0
FLOW_RANGE = 64  # ranges at least this long count as a catch-up (see _in_flight)
SERVE_RATE_RECORDS = 20_000.0
CATCH_UP_PAUSE = 0.15  # between anti-entropy rounds while records are missing


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token bucket per source address; the table is bounded (cleared when full)."""

    def __init__(self, rate: float = RATE, burst: float = BURST) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: dict[Address, _Bucket] = {}

    def allow(self, addr: Address, now: float) -> bool:
        b = self.buckets.get(addr)
        if b is None:
            if len(self.buckets) >= SOURCES_MAX:
                self.buckets.clear()
            b = self.buckets[addr] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True


# --- finding records by (origin, seq) -----------------------------------------------------------


@dataclass
class _FileIndex:
    size: int = 0  # bytes indexed (up to the last complete record)
    lo: int = 0
    hi: int = 0
    spans: dict[int, tuple[int, int]] | None = None  # seq -> (offset, length)


class JournalIndex:
    """Locates records of one origin in ``wal/`` by sequence number. Each journal file is indexed
    once (offsets of its records, found without decoding them) and extended as it grows; a file
    that shrank (compaction rewrote it) is indexed again. Blocking: call from a worker thread."""

    MAX_FILES = 64

    def __init__(self, wal_dir: Path) -> None:
        self.wal_dir = wal_dir
        self.files: OrderedDict[Path, _FileIndex] = OrderedDict()

    def _index(self, path: Path) -> _FileIndex:
        idx = self.files.get(path)
        size = path.stat().st_size
        if idx is None or size < idx.size:
            idx = _FileIndex(spans={})
        self.files[path] = idx
        self.files.move_to_end(path)
        while len(self.files) > self.MAX_FILES:
            self.files.popitem(last=False)
        if size == idx.size:
            return idx
        assert idx.spans is not None
        with open(path, "rb") as f:
            f.seek(idx.size)
            data = f.read(size - idx.size)
        end = data.rfind(rec.RS_B) + 1
        offset = 0
        for chunk in data[:end].split(rec.RS_B)[:-1]:
            at = chunk.rfind(b";seq=")
            if at >= 0:
                stop = chunk.find(b";", at + 5)
                try:
                    seq = int(chunk[at + 5 : stop])
                except ValueError:
                    seq = 0
                if seq > 0:
                    idx.spans[seq] = (idx.size + offset, len(chunk))
                    idx.hi = max(idx.hi, seq)
                    idx.lo = seq if not idx.lo else min(idx.lo, seq)
            offset += len(chunk) + 1
        idx.size += end
        return idx

    def lookup(self, origin: str, seqs: set[int]) -> dict[int, bytes]:
        """The encoded records (with their separator) of ``origin`` among ``seqs`` that are on
        disk and pass their checksum."""
        out: dict[int, bytes] = {}
        if not seqs:
            return out
        lo, hi = min(seqs), max(seqs)
        for path in journal_files(self.wal_dir):
            parsed = parse_journal_name(path.name)
            if parsed is None or parsed[1] != origin:
                continue
            try:
                idx = self._index(path)
            except OSError:
                continue
            if idx.hi < lo or idx.lo > hi or not idx.spans:
                continue
            hits = [(s, idx.spans[s]) for s in seqs if s in idx.spans and s not in out]
            if not hits:
                continue
            with open(path, "rb") as f:
                for seq, (off, length) in hits:
                    f.seek(off)
                    raw = f.read(length).strip(b"\r\n")
                    try:
                        r = rec.decode_untrusted(raw)
                    except RecordError:
                        continue  # corrupt on our disk: never forward it
                    if r.node_id == origin and r.seq == seq:
                        out[seq] = raw + rec.RS_B
        return out


# --- the service --------------------------------------------------------------------------------


class GossipService:
    name = "gossip"

    def __init__(self, state: NodeState) -> None:
        self.state = state
        cfg = state.config.gossip
        self.cfg = cfg
        # Refuse to run without a key (unless insecure) before anything starts.
        self.key = wire.load_key(cfg.key, state.config.key_path(), cfg.insecure)
        self.insecure = self.key == wire.INSECURE_KEY
        self.listen = parse_address(cfg.listen, "[gossip] listen")
        self.members = Membership(cfg.peers, cfg.ping_interval, cfg.suspect_after, cfg.dead_after)
        self.node = state.node
        self.boot = time.time_ns() // 1000
        self.counter = 0
        self.msg_ids = 0
        self.counters: dict[str, int] = defaultdict(int)
        self.limiter = RateLimiter()
        self.windows: dict[str, wire.ReplayWindow] = {}
        self.reassembler = wire.Reassembler()
        self.recent: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self.journals = JournalIndex(state.data.wal)
        self.serving: dict[Address, dict[str, set[int]]] = {}
        self.queued: dict[Address, int] = defaultdict(int)
        self.dirty = False
        self.sock: trio.socket.SocketType | None = None
        self.bound: Address | None = None
        self._nursery: trio.Nursery | None = None
        self._disk = trio.Lock()
        self._push_send, self._push_recv = trio.open_memory_channel[list[Record]](PUSH_QUEUE)
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[bytes, Address]](INBOX)
        self._wake_ae = trio.Event()
        self._last_wanted = 0
        # origin -> ranges requested recently, with the time until which they count as in flight
        self.asked: dict[str, list[tuple[int, int, float, float]]] = {}  # lo, hi, soft, hard
        self.answers_until: dict[str, float] = {}  # origin -> answers seen recently: until

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
        try:
            await sock.bind(self.listen)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"[gossip] listen = {self.cfg.listen!r}: {exc.strerror}") from None
        self.sock = sock
        self.bound = sock.getsockname()
        if self.insecure:
            log.warning("gossip runs WITHOUT a cluster key (insecure = true): test clusters only")
        self.state.listeners.append(self._on_change)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._resolve_all()
                nursery.start_soon(self._receive_loop)
                nursery.start_soon(self._process_loop)
                nursery.start_soon(self._push_loop)
                nursery.start_soon(self._ping_loop)
                nursery.start_soon(self._anti_entropy_loop)
                nursery.start_soon(self._flush_loop)
                log.info(
                    "gossip listening on %s:%d, %d peers", *self.bound, len(self.members.peers)
                )
                task_status.started()
        finally:
            with contextlib.suppress(ValueError):
                self.state.listeners.remove(self._on_change)
            sock.close()
            if self.dirty and self.state.replicas is not None:
                with trio.CancelScope(shield=True), contextlib.suppress(OSError):
                    await self.state.replicas.flush()

    # -- sending ---------------------------------------------------------------------------------

    async def _send(self, addr: Address, type_: Msg, body: Any) -> None:
        assert self.sock is not None
        self.counter += 1
        data = wire.seal(self.key, type_, self.node, self.boot, self.counter, body)
        try:
            await self.sock.sendto(data, addr)
        except OSError as exc:
            self.counters["send_errors"] += 1
            log.debug("send to %s failed: %s", addr, exc)
            return
        self.counters["datagrams_out"] += 1

    async def _send_records(self, addrs: list[Address], encoded: list[bytes]) -> int:
        """Pack and send to each address; returns datagrams per address."""
        n = 0
        for type_, body in wire.pack_records(encoded):
            if type_ is Msg.CHUNK:
                if body[1] == 0:
                    self.msg_ids += 1
                body[0] = self.msg_ids
            for a in addrs:
                await self._send(a, type_, body)
            n += 1
            if n % 32 == 0:
                await trio.sleep(0)  # let the receive loop drain the socket during big bursts
        return n

    # -- push --------------------------------------------------------------------------------

    def _on_change(self, targets: set[str], records: list[Record], local: bool) -> None:
        """State listener: runs synchronously, maybe inside a FUSE handler; only enqueues."""
        if not local:
            return
        try:
            self._push_send.send_nowait(records)
        except trio.WouldBlock:
            self.counters["push_overflow"] += 1  # anti-entropy will carry them

    async def _push_loop(self) -> None:
        async for first in self._push_recv:
            batch = list(first)
            while len(batch) < 20_000:
                try:
                    batch.extend(self._push_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            encoded = []
            for r in batch:
                if r.seq:
                    raw = rec.encode(r)
                    self._remember(r.node_id, r.seq, raw)
                    encoded.append(raw)
            addrs = [p.addr for p in self.members.reachable() if p.addr is not None]
            if encoded and addrs:
                await self._send_records(addrs, encoded)
                self.counters["records_pushed"] += len(encoded)

    def _remember(self, origin: str, seq: int, raw: bytes) -> None:
        self.recent[(origin, seq)] = raw
        if len(self.recent) > RECENT:
            self.recent.popitem(last=False)

    # -- receiving -------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        """Never blocks on processing: checks size, rate and tag, then enqueues or drops."""
        assert self.sock is not None
        c = self.counters
        while True:
            try:
                data, addr = await self.sock.recvfrom(65536)
            except OSError as exc:  # e.g. ICMP errors reported on some platforms
                c["receive_errors"] += 1
                log.debug("recvfrom: %s", exc)
                continue
            addr = (addr[0], addr[1])
            c["datagrams_in"] += 1
            if not self.limiter.allow(addr, time.monotonic()):
                c["rate_limited"] += 1
                continue
            try:
                payload = wire.open_untrusted(self.key, data)
            except WireError as exc:
                c[exc.kind] += 1
                continue
            if self.queued[addr] >= INBOX_PER_SOURCE:
                c["queue_full"] += 1
                continue
            try:
                self._inbox_send.send_nowait((payload, addr))
            except trio.WouldBlock:
                c["queue_full"] += 1
                continue
            self.queued[addr] += 1

    async def _process_loop(self) -> None:
        n = 0
        async for payload, addr in self._inbox_recv:
            self.queued[addr] -= 1
            if not self.queued[addr]:
                del self.queued[addr]
            try:
                await self._handle(payload, addr)
            except WireError as exc:
                self.counters[exc.kind] += 1
            except OSError as exc:  # e.g. the disk is full: keep gossiping, anti-entropy retries
                self.counters["apply_errors"] += 1
                log.error("gossip: cannot apply a datagram from %s: %s", addr, exc)
            except Exception:  # a bug must not take the mount's nursery down with it
                self.counters["errors"] += 1
                log.exception("gossip: datagram from %s", addr)
            n += 1
            if n % 64 == 0:
                await trio.sleep(0)

    async def _handle(self, payload: bytes, addr: Address) -> None:
        d = wire.decode_untrusted(payload)
        if d.sender == self.node:
            raise WireError("from_self")  # our own datagram reflected, or a misconfiguration
        win = self.windows.get(d.sender)
        if win is None:
            if len(self.windows) >= SOURCES_MAX:
                self.windows.clear()
            win = self.windows[d.sender] = wire.ReplayWindow()
        if not win.accept(d.boot, d.counter):
            raise WireError("replayed")
        self.counters["accepted"] += 1
        peer = self.members.by_addr(addr) or self.members.by_node(d.sender)
        if peer is not None:
            self.members.heard(peer, d.sender)
        t = d.type
        if t is Msg.RECORDS:
            self._apply_raw(d.body, d.sender)
        elif t is Msg.CHUNK:
            msg_id, index, total, data = d.body
            whole = self.reassembler.add(d.sender, d.boot, msg_id, index, total, data)
            if whole is not None:
                self._apply_raw([whole], d.sender)
        elif t is Msg.PING:
            sent_ns, hlc = d.body
            self.state.clock.update(hlc, d.sender)
            await self._send(addr, Msg.ACK, [sent_ns, self._hlc(), time.time_ns() // 1_000_000])
        elif t is Msg.ACK:
            sent_ns, hlc, wall_ms = d.body
            self.state.clock.update(hlc, d.sender)
            if peer is not None:
                self.members.acked(peer, sent_ns, wall_ms)
        elif t is Msg.DIGEST:
            await self._on_digest(addr, d.sender, d.body[0], d.body[1])
        elif t is Msg.REQUEST:
            self._on_request(addr, d.body)

    def _hlc(self) -> int:
        return max(self.state.clock.last, time.time_ns() // 1_000_000 << rec.HLC_LOGICAL_BITS)

    def _apply_raw(self, raws: list[bytes], sender: str) -> None:
        records = []
        for raw in raws:
            try:
                r = wire.record_untrusted(raw)
            except WireError:
                self.counters["malformed_records"] += 1
                continue
            records.append((r, raw))
        if not records:
            return
        self.counters["records_in"] += len(records)
        new = self.state.receive([r for r, _ in records], peer=sender, sync=False)
        if new:
            self.dirty = True
            self.counters["records_new"] += len(new)
            for r, raw in records:
                self._remember(r.node_id, r.seq, raw)
            origins = self.state.overlay.origins
            now = time.monotonic()
            touched = {r.node_id for r in new}
            for o in touched:
                asked = self.asked.get(o)
                if not asked:
                    continue
                # Answers (pushes carry seqs above anything we could have asked for): the answer
                # stream for this origin is flowing, so its asks stay in flight a little longer.
                top = max(a[1] for a in asked)
                if any(r.seq <= top for r in new if r.node_id == o):
                    self.answers_until[o] = now + ASKED_FOR
            if any(origins[o].above for o in touched):
                self._wake_ae.set()  # a push arrived with a gap before it: repair soon

    # -- anti-entropy ------------------------------------------------------------------------

    def digest(self) -> dict[str, list[int]]:
        ov = self.state.overlay
        high = ov.highest()
        return {o: [c, high.get(o, c)] for o, c in ov.contiguous().items()}

    def wants(
        self, theirs: dict[str, list[int]], now: float | None = None
    ) -> dict[str, list[list[int]]]:
        """What we lack of what a peer's digest says it holds: inclusive seq ranges, without
        those asked for moments ago (their answer is probably still on its way)."""
        now = time.monotonic() if now is None else now
        out: dict[str, list[list[int]]] = {}
        origins = self.state.overlay.origins
        for origin, (_contiguous, highest) in theirs.items():
            seqs = origins.get(origin) or OriginSeqs()
            flowing = self.answers_until.get(origin, 0.0)
            asked = [
                (lo, hi)
                for lo, hi, soft, hard in self.asked.get(origin, ())
                if _in_flight(lo, hi, soft, hard, flowing, now)
            ]
            missing = seqs.missing(highest, limit=REQUEST_LIMIT * 4)
            gaps = _subtract(missing, asked)
            # At most REQUEST_LIMIT missing records in flight per origin: a slow answer (a
            # loaded peer) is not asked for again and again, which would only add load.
            in_flight = _count(missing) - _count(gaps)
            budget, kept = REQUEST_LIMIT - in_flight, []
            if budget <= 0:
                continue
            for lo, hi in gaps:
                hi = min(hi, lo + budget - 1)
                kept.append([lo, hi])
                budget -= hi - lo + 1
                if budget <= 0:
                    break
            if kept:
                out[origin] = kept
        return out

    def _mark_asked(self, wants: dict[str, list[list[int]]], now: float) -> None:
        for origin, ranges in wants.items():
            n = _count(ranges)
            soft, hard = now + ASKED_FOR + n / SERVE_RATE_RECORDS, now + ASKED_MAX
            live = [a for a in self.asked.get(origin, ()) if a[3] > now]
            self.asked[origin] = live + [(lo, hi, soft, hard) for lo, hi in ranges]

    async def _send_digest(self, addr: Address, reply_wanted: bool) -> None:
        items = sorted(self.digest().items())
        parts = [
            items[i : i + ORIGINS_PER_DIGEST] for i in range(0, len(items), ORIGINS_PER_DIGEST)
        ]
        parts = parts or [[]]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            await self._send(addr, Msg.DIGEST, [reply_wanted and last, dict(part)])
        self.counters["digests_out"] += 1

    async def _on_digest(
        self, addr: Address, sender: str, reply_wanted: bool, theirs: dict[str, list[int]]
    ) -> None:
        self.counters["digests_in"] += 1
        now = time.monotonic()
        wants = self.wants(theirs, now)
        if wants:
            self._mark_asked(wants, now)
            wanted = sum(_count(rs) for rs in wants.values())
            if wanted != self._last_wanted:  # still moving: next round soon (not when stuck)
                self._wake_ae.set()
            self._last_wanted = wanted
            # Ask the partner for what its contiguous prefix guarantees it holds; anything above
            # that goes to the origin itself when it is alive (it holds all of its records),
            # else to the partner anyway (it may hold some of them).
            by_dest: dict[Address, list[tuple[str, list[int]]]] = defaultdict(list)
            for origin, ranges in wants.items():
                holder = self._alive_addr(origin) if origin != sender else None
                sure = theirs[origin][0]
                for lo, hi in ranges:
                    if holder is None or hi <= sure:
                        by_dest[addr].append((origin, [lo, hi]))
                    elif lo > sure:
                        by_dest[holder].append((origin, [lo, hi]))
                    else:
                        by_dest[addr].append((origin, [lo, sure]))
                        by_dest[holder].append((origin, [sure + 1, hi]))
            for dest, flat in by_dest.items():
                await self._send_requests(dest, flat)
        if reply_wanted:
            await self._send_digest(addr, False)

    def _alive_addr(self, node: str) -> Address | None:
        p = self.members.by_node(node)
        if p is None or p.addr is None or self.members.state(p) is not PeerState.ALIVE:
            return None
        return p.addr

    async def _send_requests(self, dest: Address, flat: list[tuple[str, list[int]]]) -> None:
        for i in range(0, len(flat), RANGES_PER_REQUEST):
            body: dict[str, list[list[int]]] = defaultdict(list)
            for o, r in flat[i : i + RANGES_PER_REQUEST]:
                body[o].append(r)
            await self._send(dest, Msg.REQUEST, dict(body))
        self.counters["requests_out"] += 1

    def _on_request(self, addr: Address, body: dict[str, list[list[int]]]) -> None:
        """Queue the asked-for records for this requester (bounded); one task per requester
        sends them, paced."""
        self.counters["requests_in"] += 1
        pending = self.serving.get(addr)
        start = pending is None
        if pending is None:
            if len(self.serving) >= SERVING_MAX:
                self.counters["serve_overflow"] += 1
                return
            pending = self.serving[addr] = {}
        room = SERVE_PENDING - sum(len(s) for s in pending.values())
        for origin, ranges in body.items():
            want = pending.setdefault(origin, set())
            for lo, hi in ranges:
                take = min(hi - lo + 1, room)
                if take <= 0:
                    self.counters["serve_overflow"] += 1
                    break
                before = len(want)
                want.update(range(lo, lo + take))
                room -= len(want) - before
        if start and self._nursery is not None:
            self._nursery.start_soon(self._serve, addr)

    async def _serve(self, addr: Address) -> None:
        try:
            while True:
                pending = self.serving.get(addr)
                if not pending:
                    return
                origin = next(iter(pending))
                seqs = pending.pop(origin)
                found: dict[int, bytes] = {}
                for s in seqs:
                    raw = self.recent.get((origin, s))
                    if raw is not None:
                        found[s] = raw
                rest = seqs - found.keys()
                if rest:
                    async with self._disk:
                        found.update(
                            await trio.to_thread.run_sync(self.journals.lookup, origin, rest)
                        )
                self.counters["records_served"] += len(found)
                self.counters["records_unavailable"] += len(seqs) - len(found)
                encoded = [found[s] for s in sorted(found)]
                for i in range(0, len(encoded), 400):
                    n = await self._send_records([addr], encoded[i : i + 400])
                    await trio.sleep(n / SERVE_RATE)  # pacing: a catch-up must not flood
        finally:
            self.serving.pop(addr, None)

    async def _anti_entropy_loop(self) -> None:
        interval = self.cfg.anti_entropy_interval
        progress = -1
        while True:
            peers = self.members.alive() or [p for p in self.members.peers if p.addr]
            if peers:
                addr = random.choice(peers).addr
                assert addr is not None
                await self._send_digest(addr, True)
            self._wake_ae = trio.Event()
            # Known gaps and still closing them: go again soon. Gaps that nobody can fill (their
            # origin is down and nobody else holds them) fall back to the normal interval.
            held = sum(s.contiguous for s in self.state.overlay.origins.values())
            if (held != progress and self._has_gaps()) or self._asking():
                self._wake_ae.set()
            progress = held
            with trio.move_on_after(interval):
                await self._wake_ae.wait()
                # We just asked for missing records: give the answers a moment to arrive, then
                # run the next round at once, so gaps close in round trips, not intervals.
                await trio.sleep(min(interval, CATCH_UP_PAUSE))

    def _asking(self) -> bool:
        """Records asked for recently: check again soon, in case the request or its answer
        was lost (the asked-for ranges are re-requested once they expire)."""
        now = time.monotonic()
        return any(
            _in_flight(lo, hi, soft, hard, self.answers_until.get(o, 0.0), now)
            for o, rs in self.asked.items()
            for lo, hi, soft, hard in rs
        )

    def _has_gaps(self) -> bool:
        return any(s.above for s in self.state.overlay.origins.values())

    # -- membership ------------------------------------------------------------------------------

    async def _resolve(self, peer: Peer) -> None:
        try:
            infos = await trio.socket.getaddrinfo(
                peer.host, peer.port, socket.AF_INET, socket.SOCK_DGRAM
            )
        except OSError as exc:
            self.counters["resolve_errors"] += 1
            log.warning("cannot resolve gossip peer %s: %s", peer.configured, exc)
            return
        addr = infos[0][4]
        self.members.set_address(peer, (str(addr[0]), int(addr[1])))

    async def _resolve_all(self) -> None:
        for p in self.members.peers:
            await self._resolve(p)

    async def _ping_loop(self) -> None:
        while True:
            for p in self.members.due_pings():
                if p.addr is None or p.backoff:
                    await self._resolve(p)  # unresolved or unreachable: the name may have moved
                if p.addr is not None:
                    await self._send(p.addr, Msg.PING, [time.monotonic_ns(), self._hlc()])
            await trio.sleep(min(0.2, self.cfg.ping_interval))

    async def _flush_loop(self) -> None:
        while True:
            await trio.sleep(FLUSH_INTERVAL)
            if self.dirty and self.state.replicas is not None:
                self.dirty = False
                try:
                    await self.state.replicas.flush()
                except OSError as exc:
                    self.dirty = True
                    log.error("fsync of replica journals failed: %s", exc)

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        ov = self.state.overlay
        high = ov.highest()
        return {
            "peers": self.members.status(),
            "origins_highest": high,
            "gossip": {
                "listen": f"{self.bound[0]}:{self.bound[1]}" if self.bound else self.cfg.listen,
                "insecure": self.insecure,
                "boot": self.boot,
                "missing": {
                    o: sum(b - a + 1 for a, b in s.missing(high[o], limit=1 << 30))
                    for o, s in ov.origins.items()
                },
                "counters": dict(sorted(self.counters.items())),
                "inbox": sum(self.queued.values()),
                "push_queue": self._push_send.statistics().current_buffer_used,
                "serving": {
                    f"{a[0]}:{a[1]}": sum(map(len, p.values())) for a, p in self.serving.items()
                },
                "reassembly_bytes": self.reassembler.bytes,
                "reassembly_dropped": self.reassembler.dropped,
                "recent_records": len(self.recent),
            },
        }


def _in_flight(lo: int, hi: int, soft: float, hard: float, flowing: float, now: float) -> bool:
    """Is an asked-for range still expected? Small ranges (repairs of lost datagrams) simply
    expire; big ones (a catch-up) stay expected while their answers keep arriving."""
    if hi - lo + 1 < FLOW_RANGE:
        return soft > now
    return min(hard, max(soft, flowing)) > now


def _count(ranges: Iterable[Sequence[int]]) -> int:
    """Sequence numbers in inclusive ranges ``(lo, hi)``."""
    return sum(hi - lo + 1 for lo, hi in ranges)


def _subtract(gaps: list[tuple[int, int]], taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint inclusive ranges ``gaps`` minus the inclusive ranges ``taken``: one
    sweep over both (a round may hold a thousand single-record gaps)."""
    if not taken:
        return gaps
    taken = sorted(taken)
    out: list[tuple[int, int]] = []
    j = 0
    for lo, hi in gaps:
        while j < len(taken) and taken[j][1] < lo:
            j += 1
        k = j
        cur = lo
        while k < len(taken) and taken[k][0] <= hi and cur <= hi:
            tlo, thi = taken[k]
            if tlo > cur:
                out.append((cur, tlo - 1))
            cur = max(cur, thi + 1)
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return out
