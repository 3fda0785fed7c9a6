"""Conformance suite for the storage interface: the same checks against every backend (a local
folder, and moto's S3 server over HTTP through boto3 as in production)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cocli_fs.storage import LocalStorage, NotFound, S3Storage, Storage, StorageError
from tests.s3server import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        root = tmp_path / "bucket"
        root.mkdir()
        yield LocalStorage(root)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        yield S3Storage(bucket, "some/prefix", endpoint, page_size=100)


def test_put_get_head_delete(store: Storage) -> None:
    store.check()
    assert store.head("companies/a/_index.md") is None
    store.put("companies/a/_index.md", b"---\nname: A\n---\n")
    assert store.get("companies/a/_index.md") == b"---\nname: A\n---\n"
    info = store.head("companies/a/_index.md")
    assert info is not None and info.size == 16 and info.etag
    store.put("companies/a/_index.md", b"changed")
    info2 = store.head("companies/a/_index.md")
    assert info2 is not None and info2.etag != info.etag and info2.size == 7
    store.delete("companies/a/_index.md")
    assert store.head("companies/a/_index.md") is None
    store.delete("companies/a/_index.md")  # deleting a missing object is fine
    with pytest.raises(NotFound):
        store.get("companies/a/_index.md")


def test_ranged_get_reads_only_new_bytes(store: Storage) -> None:
    store.put("wal/20260101_a.usv", b"0123456789")
    before = store.stats.bytes_down
    assert store.get("wal/20260101_a.usv", 6) == b"6789"
    assert store.stats.bytes_down - before == 4
    assert store.get("wal/20260101_a.usv", 10) == b""


def test_list_prefix_paginates_in_key_order(store: Storage) -> None:
    keys = [f"manifests/2026010{d}_n{i}.tsv" for d in range(1, 4) for i in range(50)]
    keys += ["wal/20260101_a.usv", "companies/x/_index.md"]
    if isinstance(store, S3Storage):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: store.put(k, k.encode()), keys))
    else:
        for k in keys:
            store.put(k, k.encode())
    store.stats.requests.clear()
    got = list(store.list("manifests/"))
    assert [o.key for o in got] == sorted(k for k in keys if k.startswith("manifests/"))
    assert all(o.size == len(o.key) for o in got)
    if isinstance(store, S3Storage):
        assert store.stats.requests["ListObjectsV2"] == 2  # 150 keys: two pages of 100
    assert [o.key for o in store.list("wal/")] == ["wal/20260101_a.usv"]
    assert list(store.list("nothing/")) == []


def test_bad_keys_are_refused(store: Storage) -> None:
    for key in ("", "/abs", "a/../b", "a//b", "./a"):
        with pytest.raises(StorageError):
            store.put(key, b"x")


def test_missing_bucket_is_a_fatal_clear_error(s3_endpoint: str, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(StorageError) as exc:
        S3Storage("no-such-bucket-here", "", s3_endpoint).check()
    assert exc.value.fatal and "does not exist" in str(exc.value)
    with pytest.raises(StorageError) as exc2:
        LocalStorage(tmp_path / "missing").check()
    assert exc2.value.fatal
