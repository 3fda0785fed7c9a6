"""S3 sync between nodes through a real S3 HTTP server (moto), boto3 as in production, no
gossip: nodes converge on the same overlay and the same files; push makes no LIST; pull LISTs
only journals and manifests; faults (500, 503 SlowDown, dropped and cut connections) lose and
duplicate nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocli_fs.locals3 import client
from cocli_fs.s3sync import SyncPositions
from tests.fault_proxy import FaultProxy
from tests.s3nodes import Node, journal_records, node_config, plain_files
from tests.s3server import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)


class Cluster:
    """The nodes of one test, each in its own data folder under ``tmp``, all on one bucket;
    the fixture closes every node a test opened."""

    def __init__(self, tmp: Path, endpoint: str, bucket: str) -> None:
        self.tmp, self.endpoint, self.bucket = tmp, endpoint, bucket
        self.opened: list[Node] = []

    def open(self, folder: str, node: str, hub: bool = False, endpoint: str | None = None
             ) -> Node:
        n = Node(self.tmp / folder,
                 node_config(node, endpoint or self.endpoint, self.bucket, hub=hub))
        self.opened.append(n)
        return n

    def keys(self) -> set[str]:
        """Every key in the bucket, as a plain S3 client lists it."""
        listing = client(self.endpoint).list_objects_v2(Bucket=self.bucket)
        return {o["Key"] for o in listing["Contents"]}

    def abc(self, endpoint: str | None = None) -> tuple[Node, Node, Node]:
        """Two workers and a hub."""
        return (self.open("a", "pi-a", endpoint=endpoint),
                self.open("b", "pi-b", endpoint=endpoint),
                self.open("hub", "hub", hub=True, endpoint=endpoint))


@pytest.fixture
def cluster(
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811
    s3_bucket: str,  # noqa: F811
) -> Iterator[Cluster]:
    c = Cluster(tmp_path, s3_endpoint, s3_bucket)
    yield c
    for n in c.opened:
        n.close()


def _activity(a: Node, b: Node, hub: Node) -> None:
    for i in range(5):
        a.new_company(f"acme-{i}", f"Acme {i}")
        a.set(f"acme-{i}", email=f"info@acme{i}.test", phone="555-0100")
    a.write_file("companies/acme-0/notes/2026-11-25-call.md", "called, interested\n")
    b.new_company("bolt", "Bolt Inc")
    b.set("bolt", tags=["customer", "hot"])
    b.set("acme-1", email="sales@acme1.test")  # b edits a's company
    hub.set("acme-2", description="Reviewed by the hub.")
    hub.write_file("companies/bolt/meetings/kickoff.md", "kick-off on Monday\n")


def _sync_rounds(*nodes: Node, rounds: int = 1) -> None:
    """Each node syncs in turn, ``rounds`` times (two: everyone has everyone's changes)."""
    for _ in range(rounds):
        for n in nodes:
            n.sync()


def _converged(*nodes: Node) -> None:
    digests = {n.state.overlay.digest() for n in nodes}
    assert len(digests) == 1, digests
    files = [plain_files(n.root) for n in nodes]
    for f in files[1:]:
        assert f == files[0]
    for n in nodes:
        assert len(n.state.dirty) == 0
        # every record exactly once on disk (own journal + replicas): nothing duplicated
        recs = journal_records(n.root)
        assert len(recs) == len(set(recs))
        assert len(recs) == n.state.overlay.entries or len(set(recs)) >= n.state.overlay.entries


def test_two_nodes_and_hub_converge_through_s3_alone(
    cluster: Cluster,
) -> None:
    a, b, hub = cluster.abc()
    _activity(a, b, hub)
    for n in (a, b, hub):
        s = n.sync(pull=False)
        assert "ListObjectsV2" not in s.stats["requests"]  # push never lists
    a_up = a.sync(pull=False)
    assert a_up.uploaded == 0  # nothing new: nothing re-uploaded
    for n in (a, b, hub):
        s = n.sync(push=False)
        assert s.stats["requests"]["ListObjectsV2"] == 2  # wal/ and manifests/, one page each
        assert s.stats["requests"].get("PutObject", 0) == 0
        if n is b:  # a's 11 files arrive in one pack: fewer GETs than files
            assert s.downloaded >= 12
            # 2 manifests + a's pack + the hub's one file + 2 journals
            assert s.stats["requests"]["GetObject"] == 6
    _converged(a, b, hub)
    assert b.state.merged("companies/acme-1")[1]["email"] == "sales@acme1.test"
    assert a.state.merged("companies/bolt")[1]["tags"] == ["customer", "hot"]
    assert (b.root / "companies/acme-0/notes/2026-11-25-call.md").read_text() == (
        "called, interested\n"
    )
    # pulled files did not echo back as dirty, and replicas of a's journal exist on b
    assert b.sync(pull=False).uploaded == 0
    assert any(p.name.endswith("_pi-a.usv") for p in (b.root / "wal").iterdir())

    # The bucket mirrors the data folder for ordinary S3 tools; nodes upload only their own
    # journals (b and the hub never uploaded a replica of a's).
    keys = cluster.keys()
    assert "companies/acme-0/notes/2026-11-25-call.md" in keys
    assert "companies/bolt/_index.md" in keys
    assert {k.split("_", 1)[1] for k in keys if k.startswith("wal/")} == {
        "pi-a.usv",
        "pi-b.usv",
        "hub.usv",
    }

    # A second round: deletes, more updates; only new bytes are read back.
    a.delete_file("companies/acme-0/notes/2026-11-25-call.md")
    a.set("bolt", phone="555-0199")
    a.sync()
    before = b.store.stats.bytes_down
    s = b.sync()
    assert s.records_in == 1 and s.deleted_local == 1
    assert not (b.root / "companies/acme-0/notes/2026-11-25-call.md").exists()
    _sync_rounds(hub, a, b)
    _converged(a, b, hub)
    assert s.stats["bytes_down"] < 2000 and before >= 0  # ranged GETs: the new tail only


def test_faults_lose_and_duplicate_nothing(
    cluster: Cluster,
) -> None:
    with FaultProxy(cluster.endpoint, seed=42, error_rate=0.2) as proxy:
        a, b, hub = cluster.abc(proxy.endpoint)
        _activity(a, b, hub)
        for i in range(12):
            a.write_file(f"companies/acme-{i % 5}/notes/n{i}.md", f"note {i}\n" * 50)
        _sync_rounds(a, b, hub, rounds=2)
        _converged(a, b, hub)
        assert b.state.overlay.entries == a.state.overlay.entries > 0
    faults = Counter(proxy.counts)
    assert faults["500"] and faults["503"] and faults["drop"] and faults["cut"], faults


def test_positions_persist_across_restarts(
    cluster: Cluster,
) -> None:
    a, b, hub = cluster.abc()
    _activity(a, b, hub)
    a.sync()
    b.sync()
    b.close()
    pos = SyncPositions.load(cluster.tmp / "b" / ".cocli-fs" / "s3sync.json")
    assert {k.split("_", 1)[1] for k in pos.read} == {"pi-a.usv", "pi-a.tsv"}
    assert all(p["offset"] == p["size"] > 0 for p in pos.read.values())
    b2 = cluster.open("b", "pi-b")
    s = b2.sync()
    assert s.downloaded == 0 and s.records_in == 0 and s.uploaded == 0
    assert s.stats["requests"].get("GetObject", 0) == 0  # nothing changed: LIST only


def test_hub_compaction_reaches_nodes_through_s3(
    cluster: Cluster,
) -> None:
    from cocli_fs.compaction import compact_offline

    a, b, hub = cluster.abc()
    _activity(a, b, hub)
    _sync_rounds(a, b, hub, rounds=2)
    targets = sorted(a.state.overlay.by_target)
    before = {t: a.state.merged(t)[1] for t in targets}
    entries = a.state.overlay.entries
    hub.close()
    compact_offline(cluster.tmp / "hub", s3=True, create_after=0)
    hub = cluster.open("hub", "hub", hub=True)
    assert "wal/checkpoint.json" in hub.state.dirty
    s = hub.sync(pull=False)
    assert s.uploaded >= len(targets) and len(hub.state.dirty) == 0
    a.sync()
    assert a.state.checkpoint.generation == hub.state.checkpoint.generation > 0
    assert {t: a.state.merged(t)[1] for t in targets} == before  # no value went back
    assert a.state.overlay.entries < entries  # folded into the pulled base files
    for t in targets:
        assert (a.root / t / "_index.md").read_bytes() == (hub.root / t / "_index.md").read_bytes()


def test_a_marked_folder_pushes_its_files(
    cluster: Cluster,
) -> None:
    a, b, _hub = cluster.abc()
    folder = a.root / "companies" / "acme" / "enrichments"
    (folder / "deep").mkdir(parents=True)
    (folder / "site.json").write_text('{"ok": true}\n')
    (folder / "deep" / "people.json").write_text("[]\n")
    a.state.dirty.mark("companies/acme/enrichments")  # a whole folder moved in
    a.sync()
    b.sync()
    assert (b.root / "companies/acme/enrichments/deep/people.json").read_text() == "[]\n"
    assert plain_files(b.root) == plain_files(a.root)


def test_bootstrap_of_an_empty_node_lists_once(
    cluster: Cluster,
) -> None:
    raw = client(cluster.endpoint)  # objects put by plain S3 tools (cocli today): no manifest
    for i in range(3):  # names them
        raw.put_object(Bucket=cluster.bucket, Key=f"companies/old-{i}/_index.md",
                       Body=b"---\n---\n")
    a, b, hub = cluster.abc()
    _activity(a, b, hub)
    _sync_rounds(a, b, hub)
    c = cluster.open("c", "pi-c")
    s = c.sync(bootstrap=True)
    assert s.stats["requests"]["ListObjectsV2"] == 3  # wal/, manifests/, and the one full listing
    assert (c.root / "companies/old-2/_index.md").exists()
    assert c.state.overlay.digest() == hub.state.overlay.digest()  # the hub synced last
    a.sync()  # a now has b's and the hub's changes too
    assert {k: v for k, v in plain_files(c.root).items() if "old-" not in k} == plain_files(a.root)
    again = c.sync()
    assert again.downloaded == 0 and again.stats["requests"].get("GetObject", 0) == 0


def test_hub_retires_compacted_journals_from_the_bucket(
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cocli_fs import s3sync
    from cocli_fs.compaction import compact_offline

    a, b, hub = cluster.abc()
    _activity(a, b, hub)
    _sync_rounds(a, b, hub, rounds=2)
    before = {t: a.state.merged(t)[1] for t in a.state.overlay.by_target}
    hub.close()
    compact_offline(cluster.tmp / "hub", s3=True, create_after=0)
    hub = cluster.open("hub", "hub", hub=True)
    hub.sync(pull=False)  # base files and checkpoint up: now the journals may go
    hub.close()
    retired = compact_offline(cluster.tmp / "hub", s3=True, create_after=0)["retired"]
    assert len(retired) == 3
    hub = cluster.open("hub", "hub", hub=True)
    # Journals of today are never deleted remotely; pretend the day is over.
    monkeypatch.setattr(s3sync, "today", lambda: "29991231")
    s = hub.sync(pull=False)
    assert s.deleted_remote == 3
    keys = cluster.keys()
    assert {k for k in keys if k.startswith("wal/")} == {"wal/checkpoint.json"}
    a.sync()
    assert {t: a.state.merged(t)[1] for t in before} == before
    c = cluster.open("c", "pi-c")
    c.sync(bootstrap=True)  # a newcomer gets base files + checkpoint, no journals
    assert {t: c.state.merged(t)[1] for t in before} == before
