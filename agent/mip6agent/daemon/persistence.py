"""State that survives restarts, and a clear verdict when what was saved is damaged.

- :class:`BindingStore`: the home agent's binding cache in SQLite (WAL mode), one row per
  binding keyed by home address, each row with the SHA-256 of its JSON, so a change to
  one binding is one small transaction and a damaged row is told from a good one.
- :class:`StateStore`: small tables as atomic JSON files (the mobile node's binding
  update list) inside a versioned envelope with a checksum.

Loading never guesses: it returns ``ok``, ``missing`` or ``damaged`` with the reasons, and
the caller decides what a damaged file may (not) be trusted for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..core.binding_cache import Binding

FORMAT_VERSION = 1
BINDINGS_FILE = "binding_cache.sqlite3"
LEGACY_BINDINGS_FILE = "binding_cache.json"

Status = Literal["ok", "missing", "damaged"]


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class LoadResult:
    """What :meth:`BindingStore.load` found.

    ``bindings`` holds only rows that passed the checksum and shape checks; ``problems``
    says, one line each, what did not. ``damaged_keys`` are the keys of rows that failed.
    """

    status: Status
    bindings: list[dict] = field(default_factory=list)
    timestamps: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    path: Path | None = None
    damaged_keys: list[str] = field(default_factory=list)
    # The same rows as ``bindings``, as the Binding objects the checks built (None when
    # not kept): a restore hands these on instead of checking every row again.
    objects: list[Binding] | None = None


@dataclass
class StateLoad:
    """What :meth:`StateStore.load_checked` found; ``state`` is None unless ``ok``."""

    status: Status
    state: dict | None = None
    problems: list[str] = field(default_factory=list)
    path: Path | None = None


class BindingStore:
    """The binding cache in ``<directory>/binding_cache.sqlite3``.

    ``load`` runs once at start-up; ``write`` and ``replace_all`` run on one saver thread
    (the connection is shared across threads under a lock, never used concurrently).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / BINDINGS_FILE
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._damaged = False

    # --- opening ----------------------------------------------------------------------

    def _open(self, create: bool) -> sqlite3.Connection:
        if create:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            uri = f"file:{self.path}?mode=rwc"
        else:
            uri = f"file:{self.path}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        try:
            # WAL with synchronous=NORMAL: a commit is in the WAL file (written, not yet
            # fsynced) when write() returns, so it survives kill -9 of the agent; only a
            # power cut may lose the last commits, and never corrupts the database (SQLite
            # checksums WAL frames and ignores a torn tail). FULL would fsync every commit.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.DatabaseError(f"cannot use WAL mode (journal mode {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        if create:
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
        return conn

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bindings ("
            "home_address TEXT PRIMARY KEY, data TEXT NOT NULL, checksum TEXT NOT NULL)"
        )
        # 64-bit NTP timestamps overflow SQLite's signed INTEGER: kept as decimal text.
        conn.execute(
            "CREATE TABLE IF NOT EXISTS timestamps (nai TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('format_version', ?)",
            (str(FORMAT_VERSION),),
        )
        conn.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._damaged:
            self._set_aside()
        if self._conn is None:
            self._conn = self._open(create=True)
            self._create_schema(self._conn)
        return self._conn

    def _set_aside(self) -> None:
        """Keep a damaged file (and its WAL) for a post-mortem; the next write starts anew."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                if suffix == "-shm":
                    source.unlink(missing_ok=True)
                else:
                    source.replace(source.with_name(f"{source.name}.damaged-{stamp}"))
        self._damaged = False

    # --- loading ----------------------------------------------------------------------

    def load(self) -> LoadResult:
        if not self.path.exists():
            legacy = self.directory / LEGACY_BINDINGS_FILE
            if legacy.exists():
                return self._migrate(legacy)
            return LoadResult("missing", path=self.path)
        try:
            size = self.path.stat().st_size
            wal = self.path.with_name(self.path.name + "-wal")
            if size == 0 and (not wal.exists() or wal.stat().st_size == 0):
                return self._damaged_result([f"{self.path}: the file is empty (truncated?)"])
            conn = self._open(create=False)
        except (OSError, sqlite3.Error) as exc:
            return self._damaged_result([f"{self.path}: {_reason(exc)}"])
        self._conn = conn
        try:
            return self._read(conn)
        except sqlite3.Error as exc:
            return self._damaged_result([f"{self.path}: {_reason(exc)}"])

    def _damaged_result(self, problems: list[str], **found: object) -> LoadResult:
        self._damaged = True
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        return LoadResult("damaged", problems=problems, path=self.path, **found)  # type: ignore[arg-type]

    def _read(self, conn: sqlite3.Connection) -> LoadResult:
        check = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            detail = "; ".join(check[:3]) + ("; ..." if len(check) > 3 else "")
            return self._damaged_result([f"{self.path}: integrity check failed: {detail}"])
        tables = {str(row[0]) for row in conn.execute("SELECT name FROM sqlite_master")}
        if not {"meta", "bindings", "timestamps"} <= tables:
            return self._damaged_result(
                [f"{self.path}: not a binding cache (tables {sorted(tables)}; truncated?)"]
            )
        row = conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        version = None if row is None else str(row[0])
        if version != str(FORMAT_VERSION):
            return self._damaged_result(
                [f"{self.path}: format version {version}, expected {FORMAT_VERSION}"]
            )
        problems: list[str] = []
        damaged: list[str] = []
        bindings: list[dict] = []
        objects: list[Binding] = []
        rows = conn.execute("SELECT home_address, data, checksum FROM bindings").fetchall()
        for key, data, digest in rows:
            problem = _check_row(key, data, digest)
            if isinstance(problem, str):
                problems.append(f"row {key}: {problem}")
                damaged.append(str(key))
            else:
                bindings.append(problem[0])
                objects.append(problem[1])
        timestamps: dict[str, int] = {}
        for nai, value in conn.execute("SELECT nai, value FROM timestamps"):
            if isinstance(nai, str) and isinstance(value, str) and value.isdigit():
                timestamps[nai] = int(value)
            else:
                problems.append(f"timestamp of {nai!r}: not a non-negative integer")
        if problems:
            self._damaged = False  # the file itself is sound: damaged rows get rewritten
            return LoadResult(
                "damaged", bindings, timestamps, problems, self.path, damaged, objects
            )
        return LoadResult("ok", bindings, timestamps, path=self.path, objects=objects)

    def _migrate(self, legacy: Path) -> LoadResult:
        """Import a binding_cache.json of an earlier version once, then keep it aside."""
        found = StateStore(self.directory).load_checked(legacy.stem)
        if found.status != "ok" or found.state is None:
            # Left where it is: nothing is imported from a file that does not read well.
            return LoadResult("damaged", problems=found.problems, path=legacy)
        state = found.state
        problems: list[str] = []
        bindings: list[dict] = []
        raw = state.get("bindings", [])
        for n, item in enumerate(raw if isinstance(raw, list) else []):
            try:
                bindings.append(Binding.from_dict(item).to_dict())
            except ValueError as exc:
                problems.append(f"{legacy.name} binding {n}: {exc}")
        if not isinstance(raw, list):
            problems.append(f"{legacy.name}: bindings is not a list")
        timestamps = _timestamps(state.get("timestamps", {}), problems, legacy.name)
        self.replace_all(bindings, timestamps)
        legacy.replace(legacy.with_name(legacy.name + ".migrated"))
        status: Status = "damaged" if problems else "ok"
        return LoadResult(status, bindings, timestamps, problems, legacy)

    # --- writing ----------------------------------------------------------------------

    def write(self, changed: list[dict], removed: list[str], timestamps: dict[str, int]) -> None:
        """One transaction: upsert ``changed`` rows, delete ``removed`` keys, upsert the
        replay-guard ``timestamps`` given (entries not named are kept)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._put(conn, changed, removed, timestamps)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def replace_all(self, bindings: list[dict], timestamps: dict[str, int]) -> None:
        """Exactly these rows and timestamps, nothing else (after a damaged load: the
        damaged file is kept aside as ``binding_cache.sqlite3.damaged-<time>``)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM bindings")
                conn.execute("DELETE FROM timestamps")
                self._put(conn, bindings, [], timestamps)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _put(
        conn: sqlite3.Connection,
        changed: list[dict],
        removed: list[str],
        timestamps: dict[str, int],
    ) -> None:
        rows = []
        for binding in changed:
            text = canonical_json(binding)
            rows.append((str(binding["home_address"]), text, checksum(text)))
        if rows:
            conn.executemany(
                "INSERT OR REPLACE INTO bindings (home_address, data, checksum) VALUES (?, ?, ?)",
                rows,
            )
        if removed:
            conn.executemany(
                "DELETE FROM bindings WHERE home_address = ?", [(key,) for key in removed]
            )
        if timestamps:
            conn.executemany(
                "INSERT OR REPLACE INTO timestamps (nai, value) VALUES (?, ?)",
                [(nai, str(int(value))) for nai, value in timestamps.items()],
            )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _check_row(key: object, data: object, digest: object) -> tuple[dict, Binding] | str:
    """The row's binding as a dict and as a Binding, or what is wrong with it."""
    if not isinstance(data, str) or not isinstance(digest, str):
        return "data or checksum is not text"
    if checksum(data) != digest:
        return "checksum mismatch"
    try:
        value = json.loads(data)
    except ValueError as exc:
        return f"not JSON ({exc})"
    try:
        binding = Binding.from_dict(value)
    except ValueError as exc:
        return str(exc)
    if value["home_address"] != key and str(binding.home_address) != key:
        return f"holds the binding of {binding.home_address}"
    return value, binding


def _timestamps(raw: object, problems: list[str], where: str) -> dict[str, int]:
    if not isinstance(raw, dict):
        problems.append(f"{where}: timestamps is not an object")
        return {}
    good = {}
    for nai, value in raw.items():
        if isinstance(nai, str) and isinstance(value, int) and not isinstance(value, bool):
            good[nai] = value
        else:
            problems.append(f"{where}: timestamp of {nai!r} is not an integer")
    return good


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return f"{text} (truncated or overwritten?)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return text


class StateStore:
    """Small tables as ``<directory>/<table>.json``, each in a checked envelope:
    ``{"version": 1, "checksum": <sha256 of the canonical JSON of state>, "state": {...}}``.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, table: str) -> Path:
        return self.directory / f"{table}.json"

    def save(self, table: str, state: dict) -> None:
        """Write-then-rename, so a crash leaves the old file or the new one, never half."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = canonical_json(state)
        envelope = f'{{"checksum":"{checksum(text)}","state":{text},"version":{FORMAT_VERSION}}}'
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{table}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(envelope)
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

    def load_checked(self, table: str) -> StateLoad:
        """The saved state with a verdict; files without an envelope (written by earlier
        versions) are accepted when they hold a JSON object."""
        path = self.path(table)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return StateLoad("missing", path=path)
        except (OSError, UnicodeDecodeError) as exc:
            return StateLoad("damaged", problems=[f"{path}: {_reason(exc)}"], path=path)
        try:
            data = json.loads(text)
        except ValueError as exc:
            problem = f"{path}: not JSON (truncated?): {exc}"
            return StateLoad("damaged", problems=[problem], path=path)
        if not isinstance(data, dict):
            problem = f"{path}: holds a JSON {type(data).__name__}, expected an object"
            return StateLoad("damaged", problems=[problem], path=path)
        if set(data) != {"version", "checksum", "state"}:
            return StateLoad("ok", data, path=path)  # an earlier version's bare state
        version, digest, state = data["version"], data["checksum"], data["state"]
        if version != FORMAT_VERSION:
            problem = f"{path}: format version {version}, expected {FORMAT_VERSION}"
            return StateLoad("damaged", problems=[problem], path=path)
        if not isinstance(state, dict):
            problem = f"{path}: state is a JSON {type(state).__name__}, expected an object"
            return StateLoad("damaged", problems=[problem], path=path)
        if digest != checksum(canonical_json(state)):
            return StateLoad("damaged", problems=[f"{path}: checksum mismatch"], path=path)
        return StateLoad("ok", state, path=path)

    def load(self, table: str) -> dict | None:
        """The saved state, or None if there is none or it is damaged."""
        return self.load_checked(table).state
