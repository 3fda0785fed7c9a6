"""Start a real cocli-fs mount in a subprocess for end-to-end tests (and benchmarks).

    with Mount(data_dir, mnt, node="a", config=path) as m:
        (m.mnt / "companies/acme/_fields/email").write_text("x@y.z\\n")

``start`` waits until the mount point is mounted while checking the process is alive (a mount
that dies early fails at once with its log); teardown always detaches the mount with
``fusermount3 -u -z`` and kills the process, so a failing test never leaves a stale mount.

Fixtures: ``mounted`` (a fresh data folder with a few sample companies, node "a") for tests
that import it: ``from tests.mounting import mounted  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def unmount(mnt: Path) -> None:
    """Detach whatever is mounted at ``mnt`` (lazy, so a busy or dead mount goes too)."""
    subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)


def is_mounted(mnt: Path) -> bool:
    try:
        return os.path.ismount(mnt)
    except OSError:  # ENOTCONN: a dead FUSE mount is still a mount
        return True


class Mount:
    def __init__(
        self,
        data: Path,
        mnt: Path,
        node: str = "a",
        config: Path | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = 20.0,
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data = Path(data)
        self.mnt = Path(mnt)
        self.node = node
        self.config = config
        self.extra_args = list(extra_args)
        self.timeout = timeout
        self.log = log or self.mnt.parent / f"mount-{node}-{self.mnt.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = env or {}  # added to the mount process's environment

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "cocli_fs.cli", "-v", "mount", str(self.data),
               str(self.mnt), "--node", self.node, "--foreground"]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        return cmd + self.extra_args

    def start(self) -> Mount:
        self.mnt.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(self.env)
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                self.command(), stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )
        deadline = time.monotonic() + self.timeout
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mount exited with {self.proc.returncode}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"not mounted after {self.timeout}s:\n{self.log_text()}")
            time.sleep(0.02)
        return self

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def loop_cpu(self) -> float:
        """CPU seconds so far of the mount's main thread: its event loop (benchmarks)."""
        f = Path(f"/proc/{self.pid}/task/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def path(self, *parts: str) -> Path:
        return self.mnt.joinpath(*parts)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a clean unmount), then make sure: lazy unmount and kill."""
        rc = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                rc = self.proc.wait(timeout)
        self._force()
        return rc if rc is not None else (self.proc.returncode if self.proc else None)

    def kill(self) -> None:
        """kill -9: the mount dies without cleaning up (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        unmount(self.mnt)

    def _force(self) -> None:
        if is_mounted(self.mnt):
            unmount(self.mnt)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def __enter__(self) -> Mount:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def sample_data(root: Path, n: int = 5) -> list[str]:
    """A small data folder in cocli's layout; returns the company slugs."""
    from cocli_fs import sample

    return [c.slug for c in sample.write_tree(root, n)]


def write_peer_records(data: Path, fields: dict[str, dict[str, str]], node: str = "peer"
                       ) -> None:
    """A journal of another node in ``data/wal`` with these field values per target, as if
    gossiped before the mount starts (the overlay has them; no base is parsed yet)."""
    import time

    from cocli_fs import record as rec
    from cocli_fs.journal import journal_name

    hlc = (int(time.time() * 1000) - 60_000) << rec.HLC_LOGICAL_BITS
    out = bytearray()
    seq = 0
    for target, values in fields.items():
        for name, value in values.items():
            seq += 1
            out += rec.encode(rec.make(hlc=hlc + seq, node_id=node, seq=seq, target=target,
                                       field=name, value=value))
    day = time.strftime("%Y%m%d", time.gmtime())
    (data / "wal" / journal_name(day, node)).write_bytes(bytes(out))


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Mount]:
    data = tmp_path / "data"
    sample_data(data)
    m = Mount(data, tmp_path / "mnt", node="a")
    with m:
        yield m
