"""The hybrid logical clock: monotonic, merges what it sees, reports skew, never decides LWW."""

from __future__ import annotations

import random
from pathlib import Path

from cocli_fs import record as rec
from cocli_fs.config import Config
from cocli_fs.hlc import HybridClock, physical_ms
from cocli_fs.state import DataDir, NodeState

T0 = 1_764_000_000_000  # ms


class FakeWall:
    """A wall clock the test sets (steps backwards included)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_now_is_strictly_monotonic_even_when_the_wall_clock_steps_back() -> None:
    wall = FakeWall(T0)
    c = HybridClock(wall=wall)
    stamps = []
    rng = random.Random(1)
    for _ in range(2000):
        wall.ms += rng.choice([0, 0, 1, 5, -3, -1000])  # NTP steps, frozen clocks
        stamps.append(c.now())
    assert stamps == sorted(set(stamps))
    # It follows the wall clock when the wall clock is ahead: physical part = wall time.
    wall.ms = physical_ms(stamps[-1]) + 10_000
    assert physical_ms(c.now()) == wall.ms


def test_a_write_after_seeing_a_value_orders_after_it_even_with_a_clock_behind() -> None:
    ahead = HybridClock(wall=FakeWall(T0 + 30_000))  # 30 s fast
    behind = HybridClock(wall=FakeWall(T0))
    seen = ahead.now()
    behind.update(seen, peer="ahead")
    mine = behind.now()
    assert mine > seen
    assert physical_ms(mine) == physical_ms(seen)  # counter, not a fake wall time
    assert behind.skewed_peers() == {}  # 30 s is within the default 60 s bound


def test_skew_over_the_bound_is_reported_but_still_merged() -> None:
    c = HybridClock(max_skew_ms=1_000, wall=FakeWall(T0))
    c.update((T0 + 500) << rec.HLC_LOGICAL_BITS, peer="ok-peer")
    c.update((T0 + 120_000) << rec.HLC_LOGICAL_BITS, peer="fast-peer")
    c.update((T0 + 121_000) << rec.HLC_LOGICAL_BITS, peer="fast-peer")
    assert c.skewed_peers() == {"fast-peer": 121_000}
    assert c.peers["fast-peer"].over_bound == 2 and c.peers["ok-peer"].over_bound == 0
    assert c.now() > (T0 + 121_000) << rec.HLC_LOGICAL_BITS


def test_monotonic_across_restarts_from_the_journal(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    st = NodeState(data, Config(node="n1"))
    st.clock.wall = FakeWall(T0 + 3_600_000)
    st.load()
    before = st.write_fields_sync("companies/acme", {"f": "written an hour ahead"})
    st.close()
    # Restart with the wall clock an hour behind: the floor comes from the journal.
    st2 = NodeState(data, Config(node="n1"))
    st2.clock.wall = FakeWall(T0)
    st2.load()
    assert st2.clock.last >= before[-1].hlc
    after = st2.write_fields_sync("companies/acme", {"f": "after restart"})
    assert after[0].hlc > before[-1].hlc
    assert st2.overlay.winner("companies/acme", "f") == after[0]
    st2.close()


def test_a_local_write_after_receiving_orders_after_the_remote_value(tmp_path: Path) -> None:
    st = NodeState(DataDir(tmp_path), Config(node="laptop"))
    st.clock.wall = FakeWall(T0)  # this laptop's clock is 10 minutes behind the peer
    st.load()
    remote = rec.make(hlc=(T0 + 600_000) << rec.HLC_LOGICAL_BITS, node_id="pi-1", seq=1,
                      target="companies/acme", field="email", value="old@acme.example")
    st.receive([remote], peer="pi-1")
    (mine,) = st.write_fields_sync("companies/acme", {"email": "new@acme.example"})
    assert mine.hlc > remote.hlc
    assert st.overlay.winner("companies/acme", "email") == mine
    st.close()


def test_the_decision_never_depends_on_the_receivers_clock(tmp_path: Path) -> None:
    """Three receivers with wall clocks hours apart take the same records in different orders:
    they end with the same winners and the same digest."""
    rng = random.Random(7)
    records = []
    for node in ("a", "b", "c"):
        for seq in range(1, 31):
            hlc = (T0 + rng.randrange(0, 50)) << rec.HLC_LOGICAL_BITS | rng.randrange(3)
            records.append(rec.make(hlc=hlc, node_id=node, seq=seq, target=f"companies/{seq % 4}",
                                    field=rng.choice(["f", "g"]), value=rng.random(),
                                    tombstone=rng.random() < 0.1))
    digests = set()
    winners = []
    for i, skew in enumerate((-7_200_000, 0, 7_200_000)):
        st = NodeState(DataDir(tmp_path / f"r{i}"), Config(node=f"r{i}"))
        (tmp_path / f"r{i}").mkdir()
        st.clock.wall = FakeWall(T0 + skew)
        st.load()
        batch = records[:]
        rng.shuffle(batch)
        for j in range(0, len(batch), 7):
            st.receive(batch[j : j + 7])
        digests.add(st.status()["digest"])
        winners.append({t: dict(f) for t, f in st.overlay.by_target.items()})
        st.close()
    assert len(digests) == 1
    assert winners[0] == winners[1] == winners[2]


def test_status_reports_skewed_peers(tmp_path: Path) -> None:
    st = NodeState(DataDir(tmp_path), Config(node="n1"))
    st.clock.wall = FakeWall(T0)
    st.load()
    far = rec.make(hlc=(T0 + 3_600_000) << rec.HLC_LOGICAL_BITS, node_id="pi-9", seq=1,
                   target="companies/acme", field="f", value="from the future")
    st.receive([far], peer="pi-9")
    status = st.status()
    assert status["skewed_peers"] == {"pi-9": 3_600_000}
    assert status["clock_skew_ms"]["pi-9"] == 3_600_000
    st.close()
