"""Who is out there: the static peer list with alive / suspect / dead, last seen and clock skew.

Pure bookkeeping (no sockets, times passed in), so it is tested without a network. A peer is
*alive* while we heard from it within ``suspect_after``, *suspect* until ``dead_after``, then
*dead*; ``unknown`` until we first hear from it. Dead and unknown peers are pinged with
exponential backoff (never forgotten: a Pi back after a day rejoins on its next ping).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .config import parse_address

Address = tuple[str, int]

BACKOFF_MAX = 30.0


class PeerState(StrEnum):
    UNKNOWN = "unknown"
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass
class Peer:
    configured: str  # "host:port" as written in the config
    host: str
    port: int
    addr: Address | None = None  # resolved; None until resolution succeeds
    node: str | None = None  # learned from its datagrams
    last_seen: float | None = None  # monotonic
    last_seen_wall: float | None = None  # time.time(), for status
    rtt_ms: float | None = None
    skew_ms: float | None = None  # its wall clock minus ours, corrected by half the round trip
    next_ping: float = 0.0
    backoff: float = 0.0
    pings: int = 0
    datagrams_in: int = 0

    def state(self, now: float, suspect_after: float, dead_after: float) -> PeerState:
        if self.last_seen is None:
            return PeerState.UNKNOWN
        quiet = now - self.last_seen
        if quiet < suspect_after:
            return PeerState.ALIVE
        if quiet < dead_after:
            return PeerState.SUSPECT
        return PeerState.DEAD


class Membership:
    def __init__(
        self,
        peers: list[str],
        ping_interval: float = 1.0,
        suspect_after: float = 3.0,
        dead_after: float = 10.0,
    ) -> None:
        self.peers: list[Peer] = []
        for p in peers:
            host, port = parse_address(p, "[gossip] peers")
            self.peers.append(Peer(p, host, port))
        self.ping_interval = ping_interval
        self.suspect_after = suspect_after
        self.dead_after = dead_after
        self._by_addr: dict[Address, Peer] = {}

    def set_address(self, peer: Peer, addr: Address | None) -> None:
        if peer.addr is not None:
            self._by_addr.pop(peer.addr, None)
        peer.addr = addr
        if addr is not None:
            self._by_addr[addr] = peer

    def by_addr(self, addr: Address) -> Peer | None:
        return self._by_addr.get(addr)

    def by_node(self, node: str) -> Peer | None:
        """A peer whose datagrams come from another address than the configured one (a
        multi-homed host) is still recognised by the name it gave in earlier answers."""
        for p in self.peers:
            if p.node == node:
                return p
        return None

    def state(self, peer: Peer, now: float | None = None) -> PeerState:
        now = time.monotonic() if now is None else now
        return peer.state(now, self.suspect_after, self.dead_after)

    def heard(self, peer: Peer, node: str, now: float | None = None) -> None:
        """Any authenticated datagram from the peer's address proves it is alive."""
        now = time.monotonic() if now is None else now
        peer.last_seen = now
        peer.last_seen_wall = time.time()
        peer.node = node
        peer.datagrams_in += 1
        if peer.backoff:
            peer.backoff = 0.0
            peer.next_ping = now  # back from the dead: resume normal pings at once

    def acked(self, peer: Peer, sent_ns: int, peer_wall_ms: int, now_ns: int | None = None) -> None:
        """An ACK to our ping: round trip and skew (the peer read its clock half-way)."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        rtt = max(0, now_ns - sent_ns) / 1e6
        peer.rtt_ms = rtt
        local_mid_ms = time.time() * 1000 - rtt / 2
        peer.skew_ms = round(peer_wall_ms - local_mid_ms, 1)

    def due_pings(self, now: float | None = None) -> list[Peer]:
        """Peers to ping now; schedules their next ping (backoff for the unreachable)."""
        now = time.monotonic() if now is None else now
        due = []
        for p in self.peers:
            if now < p.next_ping:
                continue
            st = self.state(p, now)
            if st in (PeerState.DEAD, PeerState.UNKNOWN) and p.pings > 3:
                p.backoff = min(BACKOFF_MAX, max(self.ping_interval, p.backoff * 2))
                p.next_ping = now + p.backoff
            else:
                p.next_ping = now + self.ping_interval
            p.pings += 1
            due.append(p)
        return due

    def reachable(self, now: float | None = None) -> list[Peer]:
        """Peers worth pushing to: all but the dead (anti-entropy catches those up later)."""
        now = time.monotonic() if now is None else now
        return [
            p for p in self.peers if p.addr is not None and self.state(p, now) is not PeerState.DEAD
        ]

    def alive(self, now: float | None = None) -> list[Peer]:
        now = time.monotonic() if now is None else now
        return [
            p for p in self.peers if p.addr is not None and self.state(p, now) is PeerState.ALIVE
        ]

    def status(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.monotonic() if now is None else now
        out = []
        for p in self.peers:
            out.append(
                {
                    "address": p.configured,
                    "resolved": f"{p.addr[0]}:{p.addr[1]}" if p.addr else None,
                    "node": p.node,
                    "state": self.state(p, now).value,
                    "last_seen": round(now - p.last_seen, 3) if p.last_seen is not None else None,
                    "last_seen_at": p.last_seen_wall,
                    "rtt_ms": p.rtt_ms,
                    "skew_ms": p.skew_ms,
                    "datagrams_in": p.datagrams_in,
                    "next_ping_in": round(max(0.0, p.next_ping - now), 3),
                }
            )
        return out
