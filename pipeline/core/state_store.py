"""The runner's per-item state: one SQLite database per stage instead of one JSON file per item.

``paths.state/<stage>/items.sqlite`` holds one row per item: ``key`` (primary key) and ``state`` (the canonical
JSON record the runner keeps: fingerprint, input stats and digests, outputs, table record, status, timing), and a
``meta`` table of stage-level records (the runner's key of the stage's last complete run: ``last_run``).

Why SQLite and not a file per item: a stage of 100,000 items kept 100,000 small files (plus their folders) that
every run opened, parsed and, on a deletion, listed; at 1M items that is the filesystem's inode budget and
minutes of syscalls. One indexed file answers the same lookups (~10 µs each), lists keys in one query, and is
one file for backups and for `rm -r .maskloop/state/<stage>` (which still resets a stage).

Concurrency and crashes:

- **One writer, the driver.** Workers (process pool or Ray actors on other nodes) never open the database: they
  write their output files and return the item's state record in their outcome; the driver stores it. So the
  database needs no cross-machine locking (SQLite must not be shared over NFS by several hosts) and a Ray
  worker's node never touches it.
- **WAL journal, one transaction per item.** Each finished item is committed on its own (``put`` then
  ``commit``), with ``synchronous=NORMAL``: a commit costs a WAL append, no fsync. A run killed at any moment
  (SIGKILL included) keeps every committed item; an item whose outputs were written but whose record was not yet
  committed is simply recomputed by the next run (its outputs are rewritten atomically with the same bytes).
- Readers in other processes (``maskloop status``, tests) may read while a stage runs (WAL readers never block).

State records written by an older maskloop (``<stage>/<xx>/<key>.json``) are imported once, on first open, and
their files removed, so an upgrade recomputes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

DB_NAME = "items.sqlite"
_SCHEMA = "CREATE TABLE IF NOT EXISTS items (key TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID"
_META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"


def _dumps(state: Mapping[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"), default=str)


class StateStore:
    """Per-item state records of one stage, keyed by item key (see the module docstring).

    Use as a context manager (``with StateStore(folder) as store: ...``); ``put`` writes inside the current
    transaction and ``commit`` makes it durable. Unreadable records read as ``None`` (the item is recomputed).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.folder.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.execute(_META_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise sqlite3.DatabaseError(
                f"{self.path}: cannot open the runner's state database ({exc}); delete the folder {self.folder} "
                "to reset this stage (its items are then recomputed)"
            ) from exc
        self._in_tx = False
        if fresh:
            self._import_legacy()

    # -- context manager
    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._in_tx:
            self.commit()
        self._db.close()

    # -- reads
    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT state FROM items WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._parse(key, row[0])

    def all_keys(self) -> list[str]:
        """Every stored key, sorted."""
        return [k for (k,) in self._db.execute("SELECT key FROM items ORDER BY key")]

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(key, state)`` for every readable record, sorted by key (streamed, not loaded at once)."""
        for key, text in self._db.execute("SELECT key, state FROM items ORDER BY key"):
            state = self._parse(key, text)
            if state is not None:
                yield key, state

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def _parse(self, key: str, text: str) -> dict[str, Any] | None:
        try:
            state = json.loads(text)
        except ValueError:
            log.warning("%s: unreadable state record of item %s; the item will be recomputed", self.path, key)
            return None
        return state if isinstance(state, dict) else None

    # -- writes
    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True

    def put(self, key: str, state: Mapping[str, Any]) -> None:
        self._begin()
        self._db.execute("INSERT OR REPLACE INTO items (key, state) VALUES (?, ?)", (key, _dumps(state)))

    def delete(self, key: str) -> None:
        self._begin()
        self._db.execute("DELETE FROM items WHERE key = ?", (key,))

    def commit(self) -> None:
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False

    # -- stage-level records (e.g. the runner's "last complete run" key, see pipeline.core.runner)
    def get_meta(self, name: str) -> dict[str, Any] | None:
        """The stage-level record ``name`` (a JSON object), or ``None`` when absent or unreadable."""
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def put_meta(self, name: str, value: Mapping[str, Any]) -> None:
        self._begin()
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, _dumps(value)))

    def delete_meta(self, name: str) -> None:
        self._begin()
        self._db.execute("DELETE FROM meta WHERE name = ?", (name,))

    # -- upgrade from one JSON file per item
    def _legacy_files(self) -> Iterable[Path]:
        for sub in sorted(os.scandir(self.folder), key=lambda e: e.name):
            if sub.is_dir() and len(sub.name) == 2:
                for entry in sorted(os.scandir(sub.path), key=lambda e: e.name):
                    if entry.name.endswith(".json"):
                        yield Path(entry.path)

    def _import_legacy(self) -> None:
        files = list(self._legacy_files())
        if not files:
            return
        n = 0
        for path in files:
            with suppress(OSError, ValueError):
                state = json.loads(path.read_bytes())
                if isinstance(state, dict) and not path.name.startswith("."):
                    self.put(path.name[: -len(".json")], state)
                    n += 1
        self.commit()
        for path in files:
            with suppress(OSError):
                path.unlink()
        for sub in {p.parent for p in files}:
            with suppress(OSError):
                sub.rmdir()
        log.info("%s: imported %d per-item JSON state records into %s", self.folder.name, n, self.path.name)
