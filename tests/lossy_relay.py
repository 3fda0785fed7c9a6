"""A UDP relay on loopback that loses, duplicates and reorders datagrams (seeded), and can cut a
node off (partition). Real sockets, real processes: the gossip tests and benchmark route every
datagram between nodes through it.

For each node X the relay binds a *front* port F(X); every other node's config lists F(X) as X's
address. A datagram arriving on F(X) from node Y's real address is forwarded to X's real address
*from F(Y)*, so X sees it coming from F(Y) and its replies take the same path back.

Run as a process (``python -m tests.lossy_relay --seed 1 --drop 0.25 a=PORT:FRONT ...``) and steer
it with lines on stdin: ``drop P``, ``dup P``, ``reorder P``, ``partition NODE``, ``heal``,
``stats`` (prints one JSON line), ``quit``.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

Address = tuple[str, int]


@dataclass
class Faults:
    drop: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0  # held back 1-20 ms, so later datagrams overtake it
    cut: set[str] = field(default_factory=set)  # partitioned nodes


class LossyRelay:
    def __init__(self, nodes: dict[str, tuple[int, int]], faults: Faults, seed: int) -> None:
        """``nodes``: name -> (real port, front port), all on 127.0.0.1."""
        self.real = {n: ("127.0.0.1", p) for n, (p, _) in nodes.items()}
        self.front = {n: ("127.0.0.1", f) for n, (_, f) in nodes.items()}
        self.by_real = {a: n for n, a in self.real.items()}
        self.faults = faults
        self.rng = random.Random(seed)
        self.socks: dict[str, trio.socket.SocketType] = {}
        self.stats = {"in": 0, "out": 0, "dropped": 0, "duplicated": 0, "reordered": 0, "cut": 0}

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for n, addr in self.front.items():
            s = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            await s.bind(addr)
            self.socks[n] = s
        async with trio.open_nursery() as nursery:
            for n in self.front:
                nursery.start_soon(self._pump, n, nursery)
            task_status.started()

    async def _pump(self, dest: str, nursery: trio.Nursery) -> None:
        sock = self.socks[dest]
        while True:
            try:
                data, src = await sock.recvfrom(65536)
            except OSError:
                continue
            self.stats["in"] += 1
            origin = self.by_real.get((src[0], src[1]))
            if origin is None:
                continue
            f = self.faults
            if dest in f.cut or origin in f.cut:
                self.stats["cut"] += 1
                continue
            if self.rng.random() < f.drop:
                self.stats["dropped"] += 1
                continue
            copies = 2 if self.rng.random() < f.dup else 1
            self.stats["duplicated"] += copies - 1
            for _ in range(copies):
                if self.rng.random() < f.reorder:
                    self.stats["reordered"] += 1
                    nursery.start_soon(self._later, origin, dest, data, self.rng.uniform(1, 20))
                else:
                    await self._send(origin, dest, data)

    async def _later(self, origin: str, dest: str, data: bytes, ms: float) -> None:
        await trio.sleep(ms / 1000)
        await self._send(origin, dest, data)

    async def _send(self, origin: str, dest: str, data: bytes) -> None:
        try:
            await self.socks[origin].sendto(data, self.real[dest])
            self.stats["out"] += 1
        except OSError:
            pass

    def command(self, line: str) -> dict[str, Any] | None:
        words = line.split()
        if not words:
            return None
        cmd, arg = words[0], words[1] if len(words) > 1 else ""
        f = self.faults
        if cmd == "drop":
            f.drop = float(arg)
        elif cmd == "dup":
            f.dup = float(arg)
        elif cmd == "reorder":
            f.reorder = float(arg)
        elif cmd == "partition":
            f.cut.add(arg)
        elif cmd == "heal":
            f.cut.clear()
        elif cmd == "stats":
            return dict(self.stats)
        return {"ok": cmd}


async def _main(relay: LossyRelay) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        print(json.dumps({"ready": True}), flush=True)
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        buf = b""
        while True:
            chunk = await stdin.receive_some(4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode().strip()
                if text == "quit":
                    nursery.cancel_scope.cancel()
                    return
                out = relay.command(text)
                if out is not None:
                    print(json.dumps(out), flush=True)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop", type=float, default=0.0)
    p.add_argument("--dup", type=float, default=0.0)
    p.add_argument("--reorder", type=float, default=0.0)
    p.add_argument("nodes", nargs="+", help="NAME=REAL_PORT:FRONT_PORT")
    a = p.parse_args(argv)
    nodes = {}
    for spec in a.nodes:
        name, ports = spec.split("=")
        real, front = ports.split(":")
        nodes[name] = (int(real), int(front))
    relay = LossyRelay(nodes, Faults(a.drop, a.dup, a.reorder), a.seed)
    trio.run(_main, relay)
    return 0


class RelayProcess:
    """The relay as a child process, steered through its stdin (used by tests and benchmarks)."""

    def __init__(
        self,
        nodes: dict[str, tuple[int, int]],
        seed: int,
        drop: float = 0.0,
        dup: float = 0.0,
        reorder: float = 0.0,
    ) -> None:
        args = [f"{n}={r}:{f}" for n, (r, f) in nodes.items()]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.lossy_relay",
                "--seed",
                str(seed),
                "--drop",
                str(drop),
                "--dup",
                str(dup),
                "--reorder",
                str(reorder),
                *args,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise RuntimeError("lossy relay did not start")

    def send(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)


if __name__ == "__main__":
    sys.exit(main())
