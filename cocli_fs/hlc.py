"""Hybrid logical clock (Kulkarni et al., 2014), packed into one 64-bit integer.

``value = physical_ms << 16 | logical``. Comparing two values compares physical time first and
the counter second, so a write made after *seeing* a value (``update`` merged it) always orders
after it, even when the writer's wall clock is behind.

The clock only *stamps* records; last-write-wins compares the stamps carried in the records and
never consults the receiving node's clock, so every node decides the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .record import HLC_LOGICAL_BITS

log = logging.getLogger(__name__)

LOGICAL_MASK = (1 << HLC_LOGICAL_BITS) - 1


def physical_ms(value: int) -> int:
    return value >> HLC_LOGICAL_BITS


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class SkewReport:
    """What the clock saw of one peer: the latest skew (peer's stamp minus our wall clock, ms)."""

    skew_ms: int = 0
    over_bound: int = 0  # how many stamps were ahead by more than the bound


@dataclass
class HybridClock:
    """A monotonic HLC. ``floor`` is the highest stamp seen before a restart (recovered from the
    journals), so the clock never runs backwards across restarts or wall-clock steps."""

    floor: int = 0
    max_skew_ms: int = 60_000
    wall: Callable[[], int] = wall_ms
    peers: dict[str, SkewReport] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._last = self.floor

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        """A new stamp, strictly greater than every stamp issued or seen."""
        wall = self.wall() << HLC_LOGICAL_BITS
        nxt = wall if wall > self._last else self._last + 1
        self._last = nxt
        return nxt

    def update(self, remote: int, peer: str | None = None) -> None:
        """Merge a stamp received from ``peer`` so our next stamp orders after it.

        A stamp far ahead of our wall clock is still merged (otherwise a later local edit could
        lose to the value it replaced), but it is reported: it usually means a peer's clock is
        wrong, and every stamp the cluster issues afterwards inherits that error.
        """
        skew = physical_ms(remote) - self.wall()
        if peer is not None:
            rep = self.peers.setdefault(peer, SkewReport())
            rep.skew_ms = skew
            if skew > self.max_skew_ms:
                rep.over_bound += 1
                if rep.over_bound == 1 or rep.over_bound % 1000 == 0:
                    log.warning(
                        "peer %s is %.1f s ahead of our clock (bound %.1f s, seen %d times)",
                        peer,
                        skew / 1000,
                        self.max_skew_ms / 1000,
                        rep.over_bound,
                    )
        if remote > self._last:
            self._last = remote

    def skewed_peers(self) -> dict[str, int]:
        """Peers whose last stamp was ahead of us by more than the bound -> skew in ms."""
        return {p: r.skew_ms for p, r in self.peers.items() if r.skew_ms > self.max_skew_ms}
