"""Configuration: one TOML file, every key with a default that works on one machine without S3.

This module is the schema (the keys of DESIGN §8 are a contract: add keys, rename none).
"""

from __future__ import annotations

import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .journal import check_node_name


class ConfigError(ValueError):
    pass


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any, key: str) -> float:
    """``"60s"``, ``"500ms"``, ``"5m"``, ``2`` (seconds) -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(f"{key}: {value!r} is not a duration like '60s', '500ms' or '5m'")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_address(value: str, key: str, default_port: int = 9999) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep:
        host, port = str(value), str(default_port)
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not host:port") from None
    if not host or not 0 <= p < 65536:
        raise ConfigError(f"{key}: {value!r} is not host:port")
    return host, p


@dataclass
class GossipConfig:
    enabled: bool = True
    listen: str = "0.0.0.0:9999"
    peers: list[str] = field(default_factory=list)
    key_file: str | None = None  # shared secret; required unless insecure
    key: str | None = None  # the secret inline (prefer key_file)
    insecure: bool = False
    anti_entropy_interval: float = 1.0
    ping_interval: float = 1.0
    suspect_after: float = 3.0
    dead_after: float = 10.0
    max_skew: float = 60.0  # seconds a peer's clock may lead ours before it is reported


@dataclass
class S3Config:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    interval: float = 60.0


@dataclass
class HubConfig:
    enabled: bool = False
    interval: float = 0.0  # periodic compaction inside the mount; 0 = only on `compact`


@dataclass
class MountConfig:
    entry_timeout: float = 10.0  # kernel may cache names/attrs this long; we invalidate on change
    attr_timeout: float = 10.0
    # The same for folders. Their names and attributes change only through the mount, S3 pulls
    # and compaction, which all invalidate what they change; only changes made in DATA by hand
    # wait for this. Long, so a walk over 300,000 entities does not look each one up again.
    dir_timeout: float = 300.0
    # After answering a request, poll for the next one this long before sleeping (needs the
    # patched pyfuse3, scripts/build-pyfuse3): a sequential client (cat, stat, find) sends it
    # a few microseconds after our reply, and sleeping costs ~80 µs. 0 turns polling off.
    poll_spin_us: float = 200.0
    # Lookups of _index.md and tags.lst in entities without overlay fields answered by the
    # patched pyfuse3 itself (an lstat, no request handler; docs/mount.md). Off: every lookup
    # goes through the handler (for comparison; answers are the same).
    fast_lookup: bool = True
    kinds: list[str] = field(default_factory=lambda: ["companies", "people"])
    # Extra routing rules, tried before the defaults: [{pattern = "...", route = "..."}].
    routes: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Config:
    node: str = field(default_factory=lambda: default_node_name())
    campaign: str = ""
    environment: str = "prod"
    gossip: GossipConfig = field(default_factory=GossipConfig)
    s3: S3Config | None = None
    hub: HubConfig = field(default_factory=HubConfig)
    mount: MountConfig = field(default_factory=MountConfig)
    path: Path | None = None  # the file this came from (relative key_file resolves against it)

    def key_path(self) -> Path | None:
        if not self.gossip.key_file:
            return None
        p = Path(self.gossip.key_file)
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p


def default_node_name() -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63].strip("-") or "node"
    return name


def _take(table: dict[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    v = table.pop(key)
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in _as_tuple(types)):
        raise ConfigError(f"{where}{key}: expected {_names(types)}, got {type(v).__name__}")
    return v


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _names(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in _as_tuple(t))


_DURATIONS = {
    "gossip": {"anti_entropy_interval", "ping_interval", "suspect_after", "dead_after", "max_skew"},
    "s3": {"interval"},
    "hub": {"interval"},
    "mount": {"entry_timeout", "attr_timeout", "dir_timeout"},
}
_NUMBERS = {"mount": {"poll_spin_us"}}  # plain non-negative numbers


def _section(cls: type, table: dict[str, Any], name: str) -> Any:
    table = dict(table)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in table:
            continue
        if f.name in _DURATIONS.get(name, ()):
            kwargs[f.name] = parse_duration(table.pop(f.name), f"[{name}] {f.name}")
        elif f.name in _NUMBERS.get(name, ()):
            v = _take(table, f.name, (int, float), f"[{name}] ")
            if v < 0:
                raise ConfigError(f"[{name}] {f.name}: must not be negative")
            kwargs[f.name] = float(v)
        elif f.name in ("peers", "kinds"):
            v = _take(table, f.name, list, f"[{name}] ")
            if not all(isinstance(x, str) for x in v):
                raise ConfigError(f"[{name}] {f.name}: expected a list of strings")
            kwargs[f.name] = v
        elif f.name == "routes":
            kwargs[f.name] = _take(table, f.name, list, f"[{name}] ")
        elif f.name in ("enabled", "insecure", "fast_lookup"):
            kwargs[f.name] = _take(table, f.name, bool, f"[{name}] ")
        else:
            kwargs[f.name] = _take(table, f.name, str, f"[{name}] ")
    if table:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(sorted(table))}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"[{name}]: {exc}") from None


def parse(data: dict[str, Any], path: Path | None = None) -> Config:
    data = dict(data)
    cfg = Config(path=path)
    for key in ("node", "campaign", "environment"):
        if key in data:
            setattr(cfg, key, _take(data, key, str, ""))
    try:
        check_node_name(cfg.node)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if "gossip" in data:
        cfg.gossip = _section(GossipConfig, data.pop("gossip"), "gossip")
    if "s3" in data:
        s3 = data.pop("s3")
        if "bucket" not in s3:
            raise ConfigError("[s3]: 'bucket' is required")
        cfg.s3 = _section(S3Config, s3, "s3")
    if "hub" in data:
        cfg.hub = _section(HubConfig, data.pop("hub"), "hub")
    if "mount" in data:
        cfg.mount = _section(MountConfig, data.pop("mount"), "mount")
    if data:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(data))}")
    parse_address(cfg.gossip.listen, "[gossip] listen")
    for p in cfg.gossip.peers:
        parse_address(p, "[gossip] peers")
    return cfg


def load(path: Path | None, node: str | None = None) -> Config:
    """Read the TOML file (None: all defaults); ``--node`` on the command line wins."""
    if path is None:
        cfg = Config()
    else:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        cfg = parse(raw, path)
    if node is not None:
        try:
            cfg.node = check_node_name(node)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return cfg
