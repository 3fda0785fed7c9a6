"""The package imports and the CLI parses; deeper tests live beside each module's tests."""

import subprocess
import sys


def test_cli_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cocli_fs.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("mount", "status", "compact", "sync", "demo"):
        assert cmd in out
