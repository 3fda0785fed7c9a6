"""Kill the compaction at every file operation (temp writes, renames, the checkpoint, journal
retirement), re-run it, and compare with an uninterrupted run: same files, same checkpoint, no
value ever shown older than before, and every changed file still marked for the S3 push."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cocli_fs import compaction as comp
from cocli_fs.dirty import DirtySet
from cocli_fs.journal import parse_journal
from cocli_fs.record import Record

from .test_compaction import (
    DAY_MS,
    cocli_line,
    expected_view,
    make_tree,
    mk,
    snapshot_tree,
    view,
    write_records,
)

TARGETS = [f"companies/c{i}" for i in range(7)]
BATCH = 3  # small batches, so kills land between batches too

RUN = f"""
import sys
from pathlib import Path
from cocli_fs import compaction as comp
from cocli_fs.dirty import DirtySet
root = Path(sys.argv[1])
ds = DirtySet(root / ".cocli-fs")
res = comp.compact(root, mark=comp._marker(ds), batch={BATCH})
comp.retire_offline(root, res.checkpoint, s3=False)
"""


def _workload(root: Path) -> list[Record]:
    make_tree(root, TARGETS)
    seq = {"a": 0, "b": 0}

    def add(node: str, ms: int, target: str, field: str, value: Any) -> Record:
        seq[node] += 1
        return mk(node, seq[node], ms, target, field, value)

    out = []
    for i, t in enumerate(TARGETS):
        out.append(add("a", 10 + i, t, "email", f"a{i}@x"))
        out.append(add("b", 10 + i, t, "email", f"b{i}@x"))  # same clock: node b wins
        if i % 2:
            out.append(add("b", 50 + i, t, "tags", ["hot", f"t{i}"]))
        if i % 3 == 0:
            out.append(add("a", 60 + i, t, "phone", None))  # tombstone
    write_records(root, out)
    with open(root / "wal" / "20251126_cocli-1.usv", "ab") as f:
        f.write(cocli_line(DAY_MS + 99, "cocli-1", TARGETS[0], "rating", "4.9"))
    return out


@pytest.mark.slow
def test_kill_at_every_file_operation_then_rerun(tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    records = _workload(pristine)
    cocli = parse_journal((pristine / "wal" / "20251126_cocli-1.usv").read_bytes()).records
    want = expected_view(pristine, [*records, *cocli], TARGETS)

    ref = tmp_path / "ref"
    shutil.copytree(pristine, ref)
    ops_before = comp._ops
    ds = DirtySet(ref / ".cocli-fs")
    res = comp.compact(ref, mark=comp._marker(ds), batch=BATCH)
    ds.close()
    retired = comp.retire_offline(ref, res.checkpoint, s3=False)
    total_ops = comp._ops - ops_before
    assert res.written.files >= len(TARGETS) and len(retired) == 3
    assert total_ops >= 2 * res.written.files + 1 + len(retired)
    reference = snapshot_tree(ref)
    before = snapshot_tree(pristine)
    changed = {p for p, data in reference.items() if before.get(p) != data}
    assert view(ref, TARGETS) == want

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for k in range(1, total_ops + 1):
        work = tmp_path / f"k{k}"
        shutil.copytree(pristine, work)
        env[comp.CRASH_ENV] = str(k)
        p = subprocess.run(
            [sys.executable, "-c", RUN, str(work)], env=env, capture_output=True, timeout=60
        )
        assert p.returncode == 77, (k, p.stderr.decode())
        # killed: what a reader sees is already exactly the final state, never older
        assert view(work, TARGETS) == want, k
        ds = DirtySet(work / ".cocli-fs")
        res2 = comp.compact(work, mark=comp._marker(ds), batch=BATCH)
        comp.retire_offline(work, res2.checkpoint, s3=False)
        marked = {e.path for e in ds.snapshot()}
        ds.close()
        assert snapshot_tree(work) == reference, k
        assert changed <= marked, (k, changed - marked)
        shutil.rmtree(work)
