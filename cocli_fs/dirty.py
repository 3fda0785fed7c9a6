"""The persisted dirty set: every plain file this node created, wrote, renamed or deleted and has
not pushed to S3 yet. The mount marks; S3 push reads a snapshot and clears what it uploaded.

Why a set and not a tree walk: a walk of 300,000 entity folders (and a LIST of as many keys) is
the IO storm this project exists to avoid; the mount sees every write, so it can just remember.

On disk: ``.cocli-fs/dirty.log``, one line per event, ``+<TAB>path<TAB>gen`` (upload),
``-<TAB>path<TAB>gen`` (delete remotely), ``=<TAB>path<TAB>gen`` (pushed as of generation ``gen``).
Every line names its generation, so a compacting rewrite keeps them and a push that started
before the rewrite still clears only what it saw. (Older logs wrote ``+``/``-`` lines without
the generation; they read as numbered by their position.) Replayed on open and rewritten
compactly when it has grown; a torn last line is ignored (the event is re-marked by the write
that the crash interrupted, or the file is uploaded on the next mark).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

LOG_NAME = "dirty.log"


@dataclass(frozen=True)
class DirtyEntry:
    path: str  # relative to the data folder, '/'-separated
    exists: bool  # True: upload it; False: delete it remotely
    gen: int  # bumped on every mark, so a push only clears what it saw


class DirtySet:
    def __init__(self, private_dir: Path, fsync: bool = True) -> None:
        private_dir.mkdir(parents=True, exist_ok=True)
        self.path = private_dir / LOG_NAME
        self.fsync = fsync
        self._entries: dict[str, DirtyEntry] = {}
        self._gen = 0
        self._lines = 0
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        for line in data[:end].decode("utf-8", "replace").splitlines():
            parts = line.split("\t")
            self._lines += 1
            op = parts[0]
            if op in ("+", "-") and len(parts) in (2, 3) and parts[1]:
                numbered = len(parts) == 3 and parts[2].isdigit()
                gen = int(parts[2]) if numbered else self._gen + 1
                self._gen = max(self._gen, gen)
                self._entries[parts[1]] = DirtyEntry(parts[1], op == "+", gen)
            elif op == "=" and len(parts) == 3:
                cur = self._entries.get(parts[1])
                if cur is not None and parts[2].isdigit() and cur.gen <= int(parts[2]):
                    del self._entries[parts[1]]
        if end != len(data) or self._lines > 4 * len(self._entries) + 1024:
            self._rewrite()

    def _rewrite(self) -> None:
        """Replace the log by one line per live entry, generations kept (a snapshot taken
        before the rewrite must still compare correctly against later marks)."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for e in self._entries.values():
                f.write(f"{'+' if e.exists else '-'}\t{e.path}\t{e.gen}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._lines = len(self._entries)

    def _append(self, line: str) -> None:
        os.write(self._fd, line.encode("utf-8"))
        if self.fsync:
            os.fdatasync(self._fd)
        self._lines += 1

    def mark(self, path: str, exists: bool = True) -> None:
        """Remember that ``path`` changed (``exists=False``: it was deleted)."""
        if "\n" in path or "\t" in path:
            raise ValueError(f"unsupported character in path {path!r}")
        self._gen += 1
        self._entries[path] = DirtyEntry(path, exists, self._gen)
        self._append(f"{'+' if exists else '-'}\t{path}\t{self._gen}\n")

    def mark_deleted(self, path: str) -> None:
        self.mark(path, exists=False)

    def snapshot(self) -> list[DirtyEntry]:
        return list(self._entries.values())

    def clear(self, done: list[DirtyEntry]) -> None:
        """Forget entries that were pushed, unless they were marked again since."""
        for e in done:
            cur = self._entries.get(e.path)
            if cur is not None and cur.gen <= e.gen:
                del self._entries[e.path]
                self._append(f"=\t{e.path}\t{e.gen}\n")
        if self._lines > 4 * len(self._entries) + 1024:
            os.close(self._fd)
            self._rewrite()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def close(self) -> None:
        os.close(self._fd)
