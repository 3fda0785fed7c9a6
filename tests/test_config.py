"""Config: defaults with no file, the DESIGN §8 contract keys, clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocli_fs.config import Config, ConfigError, load, parse_address, parse_duration

DESIGN_EXAMPLE = """
node = "pi-1"                      # default: the host name
[gossip]
listen = "0.0.0.0:9999"
peers = ["10.0.0.4:9999"]          # host:port
key_file = "cluster.key"           # shared secret; required unless insecure = true
insecure = false
[s3]                               # no [s3] table: no S3 sync
bucket = "cocli-data"
prefix = ""
endpoint_url = "http://127.0.0.1:5055"   # optional; region/credentials from the boto3 chain
interval = "60s"
[hub]
enabled = false                    # this node compacts
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cocli-fs.toml"
    p.write_text(text)
    return p


def test_defaults_work_without_a_file() -> None:
    cfg = load(None)
    assert isinstance(cfg, Config) and cfg.node
    assert cfg.s3 is None and not cfg.hub.enabled
    assert cfg.gossip.listen.endswith(":9999") and cfg.gossip.peers == []
    assert cfg.mount.kinds == ["companies", "people"]
    assert load(None, node="laptop").node == "laptop"


def test_the_design_keys_parse(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, DESIGN_EXAMPLE))
    assert cfg.node == "pi-1"
    assert cfg.gossip.listen == "0.0.0.0:9999"
    assert cfg.gossip.peers == ["10.0.0.4:9999"]
    assert cfg.key_path() == tmp_path / "cluster.key"  # relative to the config file
    assert cfg.gossip.insecure is False
    assert cfg.s3 is not None
    assert (cfg.s3.bucket, cfg.s3.prefix, cfg.s3.endpoint_url, cfg.s3.interval) == (
        "cocli-data", "", "http://127.0.0.1:5055", 60.0
    )
    assert cfg.hub.enabled is False
    assert load(write(tmp_path, DESIGN_EXAMPLE), node="pi-2").node == "pi-2"  # --node wins


def test_mount_numbers(tmp_path: Path) -> None:
    assert load(None).mount.poll_spin_us == 200.0
    assert load(write(tmp_path, "[mount]\npoll_spin_us = 0")).mount.poll_spin_us == 0.0
    assert load(write(tmp_path, "[mount]\npoll_spin_us = 12.5")).mount.poll_spin_us == 12.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nod = 'x'", "unknown key.*nod"),
        ("[gossip]\nlisen = '0.0.0.0:1'", r"\[gossip\].*unknown key.*lisen"),
        ("[gossip]\npeers = '10.0.0.4:9999'", r"peers: expected list"),
        ("[gossip]\npeers = [1, 2]", "list of strings"),
        ("[gossip]\nlisten = 'nohost:port'", "not host:port"),
        ("[gossip]\npeers = ['10.0.0.4:99999']", "not host:port"),
        ("[gossip]\ninsecure = 'no'", "insecure: expected bool"),
        ("[gossip]\nmax_skew = 'soon'", "not a duration"),
        ("[s3]\nprefix = 'x'", "'bucket' is required"),
        ("[s3]\nbucket = 5", "bucket: expected str"),
        ("[hub]\nenabled = 1", "enabled: expected bool"),
        ("[mount]\npoll_spin_us = '200'", "poll_spin_us: expected int or float"),
        ("[mount]\npoll_spin_us = -1", "poll_spin_us: must not be negative"),
        ("[mount]\npoll_spin_us = true", "poll_spin_us: expected int or float"),
        ("node = 'bad node/name'", "invalid node name"),
        ("node = ", "cocli-fs.toml"),  # TOML syntax error names the file
    ],
)
def test_bad_keys_and_values_give_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text))


def test_missing_file_and_bad_cli_node(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="invalid node name"):
        load(None, node="../x")


def test_durations_and_addresses() -> None:
    assert parse_duration("60s", "k") == 60.0
    assert parse_duration("500ms", "k") == 0.5
    assert parse_duration("5m", "k") == 300.0
    assert parse_duration("1.5h", "k") == 5400.0
    assert parse_duration(2, "k") == 2.0
    with pytest.raises(ConfigError, match="k: "):
        parse_duration("-1s", "k")
    with pytest.raises(ConfigError):
        parse_duration(True, "k")
    assert parse_address("127.0.0.1:9000", "k") == ("127.0.0.1", 9000)
    assert parse_address("[::1]:9000", "k") == ("::1", 9000)
    assert parse_address("localhost", "k") == ("localhost", 9999)
