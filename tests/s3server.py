"""A real S3 HTTP server (moto in server mode) on a free loopback port, for tests.

``s3_endpoint`` (session-wide, one server for all tests) and ``s3_bucket`` (a fresh bucket per
test) are pytest fixtures; ``moto_server()`` is the context manager behind them, for tests that
need a server of their own (e.g. with authentication enforced). The server is a subprocess and is
always stopped."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator

import pytest

from cocli_fs.locals3 import LocalS3, client, credentials

_bucket_no = itertools.count(1)


@contextlib.contextmanager
def moto_server(enforce_auth: bool = False) -> Iterator[str]:
    """Start moto on loopback, yield its endpoint URL, stop it. ``enforce_auth``: every request
    must carry credentials moto knows (none exist, so any key is rejected as S3 would)."""
    saved = os.environ.get("INITIAL_NO_AUTH_ACTION_COUNT")
    if enforce_auth:
        os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    try:
        server = LocalS3().start()
    finally:
        if enforce_auth:
            if saved is None:
                os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
            else:
                os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = saved
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    for k, v in credentials().items():
        os.environ.setdefault(k, v)
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    name = f"test-{os.getpid()}-{next(_bucket_no)}"
    client(s3_endpoint).create_bucket(Bucket=name)
    return name
