"""The control socket: how ``cocli-fs status|compact|sync DATA`` talk to a running mount of DATA.

``DATA/.cocli-fs/control.sock`` (a Unix socket, owner-only). Protocol: the client sends one JSON
line ``{"cmd": "...", "args": {...}}``; the server answers with JSON lines: any number of
``{"progress": "..."}`` lines, then one ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": "..."}`` line, and closes.

Handlers are registered by name by whoever owns the command (the mount registers ``status``;
compaction and S3 sync register theirs), so this module knows no command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 1 << 16

Progress = Callable[[str], Awaitable[None]]
Handler = Callable[[dict[str, Any], Progress], Awaitable[dict[str, Any]]]


class ControlError(RuntimeError):
    """The mount answered with an error."""


def socket_path(private_dir: Path) -> Path:
    return private_dir / SOCKET_NAME


class ControlServer:
    def __init__(self, private_dir: Path) -> None:
        self.path = socket_path(private_dir)
        self.handlers: dict[str, Handler] = {}

    def register(self, cmd: str, handler: Handler) -> None:
        self.handlers[cmd] = handler

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        await sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._serve_one, stream)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.fail_after(10):
                    buf = b""
                    while b"\n" not in buf:
                        chunk = await stream.receive_some(4096)
                        if not chunk:
                            return
                        buf += chunk
                        if len(buf) > MAX_REQUEST:
                            return
                req = json.loads(buf.split(b"\n", 1)[0])
                cmd, args = req["cmd"], req.get("args") or {}
            except (trio.TooSlowError, ValueError, KeyError, TypeError):
                return

            async def progress(line: str) -> None:
                await stream.send_all(json.dumps({"progress": line}).encode() + b"\n")

            handler = self.handlers.get(cmd)
            try:
                if handler is None:
                    raise ControlError(f"this mount does not handle {cmd!r}")
                result = await handler(args, progress)
                reply: dict[str, Any] = {"ok": True, "result": result}
            except Exception as exc:
                log.exception("control command %s failed", cmd)
                reply = {"ok": False, "error": str(exc) or type(exc).__name__}
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(json.dumps(reply).encode() + b"\n")


def request(
    private_dir: Path,
    cmd: str,
    args: dict[str, Any] | None = None,
    on_progress: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> dict[str, Any] | None:
    """Ask a running mount (blocking). None when no mount of this data folder is running."""
    path = socket_path(private_dir)
    if not path.exists():
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None  # a socket left behind by a mount that died
        s.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        f = s.makefile("rb")
        for line in f:
            msg = json.loads(line)
            if "progress" in msg:
                if on_progress:
                    on_progress(msg["progress"])
                continue
            if msg.get("ok"):
                result: dict[str, Any] = msg["result"]
                return result
            raise ControlError(msg.get("error", "unknown error"))
        raise ControlError("the mount closed the control connection without an answer")
    finally:
        s.close()
