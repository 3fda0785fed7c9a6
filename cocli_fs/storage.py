"""One small object-storage interface, with an S3 backend (boto3) and a local-folder backend.

The sync logic (``s3sync.py``) talks only to :class:`Storage`, so it runs the same against AWS
S3, MinIO, Garage, moto — and a plain folder, which tests use to check the logic without HTTP.
A conformance suite (``tests/test_storage.py``) runs against every backend.

Keys are ``/``-separated paths relative to the store's prefix; backends add the prefix.
Errors leave as :class:`StorageError` with the operation, the key and a one-line reason that a
user can act on; ``NotFound`` for a missing object.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's prefix
    size: int
    etag: str  # changes whenever the content changes (S3 ETag; size+mtime for folders)


class StorageError(RuntimeError):
    """A storage operation failed. ``fatal`` errors (credentials, missing bucket) will not go
    away by retrying; the others (throttling, 5xx, network) may."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class NotFound(StorageError):
    pass


@dataclass
class Stats:
    """What a backend did: logical operations, HTTP requests by S3 operation (retries included),
    bytes moved."""

    requests: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request(self, op: str) -> None:
        with self._lock:
            self.requests[op] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(sorted(self.requests.items())),
            "retries": self.retries,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }


class Storage(Protocol):
    stats: Stats

    def describe(self) -> str:
        """Where this store is, for messages (``s3://bucket/prefix`` or a path)."""

    def put(self, key: str, data: bytes) -> None:
        """Create or replace an object (atomically: readers see the old or the new one)."""

    def get(self, key: str, start: int = 0) -> bytes:
        """The object's bytes from offset ``start`` (raises NotFound)."""

    def delete(self, key: str) -> None:
        """Remove an object; removing a missing one is not an error."""

    def head(self, key: str) -> ObjectInfo | None:
        """Size and ETag of an object, None if it does not exist."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (paginated)."""

    def check(self) -> None:
        """Fail fast with a clear StorageError if the store cannot be used at all."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid object key {key!r}", fatal=True)
    return key


# --- local folder -------------------------------------------------------------------------------


class LocalStorage:
    """Objects are files under ``root`` (temp file + rename, so a reader never sees half)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stats = Stats()

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def check(self) -> None:
        if not self.root.is_dir():
            raise StorageError(f"storage folder {self.root} does not exist", fatal=True)

    def put(self, key: str, data: bytes) -> None:
        self.stats.request("PutObject")
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        self.stats.bytes_up += len(data)

    def get(self, key: str, start: int = 0) -> bytes:
        self.stats.request("GetObject")
        try:
            with open(self._path(key), "rb") as f:
                f.seek(start)
                data = f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no object {key!r} in {self.root}") from None
        self.stats.bytes_down += len(data)
        return data

    def delete(self, key: str) -> None:
        self.stats.request("DeleteObject")
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # Like S3, a "folder" exists only while it holds objects.
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def head(self, key: str) -> ObjectInfo | None:
        self.stats.request("HeadObject")
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(key, st.st_size, _local_etag(st))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self.stats.request("ListObjectsV2")
        # Walk only the folder the prefix names (like S3, cost grows with what is listed).
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self.root / base if base else self.root
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in filenames:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(ObjectInfo(key, *_stat_info(full)))
        yield from sorted(found, key=lambda o: o.key)


def _local_etag(st: os.stat_result) -> str:
    return hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode()).hexdigest()[:16]


def _stat_info(path: Path) -> tuple[int, str]:
    st = path.stat()
    return st.st_size, _local_etag(st)


# --- S3 (boto3) ---------------------------------------------------------------------------------

# Error codes that retrying will not fix, with what to tell the user.
_FATAL_CODES = {
    "InvalidAccessKeyId": "S3 rejected the access key (check the credentials in the boto3 chain)",
    "SignatureDoesNotMatch": "S3 rejected the secret key (check the credentials)",
    "AccessDenied": "S3 denied access (check the credentials and the bucket policy)",
    "InvalidToken": "S3 rejected the session token (check the credentials)",
    "ExpiredToken": "the S3 session token has expired (renew the credentials)",
    "NoSuchBucket": "bucket does not exist",
    "AllAccessDisabled": "S3 denied all access to the bucket",
}


class S3Storage:
    """S3 through boto3. Requests are counted per operation with botocore's event hooks (each
    HTTP attempt, so retries show); retries with backoff come from botocore's ``standard``
    retry mode (throttling such as 503 SlowDown, 5xx, dropped connections)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        max_attempts: int | None = None,
        client: Any = None,
        page_size: int = 1000,
    ) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.page_size = page_size
        self.stats = Stats()
        if max_attempts is None:
            max_attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "8"))
        if client is None:
            cfg = BotoConfig(
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=5,
                read_timeout=30,
                max_pool_connections=32,
                s3={"addressing_style": "path"} if endpoint_url else None,
            )
            session = boto3.session.Session()
            client = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=cfg)
        self.client = client
        client.meta.events.register("before-send.s3", self._count)
        client.meta.events.register("needs-retry.s3", self._count_retry)

    def _count(self, event_name: str = "", **_: Any) -> None:
        self.stats.request(event_name.rsplit(".", 1)[-1])

    def _count_retry(self, response: Any = None, caught_exception: Any = None, **_: Any) -> None:
        failed = caught_exception is not None or (
            response is not None and response[0].status_code >= 500
        )
        if failed:
            with self.stats._lock:
                self.stats.retries += 1

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _error(self, exc: BaseException, op: str, key: str = "") -> StorageError:
        """Turn a boto/botocore exception into one clear line."""
        from botocore import exceptions as bx

        what = f"{op} {key}".strip()
        if isinstance(exc, bx.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchKey", "404") or (status == 404 and code != "NoSuchBucket"):
                return NotFound(f"{what}: no such object in {self.describe()}")
            if code in _FATAL_CODES:
                msg = _FATAL_CODES[code]
                if code == "NoSuchBucket":
                    msg = f"bucket {self.bucket!r} does not exist at {self.endpoint_url or 'AWS'}"
                return StorageError(f"{msg} ({code})", fatal=True)
            if status == 403:
                return StorageError(f"S3 denied {what} (403 {code})", fatal=True)
            return StorageError(f"{what} failed: {code or status} {err.get('Message', '')}")
        if isinstance(exc, bx.NoCredentialsError):
            return StorageError(
                "no S3 credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a "
                "profile or an instance role)",
                fatal=True,
            )
        if isinstance(exc, bx.EndpointConnectionError):
            return StorageError(
                f"cannot reach the S3 endpoint {self.endpoint_url or 'AWS'} ({exc})", fatal=True
            )
        if isinstance(exc, bx.BotoCoreError | OSError):
            return StorageError(f"{what} failed: {exc}")
        raise exc

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            from botocore import exceptions as bx

            if isinstance(exc, bx.ClientError):
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                code = str(exc.response.get("Error", {}).get("Code", ""))
                # HEAD answers carry no error body: map bare statuses to the usual codes.
                if status == 404 or code in ("404", "NoSuchBucket"):
                    raise StorageError(
                        f"bucket {self.bucket!r} does not exist at "
                        f"{self.endpoint_url or 'AWS'} (NoSuchBucket)",
                        fatal=True,
                    ) from None
                if status == 403 and code == "403":
                    raise StorageError(
                        f"S3 refused access to bucket {self.bucket!r} (403: wrong credentials "
                        "or no permission)",
                        fatal=True,
                    ) from None
            raise self._error(exc, "HeadBucket") from None

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._error(exc, "PUT", key) from None
        with self.stats._lock:
            self.stats.bytes_up += len(data)

    def get(self, key: str, start: int = 0) -> bytes:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if start:
            kwargs["Range"] = f"bytes={start}-"
        try:
            resp = self.client.get_object(**kwargs)
            data: bytes = resp["Body"].read()  # urllib3 checks Content-Length: no short reads
        except Exception as exc:
            from botocore import exceptions as bx

            if (
                start
                and isinstance(exc, bx.ClientError)
                and exc.response.get("Error", {}).get("Code") == "InvalidRange"
            ):
                return b""  # nothing past ``start``
            raise self._error(exc, "GET", key) from None
        with self.stats._lock:
            self.stats.bytes_down += len(data)
        return data

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._error(exc, "DELETE", key) from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            err = self._error(exc, "HEAD", key)
            if isinstance(err, NotFound):
                return None
            raise err from None
        return ObjectInfo(key, int(resp["ContentLength"]), str(resp["ETag"]).strip('"'))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "MaxKeys": self.page_size,
        }
        cut = len(self.prefix)
        while True:
            try:
                resp = self.client.list_objects_v2(**kwargs)
            except Exception as exc:
                raise self._error(exc, "LIST", prefix) from None
            for o in resp.get("Contents", ()):
                yield ObjectInfo(o["Key"][cut:], int(o["Size"]), str(o["ETag"]).strip('"'))
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token


def from_config(cfg: Any) -> Storage:
    """The store an ``[s3]`` config table names. ``endpoint_url = "file:///path"`` selects the
    local-folder backend (handy for tests and air-gapped set-ups)."""
    endpoint = cfg.endpoint_url
    if endpoint and endpoint.startswith("file://"):
        root = Path(endpoint[len("file://") :]) / cfg.bucket
        return LocalStorage(root / cfg.prefix.strip("/") if cfg.prefix.strip("/") else root)
    return S3Storage(cfg.bucket, cfg.prefix, endpoint, cfg.region)
