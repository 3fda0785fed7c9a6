"""Test helpers: nodes with a data folder and an [s3] config, producing activity the way the
mount does (journal records through NodeState, plain files + the dirty set)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cocli_fs import config as config_mod
from cocli_fs.config import Config
from cocli_fs.journal import parse_journal, parse_journal_name
from cocli_fs.s3sync import Summary, Syncer
from cocli_fs.state import PRIVATE_DIR, DataDir, NodeState
from cocli_fs.storage import from_config


def node_config(
    node: str, endpoint: str, bucket: str, hub: bool = False, prefix: str = ""
) -> Config:
    return config_mod.parse(
        {
            "node": node,
            "gossip": {"enabled": False},
            "s3": {"bucket": bucket, "endpoint_url": endpoint, "prefix": prefix, "interval": "1s"},
            "hub": {"enabled": hub},
        }
    )


def write_config(path: Path, node: str, endpoint: str, bucket: str, hub: bool = False) -> Path:
    path.write_text(
        f'node = "{node}"\n[gossip]\nenabled = false\n'
        f'[s3]\nbucket = "{bucket}"\nendpoint_url = "{endpoint}"\ninterval = "1s"\n'
        f"[hub]\nenabled = {'true' if hub else 'false'}\n"
    )
    return path


class Node:
    def __init__(self, root: Path, cfg: Config) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.cfg = cfg
        self.state = NodeState(DataDir(root), cfg)
        self.state.load()
        self.store: Any = None
        self.closed = False

    def write_file(self, path: str, text: str) -> None:
        """What the mount does for a plain file: write it, mark it dirty."""
        full = self.root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text)
        self.state.dirty.mark(path)

    def delete_file(self, path: str) -> None:
        (self.root / path).unlink()
        self.state.dirty.mark_deleted(path)

    def new_company(self, slug: str, name: str) -> None:
        self.write_file(f"companies/{slug}/_index.md", f"---\nname: {name}\n---\n")
        self.write_file(f"companies/{slug}/tags.lst", "prospect\n")

    def set(self, slug: str, **fields: Any) -> None:
        self.state.write_fields_sync(f"companies/{slug}", fields)

    def sync(self, **kw: Any) -> Summary:
        if self.store is None:
            assert self.cfg.s3 is not None
            self.store = from_config(self.cfg.s3)
        return Syncer(self.state, self.store, bar=False).run(**kw)

    def close(self) -> None:
        """Idempotent: a test may close a node early (to compact its folder offline)."""
        if not self.closed:
            self.closed = True
            self.state.close()


def plain_files(root: Path) -> dict[str, bytes]:
    """Every plain file of a data folder (not journals, not private state)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts[:1] in ((PRIVATE_DIR,), ("wal",)):
            dirnames[:] = []
            continue
        for name in filenames:
            out[(rel / name).as_posix()] = (Path(dirpath) / name).read_bytes()
    return out


def journal_records(root: Path) -> list[tuple[str, int]]:
    """(origin, seq) of every record in every journal file of the node, duplicates kept."""
    out = []
    wal = root / "wal"
    for name in sorted(os.listdir(wal)):
        if parse_journal_name(name):
            out += [(r.node_id, r.seq) for r in parse_journal((wal / name).read_bytes()).records]
    return out
