"""What the installed pyfuse3 offers beyond its stock API: the cocli-fs patch
(``scripts/pyfuse3_patch.py``, built by ``scripts/build-pyfuse3``; ``docs/mount.md``).

Decided once, here: the mount uses these when present and the stock API otherwise.
``COCLI_FS_STOCK_PYFUSE3=1`` makes it use the stock API even on a patched build, so the tests
keep the fallback paths working on machines that have the patch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pyfuse3

_FORCE_STOCK = os.environ.get("COCLI_FS_STOCK_PYFUSE3") == "1"

PATCH: str = "" if _FORCE_STOCK else str(getattr(pyfuse3, "COCLI_FS_PATCH", ""))
"""The patch's fingerprint, or "" when the stock API is used."""

NOFLUSH: dict[str, Any] = {"noflush": True} if PATCH else {}
"""Extra ``FileInfo`` arguments for a file opened read-only: FOPEN_NOFLUSH (no FLUSH request
at ``close()``)."""

readdir_reply_name: Callable[..., bool] | None = (
    getattr(pyfuse3, "readdir_reply_name", None) if PATCH else None
)
"""A READDIRPLUS entry by name, d_ino and type only (node id 0), or None."""

NO_OPENDIR: bool = bool(PATCH) and bool(getattr(pyfuse3, "COCLI_FS_READDIR_BY_INODE", False))
"""``opendir`` may answer ENOSYS: the kernel then sends no OPENDIR/RELEASEDIR, caches listings
itself, and ``readdir`` gets the folder's inode number as its handle."""


FAST_LOOKUP: bool = bool(PATCH) and hasattr(pyfuse3, "set_fast_lookup")
"""Lookups of plain files may be answered inside pyfuse3 (patch change 9, ``set_fast_lookup``)."""


def set_poll_spin(microseconds: float) -> bool:
    """Poll for the next request this long after a reply (the patched receive loop)."""
    if not PATCH:
        return False
    pyfuse3.set_poll_spin(microseconds)  # type: ignore[attr-defined]
    return True


def set_wakeup_hook(queue: object | None, drain: Callable[[], bool] | None) -> bool:
    """Between requests, while ``queue`` is not empty, call ``drain`` (patch change 6)."""
    if not PATCH or not hasattr(pyfuse3, "set_wakeup_hook"):
        return False
    pyfuse3.set_wakeup_hook(queue, drain)
    return True


def set_spin_watch(words: object | None) -> bool:
    """While polling for the next request, also watch the first two 64-bit words of the
    buffer ``words`` (``helper.Bell``): the poll ends when one changes (patch change 8). None
    ends the watch; the buffer stays exported (it cannot be closed) until then."""
    if not PATCH or not hasattr(pyfuse3, "set_spin_watch"):
        return False
    pyfuse3.set_spin_watch(words)
    return True


def set_fast_lookup(root: bytes, dirs: dict[int, tuple[str, ...]] | None,
                    names: frozenset[bytes] = frozenset(),
                    entry: Callable[[int, bytes, tuple[str, ...]], int] | None = None,
                    entry_timeout: float = 0.0, attr_timeout: float = 0.0) -> bool:
    """Lookups of ``names`` in the folders of ``dirs`` (inode -> path segments below ``root``)
    answered in the patched pyfuse3 by an lstat and ``entry(parent, name, segments)`` (patch
    change 9). None for ``dirs`` ends it."""
    if not FAST_LOOKUP:
        return False
    pyfuse3.set_fast_lookup(  # type: ignore[attr-defined]
        root, dirs, names, entry, entry_timeout, attr_timeout)
    return True
