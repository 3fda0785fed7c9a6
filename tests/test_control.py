"""The control socket: a real Unix socket, a trio server, the blocking client in a thread."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from cocli_fs.control import ControlError, ControlServer, Progress, request, socket_path


def short_dir(tmp_path: Path) -> Path:
    """Unix socket paths are limited to ~107 bytes; pytest's tmp paths can be longer."""
    d = Path(f"/tmp/ctl-{os.getpid()}-{abs(hash(tmp_path)) % 10**8}")
    d.mkdir(exist_ok=True)
    return d


async def test_request_response_round_trip(tmp_path: Path) -> None:
    private = short_dir(tmp_path)
    server = ControlServer(private)
    seen: list[dict[str, Any]] = []

    async def status(args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        seen.append(args)
        await progress("counting")
        await progress("done counting")
        return {"node": "n1", "echo": args.get("x")}

    async def broken(args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        raise RuntimeError("the handler failed on purpose")

    server.register("status", status)
    server.register("broken", broken)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        path = socket_path(private)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # owner only
        lines: list[str] = []
        result = await trio.to_thread.run_sync(
            lambda: request(private, "status", {"x": [1, "ü"]}, on_progress=lines.append, timeout=5)
        )
        assert result == {"node": "n1", "echo": [1, "ü"]}
        assert lines == ["counting", "done counting"] and seen == [{"x": [1, "ü"]}]
        with pytest.raises(ControlError, match="on purpose"):
            await trio.to_thread.run_sync(lambda: request(private, "broken", timeout=5))
        with pytest.raises(ControlError, match="does not handle 'nope'"):
            await trio.to_thread.run_sync(lambda: request(private, "nope", timeout=5))

        # Garbage and silence do not take the server down.
        def garbage() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
                s.sendall(b"{not json\n")
                assert s.recv(100) == b""  # closed without an answer
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
                s.sendall(json.dumps(["not", "an", "object"]).encode() + b"\n")
                assert s.recv(100) == b""

        await trio.to_thread.run_sync(garbage)
        again = await trio.to_thread.run_sync(lambda: request(private, "status", timeout=5))
        assert again == {"node": "n1", "echo": None}
        nursery.cancel_scope.cancel()
    assert not socket_path(private).exists()  # removed on shutdown
    private.rmdir()


def test_no_mount_running_means_none(tmp_path: Path) -> None:
    private = short_dir(tmp_path)
    assert request(private, "status") is None  # no socket at all
    # A socket file left behind by a mount that died: nobody listens.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(socket_path(private)))
    s.close()
    assert request(private, "status", timeout=2) is None
    socket_path(private).unlink()
    private.rmdir()
