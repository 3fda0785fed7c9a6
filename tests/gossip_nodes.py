"""Real cocli-fs nodes as real processes (``cocli-fs serve``, no FUSE) on loopback, for the gossip
tests and benchmark: each with its own data folder, config, UDP port and control socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cocli_fs import control

REPO = Path(__file__).resolve().parent.parent
KEY = "test-cluster-key-0123456789abcdef"


def free_udp_ports(n: int) -> list[int]:
    """Ports the kernel hands out now (bound together, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Node:
    name: str
    root: Path
    port: int
    peers: list[str]
    key: str | None = KEY
    extra: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "cocli-fs.toml"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        g: dict[str, Any] = {
            "listen": self.address,
            "peers": self.peers,
            "ping_interval": "200ms",
            "suspect_after": "1s",
            "dead_after": "3s",
            "anti_entropy_interval": "500ms",
            **self.extra,
        }
        if self.key is not None:
            (self.root / "cluster.key").write_text(self.key + "\n")
            g["key_file"] = "cluster.key"
        lines = [f'node = "{self.name}"', "[gossip]"]
        for k, v in g.items():
            if isinstance(v, list):
                lines.append(f"{k} = [{', '.join(repr(x) for x in v)}]".replace("'", '"'))
            elif isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            else:
                lines.append(f'{k} = "{v}"')
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, wait: bool = True) -> None:
        self.write_config()
        log = open(self.root / "node.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cocli_fs.cli",
                "serve",
                str(self.data),
                "--config",
                str(self.config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited: {self.log()[-2000:]}")
            try:
                if self.status() is not None:
                    return
            except (OSError, control.ControlError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"node {self.name} not ready: {self.log()[-2000:]}")

    def log(self) -> str:
        try:
            return (self.root / "node.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def request(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        res = control.request(self.data / ".cocli-fs", cmd, args, timeout=30)
        if res is None:
            raise OSError(f"node {self.name} is not running")
        return res

    def status(self) -> dict[str, Any] | None:
        return control.request(self.data / ".cocli-fs", "status", timeout=10)

    def write(self, target: str, **fields: Any) -> dict[str, Any]:
        return self.request("write", {"target": target, "fields": fields})

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def cluster(
    root: Path,
    names: tuple[str, ...] = ("a", "b", "c"),
    via: dict[str, int] | None = None,
    **extra: Any,
) -> list[Node]:
    """Nodes that know each other. ``via``: node -> the address others must use to reach it
    (e.g. a lossy relay's front port); default its own port."""
    ports = free_udp_ports(len(names))
    front = {n: (via or {}).get(n, p) for n, p in zip(names, ports, strict=True)}
    return [
        Node(n, root / n, p, [f"127.0.0.1:{front[m]}" for m in names if m != n], extra=extra)
        for n, p in zip(names, ports, strict=True)
    ]


def wait_until(pred: Any, timeout: float, interval: float = 0.05) -> float:
    """Poll ``pred()`` until true; returns the seconds it took (raises TimeoutError)."""
    start = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError
        time.sleep(interval)


def digests(nodes: list[Node]) -> list[str]:
    out = []
    for n in nodes:
        st = n.status()
        out.append(st["digest"] if st else "down")
    return out


def converged(nodes: list[Node]) -> bool:
    d = digests(nodes)
    return len(set(d)) == 1 and "down" not in d
