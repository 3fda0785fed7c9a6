"""The overlay index: last-write-wins state of every ``(target, field)`` not yet in the base files.

Merging is a join in a semilattice: for each key the record with the greatest
``(hlc, node_id, seq|pos)`` wins, tombstones included. ``max`` is commutative, associative and
idempotent, so any order, duplication or re-delivery of the same records gives the same state,
and the same ``digest`` on every node.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from . import record as record_mod
from .record import Record


# Outcome of applying one record.
class Applied(IntEnum):
    DUPLICATE = 0  # already had this (origin, seq): nothing to store or forward
    LOST = 1  # new to us, but an existing record wins: store it, nothing visible changes
    WON = 2  # the new winner for its field: caches of that entity must be invalidated


@dataclass
class OriginSeqs:
    """Which sequence numbers of one origin we hold: all up to ``contiguous``, plus ``above``."""

    contiguous: int = 0
    above: set[int] = field(default_factory=set)

    def add(self, seq: int) -> bool:
        """Mark ``seq`` as held; False when it already was."""
        if seq <= self.contiguous or seq in self.above:
            return False
        if seq == self.contiguous + 1:
            self.contiguous = seq
            above = self.above
            while self.contiguous + 1 in above:
                self.contiguous += 1
                above.discard(self.contiguous)
        else:
            self.above.add(seq)
        return True

    def has(self, seq: int) -> bool:
        return seq <= self.contiguous or seq in self.above

    def missing(self, upto: int, limit: int = 10_000) -> list[tuple[int, int]]:
        """Gaps below ``upto`` as inclusive ranges, at most ``limit`` sequence numbers in all."""
        gaps: list[tuple[int, int]] = []
        start = self.contiguous + 1
        budget = limit
        for s in [*sorted(x for x in self.above if x <= upto), upto + 1]:
            if s > start:
                end = min(s - 1, start + budget - 1)
                gaps.append((start, end))
                budget -= end - start + 1
                if budget <= 0:
                    break
            start = s + 1
        return gaps


# A fresh BLAKE2b-64 state to copy: copying is cheaper than parsing the constructor's keyword
# arguments again for each of a million entries at replay.
_BLAKE2B_64 = hashlib.blake2b(digest_size=8)
_from_bytes = int.from_bytes


def _entry_hash(r: Record) -> int:
    """A stable 64-bit hash of a winner (the same on every node and every Python: not hash())."""
    h = _BLAKE2B_64.copy()
    h.update(f"{r.target}\x1f{r.field}\x1f{r.hlc}\x1f{r.node_id}\x1f{r.kind}\x1f{r.value}".encode())
    return _from_bytes(h.digest(), "big")


def _wins(r: Record, cur: Record) -> int:
    """1 if ``r`` beats ``cur``, 0 if it is the same record, -1 if it loses.

    The order is ``Record.order`` — (hlc, node_id, seq or position) — compared field by field
    without building tuples (this runs for every replayed record). Two *different* records with
    the same order can only be cocli records (no seq) that share timestamp, node and position,
    e.g. copies from two files; their content breaks the tie, so the winner never depends on
    which arrived first.
    """
    if r.hlc != cur.hlc:
        return 1 if r.hlc > cur.hlc else -1
    if r.node_id != cur.node_id:
        return 1 if r.node_id > cur.node_id else -1
    a, b = r.seq or r.pos, cur.seq or cur.pos
    if a != b:
        return 1 if a > b else -1
    if r == cur:
        return 0
    def key(x: Record) -> tuple[str, str, str, str, str, int, int]:
        return (x.kind, x.value, x.timestamp, x.campaign_name, x.environment, x.seq, x.pos)

    return 1 if key(r) > key(cur) else -1


_intern = sys.intern
# The optional C extension's fast path for apply_all (None when it was not built).
_apply_fresh: Callable[..., tuple[int, int]] | None = getattr(
    getattr(record_mod, "_fastjournal", None), "apply_fresh", None
)


class Overlay:
    """In-memory LWW map ``target -> field -> winning Record``."""

    def __init__(self) -> None:
        self.by_target: dict[str, dict[str, Record]] = {}
        self.origins: dict[str, OriginSeqs] = {}
        # XOR of the winners' entry hashes; None after a bulk load until digest() is first asked
        # for (replay does not pay for a hash per record that may never be looked at).
        self._digest: int | None = 0
        self.entries = 0
        self.applied = 0
        self.duplicates = 0
        # Versions already folded into the base files (the compaction checkpoint's ``fields``):
        # a record at or below one of them is old news and loses, even with no entry here.
        self.compacted: Mapping[str, Mapping[str, tuple[int, str, int]]] = {}

    def apply(self, r: Record) -> Applied:
        """Merge one record (from our journal, a peer, a replica or S3)."""
        if r.seq:
            seqs = self.origins.get(r.node_id)
            if seqs is None:
                seqs = self.origins[_intern(r.node_id)] = OriginSeqs()
            if r.seq == seqs.contiguous + 1 and not seqs.above:
                seqs.contiguous = r.seq  # the common case, inlined: the next in line
            elif not seqs.add(r.seq):
                self.duplicates += 1
                return Applied.DUPLICATE
        self.applied += 1
        fields = self.by_target.get(r.target)
        cur = fields.get(r.field) if fields is not None else None
        if cur is None:
            if self.compacted and self._below_compacted(r):
                return Applied.LOST
            if fields is None:
                fields = self.by_target[_intern(r.target)] = {}
            fields[_intern(r.field)] = r
            self.entries += 1
            if self._digest is not None:
                self._digest ^= _entry_hash(r)
            return Applied.WON
        assert fields is not None  # cur came from it
        w = _wins(r, cur)
        if w > 0:
            fields[r.field] = r
            if self._digest is not None:
                self._digest ^= _entry_hash(cur) ^ _entry_hash(r)
            return Applied.WON
        if w == 0:
            # The same record again (cocli records carry no seq to de-duplicate by).
            self.duplicates += 1
            return Applied.DUPLICATE
        return Applied.LOST

    def apply_all(self, records: Iterable[Record]) -> None:
        """``apply`` every record, outcomes dropped: the start-up replay path. The same steps
        as ``apply`` in one loop with everything in locals (a million calls' worth of method
        and attribute overhead is a sizeable part of replay time). The digest is not kept up
        to date here: ``digest()`` recomputes it once from the winners when next asked."""
        if _apply_fresh is not None and not self.compacted and isinstance(records, list):
            # The C extension stores new keys whose seq is next in line (nearly every record
            # at start-up) and hands every other record to ``apply``, which counts its own.
            if records:
                self._digest = None  # winners may change: recomputed on demand
                applied, entries = _apply_fresh(records, self.origins, self.by_target,
                                                self.apply)
                self.applied += applied
                self.entries += entries
            return
        origins = self.origins
        by_target = self.by_target
        compacted = self.compacted
        intern = _intern
        applied = duplicates = entries = 0
        try:
            for r in records:
                seq = r.seq
                if seq:
                    seqs = origins.get(r.node_id)
                    if seqs is None:
                        seqs = origins[intern(r.node_id)] = OriginSeqs()
                    if seq == seqs.contiguous + 1 and not seqs.above:
                        seqs.contiguous = seq
                    elif not seqs.add(seq):
                        duplicates += 1
                        continue
                applied += 1
                fields = by_target.get(r.target)
                cur = fields.get(r.field) if fields is not None else None
                if cur is None:
                    if compacted and self._below_compacted(r):
                        continue
                    if fields is None:
                        fields = by_target[r.target] = {}
                    fields[intern(r.field)] = r
                    entries += 1
                    continue
                w = _wins(r, cur)
                if w > 0:
                    fields[r.field] = r  # type: ignore[index]  # cur came from it
                elif w == 0:
                    duplicates += 1
        finally:
            if applied:
                self._digest = None  # winners may have changed: recomputed on demand
            self.applied += applied
            self.duplicates += duplicates
            self.entries += entries

    def _below_compacted(self, r: Record) -> bool:
        """True when the base files already hold this field at ``r``'s version or newer."""
        floor = self.compacted.get(r.target)
        v = floor.get(r.field) if floor is not None else None
        return v is not None and r.order <= v

    def get(self, target: str) -> dict[str, Record]:
        return self.by_target.get(target, {})

    def winner(self, target: str, field_name: str) -> Record | None:
        return self.by_target.get(target, {}).get(field_name)

    def drop(self, target: str, field_name: str, upto: tuple[int, str, int]) -> bool:
        """Forget the entry for a field if its winner orders at or below ``upto`` (it is now
        in the base file). A newer winner stays."""
        fields = self.by_target.get(target)
        cur = fields.get(field_name) if fields else None
        if cur is None or cur.order > upto:
            return False
        assert fields is not None
        del fields[field_name]
        if not fields:
            del self.by_target[target]
        self.entries -= 1
        if self._digest is not None:
            self._digest ^= _entry_hash(cur)
        return True

    def contiguous(self) -> dict[str, int]:
        """Per origin: highest sequence number up to which we hold every record."""
        return {node: s.contiguous for node, s in self.origins.items()}

    def highest(self) -> dict[str, int]:
        """Per origin: the highest sequence number we hold (gaps possible below it)."""
        return {n: max([s.contiguous, *s.above]) for n, s in self.origins.items()}

    def digest(self) -> str:
        """Order-independent fingerprint of the whole state (XOR of the winners' hashes)."""
        d = self._digest
        if d is None:
            # After a bulk load: one pass over the winners, then incremental again.
            d = 0
            entry_hash = _entry_hash
            for fields in self.by_target.values():
                for r in fields.values():
                    d ^= entry_hash(r)
            self._digest = d
        return f"{d:016x}-{self.entries}"
