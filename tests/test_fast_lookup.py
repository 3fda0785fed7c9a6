"""The Python side of fast lookups (pyfuse3 patch change 9), without a mount: which entity
folders are named to the patch, and when ``fast_entry`` declines. The mount's own test is
``test_mount_read.test_plain_entity_files_are_looked_up_in_the_patch_while_they_are_plain``."""

from __future__ import annotations

import os
from pathlib import Path

from cocli_fs.config import Config, MountConfig, parse
from cocli_fs.fs import Operations
from cocli_fs.inodes import Node
from cocli_fs.routing import Route, Router
from cocli_fs.state import DataDir, NodeState
from tests.mounting import sample_data, write_peer_records


def _ops(tmp_path: Path, routes: list[dict[str, str]] | None = None,
         overlay: str | None = None, on: bool = True) -> tuple[Operations, list[str]]:
    slugs = sorted(sample_data(tmp_path, 3))
    if overlay is not None:
        write_peer_records(tmp_path, {f"companies/{slugs[overlay == 'second']}": {"x": "1"}})
    state = NodeState(DataDir(tmp_path), Config(node="a", mount=MountConfig(fast_lookup=on)))
    state.load()
    return Operations(state, Router(["companies", "people"], routes)), slugs


def _entity(ops: Operations, slug: str) -> Node:
    kind = ops.table.child(ops.table.root, "companies")
    node = ops.table.child(kind, slug)
    ops._entity_seen(node)
    return node


def test_entity_folders_without_overlay_are_named_with_their_store_path(tmp_path: Path
                                                                        ) -> None:
    ops, slugs = _ops(tmp_path, overlay="second")
    assert ops.fast_names == {b"_index.md", b"tags.lst"}
    plain, viewed = _entity(ops, slugs[0]), _entity(ops, slugs[1])
    token = ops.fast_dirs[plain.ino]
    assert token is plain.parts
    path = ops.fast_root + "/".join(token).encode() + b"/_index.md"
    assert os.path.samefile(path, tmp_path / "companies" / slugs[0] / "_index.md")
    assert viewed.ino not in ops.fast_dirs  # its _index.md is a view

    ino = ops.fast_entry(plain.ino, b"_index.md", token)
    node = ops.table.get(ino)
    assert node is not None and node.parts == (*plain.parts, "_index.md")
    assert node.lookups == 1 and ops.fast_lookups == 1
    assert ops.fast_entry(plain.ino, b"_index.md", token) == ino  # the same node, counted
    assert node.lookups == 2


def test_fast_entry_declines_moved_forgotten_and_overlaid_folders(tmp_path: Path) -> None:
    ops, slugs = _ops(tmp_path)
    a, b, c = (_entity(ops, s) for s in slugs)
    kind = ops.table.child(ops.table.root, "companies")

    token = ops.fast_dirs[a.ino]
    ops.table.move(a, kind, "moved")  # its named path is another entity's now
    assert ops.fast_entry(a.ino, b"_index.md", token) == 0
    assert a.ino not in ops.fast_dirs

    token = ops.fast_dirs[b.ino]
    ops.table.forget(b.ino, 0)  # no lookups: dropped
    assert ops.fast_entry(b.ino, b"_index.md", token) == 0

    token = ops.fast_dirs[c.ino]
    write_peer_records(tmp_path, {f"companies/{slugs[2]}": {"x": "1"}})
    ops.state.load()
    assert ops.views.has_overlay(f"companies/{slugs[2]}")
    assert ops.fast_entry(c.ino, b"_index.md", token) == 0
    assert ops.fast_lookups == 0


async def test_forget_drops_the_folders_name(tmp_path: Path) -> None:
    ops, slugs = _ops(tmp_path)
    a = _entity(ops, slugs[0])
    a.lookups = 1
    await ops.forget([(a.ino, 1)])
    assert a.ino not in ops.fast_dirs


def test_no_fast_lookups_when_a_rule_looks_at_slugs(tmp_path: Path) -> None:
    ops, _slugs = _ops(tmp_path, routes=[{"pattern": "companies/acme/**", "route": "readonly"}])
    assert ops.fast_names == frozenset()
    router = Router(["companies", "people"])
    assert router.same_in_every_entity("_index.md") is Route.INDEX
    assert router.same_in_every_entity("tags.lst") is Route.TAGS
    tilde = Router(["companies"], [{"pattern": "companies/*/_index.md", "route": "readonly"}])
    assert tilde.same_in_every_entity("_index.md") is Route.READONLY


def test_fast_lookup_off_names_nothing(tmp_path: Path) -> None:
    assert parse({"mount": {"fast_lookup": False}}).mount.fast_lookup is False
    ops, slugs = _ops(tmp_path, on=False)
    assert ops.fast_names == frozenset()
    _entity(ops, slugs[0])
    assert ops.fast_dirs == {}
