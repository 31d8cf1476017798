"""Atomic JSON state files: the binding cache and the binding update list survive restarts."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class StateStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, table: str) -> Path:
        return self.directory / f"{table}.json"

    def save(self, table: str, state: dict) -> None:
        """Write-then-rename, so a crash leaves the old file or the new one, never half."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{table}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(state, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path(table))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dirfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def load(self, table: str) -> dict | None:
        """The saved state, or None if there is none or it is unreadable (then we start empty)."""
        try:
            with self.path(table).open(encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None
