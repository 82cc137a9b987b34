"""An embedded SQLite store that makes evaluation runs resumable and cheap to extend.

Verification results are kept *per path*: an independent path depends only on the sample, the
model, the settings and its own index, so a run with N=4 holds paths 0..3 and a later run with
N=8 computes only 4..7. Other outputs (critic judgements, refinement rounds, Best-of-N scores) go
to a generic ``items`` table under a kind. Every write is one transaction, so a process killed
with ``kill -9`` loses at most the item in flight and never leaves half a record; primary keys
make a re-run idempotent (no duplicates).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STORE_FILE = "store.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (key TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, model TEXT NOT NULL, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS paths (
    sample TEXT NOT NULL, settings TEXT NOT NULL, path INTEGER NOT NULL,
    steps TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (sample, settings, path)
);
CREATE TABLE IF NOT EXISTS items (
    kind TEXT NOT NULL, sample TEXT NOT NULL, settings TEXT NOT NULL, slot TEXT NOT NULL,
    value TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (kind, sample, settings, slot)
);
"""

# Settings that do not change what one path computes: they are left out of the key.
_PATH_INDEPENDENT = ("n",)


def _ignored(independent_paths: bool) -> tuple[str, ...]:
    """Settings left out of a key: ``n`` when a path's result does not depend on how many paths run."""
    return _PATH_INDEPENDENT if independent_paths else ()


def _shaping(config: dict[str, Any], ignore: tuple[str, ...]) -> dict[str, Any]:
    """The settings a key is made of: ``config`` without ``ignore``, in sorted order."""
    return {k: v for k, v in sorted(config.items()) if k not in ignore}


def settings_key(
    model: str, config: dict[str, Any], *, ignore: tuple[str, ...] | None = None, independent_paths: bool = True
) -> str:
    """A short stable hash of the model and the settings that shape one path's result.

    ``ignore`` defaults to the settings a path does not depend on (``n``) when ``independent_paths``.
    """
    if ignore is None:
        ignore = _ignored(independent_paths)
    payload = json.dumps({"model": model, "config": _shaping(config, ignore)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class RunStore:
    """One run's results in ``RUN/store.sqlite`` (``path`` may also name the file itself).

    Safe to use from several threads of one process (a lock serialises writes); readers may open
    the same file while a run writes to it (WAL journal).
    """

    def __init__(self, path: str | Path) -> None:
        target = Path(path)
        if target.suffix not in {".sqlite", ".db"}:
            target.mkdir(parents=True, exist_ok=True)
            target = target / STORE_FILE
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
        self.path = target
        self.run_dir = target.parent
        self._lock = threading.Lock()
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(name, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    # -- writing -------------------------------------------------------------------------------

    def register_settings(self, model: str, config: dict[str, Any], *, independent_paths: bool = True) -> str:
        """Record a settings combination; returns its key.

        With ``independent_paths`` a path's result does not depend on how many paths run, so ``n``
        stays out of the key (a run with more paths extends the stored ones). Otherwise (adaptive
        options, early stopping) it is part of the key.
        """
        ignore = _ignored(independent_paths)
        key = settings_key(model, config, ignore=ignore)
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO settings(key, model, config) VALUES (?, ?, ?)",
                (key, model, _dumps(_shaping(config, ignore))),
            )
        return key

    def put_paths(
        self, sample: str, record: dict[str, Any], settings: str, paths: dict[int, list[dict[str, Any]]]
    ) -> None:
        """Store whole path trajectories (``path index -> one dict per step``) in one transaction."""
        now = time.time()
        with self._lock, self._transaction():
            self._db.execute("INSERT OR IGNORE INTO samples(key, record) VALUES (?, ?)", (sample, _dumps(record)))
            self._db.executemany(
                "INSERT OR IGNORE INTO paths(sample, settings, path, steps, created) VALUES (?, ?, ?, ?, ?)",
                [(sample, settings, index, _dumps(steps), now) for index, steps in sorted(paths.items())],
            )

    def put_item(
        self, kind: str, sample: str, settings: str, value: Any, *, slot: str = "",
        record: dict[str, Any] | None = None, replace: bool = False,
    ) -> None:
        """Store one other result (a critic judgement, a refinement round, ...) unless it is there
        (``replace``: overwrite it, for records that describe the latest attempt, such as a failure).
        """
        verb = "REPLACE" if replace else "IGNORE"
        with self._lock, self._transaction():
            if record is not None:
                self._db.execute("INSERT OR IGNORE INTO samples(key, record) VALUES (?, ?)", (sample, _dumps(record)))
            self._db.execute(
                f"INSERT OR {verb} INTO items(kind, sample, settings, slot, value, created) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, sample, settings, slot, _dumps(value), time.time()),
            )

    def set_meta(self, name: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, _dumps(value)))

    # -- reading -------------------------------------------------------------------------------

    def meta(self, name: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])

    def path_indices(self, sample: str, settings: str) -> set[int]:
        rows = self._db.execute("SELECT path FROM paths WHERE sample = ? AND settings = ?", (sample, settings))
        return {int(r[0]) for r in rows}

    def paths(self, sample: str, settings: str, n: int | None = None) -> dict[int, list[dict[str, Any]]]:
        """Stored trajectories of one sample (only indices below ``n`` when given)."""
        rows = self._db.execute(
            "SELECT path, steps FROM paths WHERE sample = ? AND settings = ? AND path < ? ORDER BY path",
            (sample, settings, n if n is not None else 1 << 30),
        )
        return {int(index): json.loads(steps) for index, steps in rows}

    def all_paths(self, settings: str | None = None, n: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """Every stored trajectory (of ``settings`` and below path ``n`` when given), in no set order."""
        rows = self._db.execute(
            "SELECT steps FROM paths WHERE (? IS NULL OR settings = ?) AND path < ?",
            (settings, settings, n if n is not None else 1 << 30),
        ).fetchall()
        for (steps,) in rows:
            yield json.loads(steps)

    def item(self, kind: str, sample: str, settings: str, slot: str = "") -> Any:
        row = self._db.execute(
            "SELECT value FROM items WHERE kind = ? AND sample = ? AND settings = ? AND slot = ?",
            (kind, sample, settings, slot),
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def items(self, kind: str, settings: str | None = None) -> Iterator[tuple[str, str, str, Any]]:
        """``(sample, settings, slot, value)`` of every stored item of ``kind``."""
        query = "SELECT sample, settings, slot, value FROM items WHERE kind = ?"
        args: tuple[Any, ...] = (kind,)
        if settings is not None:
            query += " AND settings = ?"
            args += (settings,)
        for sample, key, slot, value in self._db.execute(query + " ORDER BY created", args).fetchall():
            yield sample, key, slot, json.loads(value)

    def record(self, sample: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT record FROM samples WHERE key = ?", (sample,)).fetchone()
        return None if row is None else json.loads(row[0])

    def settings(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every settings key stored: ``key -> (model, config)``."""
        rows = self._db.execute("SELECT key, model, config FROM settings").fetchall()
        return {key: (model, json.loads(config)) for key, model, config in rows}

    def count_paths(self, settings: str | None = None) -> int:
        if settings is None:
            return int(self._db.execute("SELECT COUNT(*) FROM paths").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM paths WHERE settings = ?", (settings,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE .. COMMIT, rolled back on error: a record is all there or not at all."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
