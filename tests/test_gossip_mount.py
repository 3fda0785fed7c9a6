"""End to end through FUSE: three real mounts gossiping over loopback UDP. A field written with the
shell on node A's mount is what ``cat`` shows on B's and C's mounts."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.gossip_nodes import Node, cluster, wait_until
from tests.mounting import Mount, sample_data

pytestmark = [pytest.mark.mount, pytest.mark.slow]


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[tuple[list[Mount], str]]:
    nodes: list[Node] = cluster(tmp_path)
    slugs: list[str] = []
    with ExitStack() as stack:
        ms = []
        for n in nodes:
            n.write_config()
            slugs = sample_data(n.data, 3)  # deterministic: the same companies on every node
            ms.append(stack.enter_context(Mount(n.data, n.root / "mnt", n.name, n.config)))
        yield ms, slugs[0]


def _cat(path: Path) -> str:
    out = subprocess.run(["cat", str(path)], capture_output=True, text=True, check=False)
    return out.stdout


def _ls(path: Path) -> list[str]:
    out = subprocess.run(["ls", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_field_written_on_a_is_seen_by_cat_on_b_and_c(mounts: tuple[list[Mount], str]) -> None:
    (a, b, c), slug = mounts
    field = f"companies/{slug}/_fields/gossip_probe"
    fields_dir = b.path(f"companies/{slug}/_fields")
    assert "gossip_probe" not in _ls(fields_dir)  # the kernel may now cache this listing
    subprocess.run(["sh", "-c", f"echo hello-from-a > {a.path(field)}"], check=True)
    for m in (b, c):
        wait_until(lambda m=m: _cat(m.path(field)).strip() == "hello-from-a", 10)
    # A field another node added shows in a listing taken before it came.
    wait_until(lambda: "gossip_probe" in _ls(fields_dir), 10)
    # An overwrite on C (a later write) wins everywhere, and the merged _index.md shows it.
    subprocess.run(["sh", "-c", f"echo second > {c.path(field)}"], check=True)
    for m in (a, b):
        wait_until(lambda m=m: _cat(m.path(field)).strip() == "second", 10)
    assert "gossip_probe: second" in _cat(b.path(f"companies/{slug}/_index.md"))
