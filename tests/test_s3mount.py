"""End to end through FUSE with [s3] configured and gossip off: what a user writes on node A's
mount reaches node B's mount through S3 alone — ``cocli-fs sync`` on A asks A's running mount
(control socket), B's mount syncs periodically and shows the pulled entity, note and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gossip_nodes import wait_until
from tests.mounting import Mount, sample_data
from tests.s3nodes import write_config
from tests.s3server import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.mount, pytest.mark.slow]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cocli_fs.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_writes_on_a_mount_reach_another_mount_through_s3(
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811
    s3_bucket: str,  # noqa: F811
) -> None:
    data_a, data_b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    slug = sample_data(data_a, 2)[0]
    sample_data(data_b, 2)
    cfg_a = write_config(tmp_path / "a.toml", "a", s3_endpoint, s3_bucket)
    cfg_b = write_config(tmp_path / "b.toml", "b", s3_endpoint, s3_bucket)
    with (
        Mount(data_a, tmp_path / "a" / "mnt", "a", cfg_a) as ma,
        Mount(data_b, tmp_path / "b" / "mnt", "b", cfg_b) as mb,
    ):
        listed_before = sorted(p.name for p in mb.path("companies").iterdir())
        assert "newco" not in listed_before  # the kernel may now cache this listing
        entity_before = sorted(p.name for p in mb.path("companies", slug).iterdir())
        assert "meetings" not in entity_before  # ... and this one (folders: dir_timeout)
        new = ma.path("companies", "newco")
        new.mkdir()
        (new / "_index.md").write_text("---\nname: NewCo\n---\n")
        (new / "notes").mkdir()
        (new / "notes" / "first-call.md").write_text("met the founders\n")
        ma.path("companies", slug, "_fields", "email").write_text("s3@example.test\n")
        (ma.path("companies", slug, "meetings")).mkdir()
        ma.path("companies", slug, "meetings", "kickoff.md").write_text("agenda\n")

        p = _cli("sync", str(data_a), "--config", str(cfg_a), "--push-only")
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("sync: up ")
        status = json.loads(_cli("status", str(data_a), "--json").stdout)
        assert status["dirty"] == 0 and status["last_sync"]

        def arrived() -> bool:
            f = mb.path("companies", "newco", "notes", "first-call.md")
            e = mb.path("companies", slug, "_fields", "email")
            return (
                f.exists()
                and f.read_text() == "met the founders\n"
                and e.read_text().strip() == "s3@example.test"
                and (data_b / "companies" / slug / "meetings" / "kickoff.md").exists()
            )

        wait_until(arrived, timeout=30)
        # pulled entries show in listings taken before they came
        assert sorted(p.name for p in mb.path("companies").iterdir()) == sorted(
            [*listed_before, "newco"]
        )
        assert [p.name for p in mb.path("companies", "newco", "notes").iterdir()] == [
            "first-call.md"
        ]
        # a pulled folder inside an entity listed before: its kept listing was dropped
        assert sorted(p.name for p in mb.path("companies", slug).iterdir()) == sorted(
            [*entity_before, "meetings"]
        )
        assert mb.path("companies", slug, "meetings", "kickoff.md").read_text() == "agenda\n"
        assert "name: NewCo" in mb.path("companies", "newco", "_index.md").read_text()
        # pulled files are not dirty on B: nothing of A's echoes back
        status_b = json.loads(_cli("status", str(data_b), "--json").stdout)
        assert status_b["dirty"] == 0
