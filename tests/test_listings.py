"""Listing snapshots between the READDIRPLUS requests of one directory read (no mount)."""

from __future__ import annotations

from cocli_fs.listings import Listings


def _read(ls: Listings[str], ino: int, names: list[str], batch: int) -> list[str]:
    """What a reader sees reading folder ``ino`` ``batch`` entries per request."""
    out: list[str] = []
    offset = 0
    while True:
        got = ls.resume(ino, offset) if offset else None
        if got is None:
            gen, entries, i = ls.start(ino, list(names)), list(names), Listings.index_of(offset)
        else:
            gen, entries, i = got
        if i >= len(entries):
            ls.drop(ino, gen)
            return out
        for j in range(i, min(i + batch, len(entries))):
            out.append(entries[j])
            offset = Listings.offset(gen, j)


def test_a_read_in_many_requests_sees_every_name_once_and_drops_its_snapshot() -> None:
    ls: Listings[str] = Listings()
    names = [f"c{i}" for i in range(1000)]
    assert _read(ls, 5, names, 7) == names
    assert len(ls) == 0


def test_two_readers_of_one_folder_keep_their_own_snapshots() -> None:
    ls: Listings[str] = Listings()
    g1 = ls.start(5, ["a", "b", "c"])
    off1 = Listings.offset(g1, 0)  # reader 1 has seen "a"
    g2 = ls.start(5, ["b", "c"])  # the folder changed; reader 2 starts
    assert ls.resume(5, off1) == (g1, ["a", "b", "c"], 1)
    assert ls.resume(5, Listings.offset(g2, 0)) == (g2, ["b", "c"], 1)
    assert ls.resume(6, off1) is None  # offsets belong to their folder


def test_abandoned_reads_are_evicted_oldest_first() -> None:
    ls: Listings[str] = Listings(keep=3)
    gens = [ls.start(1, [str(i)]) for i in range(5)]
    assert ls.resume(1, Listings.offset(gens[0], 0)) is None
    assert ls.resume(1, Listings.offset(gens[4], 0)) is not None
    assert len(ls) == 3


def test_offsets_are_positive_and_never_zero() -> None:
    ls: Listings[str] = Listings()
    for _ in range(5):
        g = ls.start(1, ["x"])
        assert 0 < Listings.offset(g, 0) < 1 << 63
        assert 0 < Listings.offset(g, (1 << 32) - 2) < 1 << 63
