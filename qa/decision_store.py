"""The review decision store: an SQLite database that several reviewers write at once.

``paths.review_db`` holds one append-only table of decisions (schema of :mod:`qa.decisions`). It is the
only state the dashboard writes; ``maskloop review-export`` turns it into ``paths.decisions`` (Parquet,
DVC-tracked, read by ``curate`` and by the annotation ``push`` stage).

Concurrency and durability:

- **WAL journal** (``journal_mode=WAL``) so readers never block writers and writers queue behind one
  another; ``busy_timeout`` makes a writer wait for the lock instead of failing, and
  :func:`record_decision` retries on top of that with backoff, so no decision is lost under contention.
- Each decision is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction with ``synchronous=FULL``: once
  :func:`record_decision` returns, the decision survives a crash of the app (SIGKILL) and of the machine;
  a process killed mid-transaction leaves the database as it was before that transaction.
- Decisions are never updated or deleted: a new decision for an item supersedes the old one (the latest
  per item counts, see :func:`qa.decisions.latest_per_item`), and the history stays for audit.

WAL needs a local filesystem (shared memory); on network filesystems set ``journal="delete"``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pipeline.core.errors import UserError
from qa.decisions import DECISION_COLUMNS, DECISION_KINDS, ReviewDecision

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
Journal = Literal["wal", "delete"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    decision_id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id     TEXT NOT NULL,
    decision    TEXT NOT NULL CHECK (decision IN ('accept', 'reject', 'fix')),
    reason      TEXT NOT NULL DEFAULT '',
    fix         TEXT NOT NULL DEFAULT '',
    reviewer    TEXT NOT NULL,
    decided_at  TEXT NOT NULL,
    mask_digest TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_item ON decisions (item_id, decision_id);
"""


class StoreError(UserError):
    """The decision database cannot be opened, is not a maskloop database, or stayed locked too long."""


def _is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def utc_now() -> str:
    """Current time as ISO-8601 UTC with microseconds (sorts lexicographically in time order)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DecisionStore:
    """Append-only decision table in the SQLite file ``path`` (created with its folder on first use).

    A connection is opened per operation, so one store object may be shared by Streamlit's script threads
    and by several processes. ``busy_timeout_s``: how long a writer waits for the lock per attempt;
    ``retries``: extra attempts (with backoff) when the lock is still held after that.
    """

    def __init__(
        self, path: Path, busy_timeout_s: float = 30.0, retries: int = 5, journal: Journal = "wal"
    ) -> None:
        if busy_timeout_s <= 0:
            raise ValueError(f"busy_timeout_s must be positive, got {busy_timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if journal not in ("wal", "delete"):
            raise ValueError(f"journal must be 'wal' or 'delete', got {journal!r}")
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.retries = retries
        self.journal = journal
        self._initialised = False

    # ------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the review database: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            if not self._initialised:
                self._init(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _is_lock_error(exc):
                raise  # the caller retries
            raise StoreError(f"{self.path}: not a usable SQLite review database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _init(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: review database schema version {version} is newer than this maskloop "
                f"({SCHEMA_VERSION}); upgrade maskloop"
            )
        if version == SCHEMA_VERSION:  # already set up (WAL mode is persistent): no write lock needed
            self._initialised = True
            return
        try:
            mode = conn.execute(f"PRAGMA journal_mode = {self.journal}").fetchone()[0]
            if mode.lower() != self.journal:
                log.warning("%s: journal mode %s requested, SQLite uses %s", self.path, self.journal, mode)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables - {"decisions", "sqlite_sequence"} and "decisions" not in tables:
                raise StoreError(f"{self.path}: not a maskloop review database (tables: {sorted(tables)})")
            conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        except sqlite3.DatabaseError as exc:
            if _is_lock_error(exc):
                raise
            raise StoreError(f"{self.path}: not a usable SQLite review database: {exc}") from exc
        self._initialised = True

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        with closing(conn):
            yield conn

    # ------------------------------------------------------------------ writes

    def record(
        self,
        item_id: str,
        decision: str,
        reviewer: str,
        reason: str = "",
        fix: str = "",
        mask_digest: str = "",
        decided_at: str | None = None,
    ) -> ReviewDecision:
        """Append one decision (validated like :class:`ReviewDecision`) and return it with its id.

        Durable when this returns. Raises ``ValueError`` for an invalid decision and :class:`StoreError`
        when the database stayed locked through every retry.
        """
        if not item_id:
            raise ValueError("a decision needs an item_id")
        if not reviewer.strip():
            raise ValueError(f"item {item_id}: a decision needs the reviewer's name")
        if decision not in DECISION_KINDS:
            raise ValueError(f"item {item_id}: decision must be one of {DECISION_KINDS}, got {decision!r}")
        when = decided_at or utc_now()
        # validate before touching the database (same rules as the curate stage applies when reading)
        ReviewDecision(0, item_id, decision, reason.strip(), fix if decision == "fix" else "", reviewer.strip(),
                       when, mask_digest)
        row = (item_id, decision, reason.strip(), fix if decision == "fix" else "", reviewer.strip(), when,
               mask_digest)
        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                with self._conn() as conn:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        cur = conn.execute(
                            "INSERT INTO decisions (item_id, decision, reason, fix, reviewer, decided_at, "
                            "mask_digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            row,
                        )
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    decision_id = int(cur.lastrowid or 0)
                return ReviewDecision(decision_id, *row)
            except sqlite3.OperationalError as exc:
                if not _is_lock_error(exc):
                    raise StoreError(f"{self.path}: cannot record the decision for item {item_id}: {exc}") from exc
                if attempt == self.retries:
                    raise StoreError(
                        f"{self.path}: database stayed locked for {self.retries + 1} x {self.busy_timeout_s:g} s; "
                        f"the decision for item {item_id} was NOT recorded"
                    ) from exc
                log.warning("%s: database locked, retrying (%d/%d)", self.path, attempt + 1, self.retries)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def import_rows(self, decisions: Sequence[ReviewDecision]) -> int:
        """Insert decisions with their own ids and times (seeding from an export), in one transaction.

        Rows whose ``decision_id`` is already present are skipped; returns the number inserted."""
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(
                    f"INSERT OR IGNORE INTO decisions ({', '.join(DECISION_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [tuple(getattr(d, c) for c in DECISION_COLUMNS) for d in decisions],
                )
                n = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return n

    # ------------------------------------------------------------------ reads

    def all(self) -> list[ReviewDecision]:
        """Every decision in ``decision_id`` order (empty when the database does not exist yet)."""
        if not self.path.is_file():
            return []
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions ORDER BY decision_id")
            return [ReviewDecision(*r) for r in rows]

    def history(self, item_id: str) -> list[ReviewDecision]:
        """Decisions for one item, oldest first."""
        if not self.path.is_file():
            return []
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE item_id = ? ORDER BY decision_id",
                (item_id,),
            )
            return [ReviewDecision(*r) for r in rows]

    def latest(self, item_ids: Sequence[str] | None = None) -> dict[str, ReviewDecision]:
        """The decision that counts per item (latest ``decided_at``, then highest id), optionally restricted."""
        from qa.decisions import latest_per_item

        decisions = self.all()
        if item_ids is not None:
            wanted = set(item_ids)
            decisions = [d for d in decisions if d.item_id in wanted]
        return latest_per_item(decisions)

    def count(self) -> int:
        if not self.path.is_file():
            return 0
        with self._conn() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    def integrity_check(self) -> str:
        """SQLite's own integrity check: ``"ok"`` for a healthy database."""
        with self._conn() as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def export_decisions(db: Path, parquet: Path) -> int:
    """Write every decision in ``db`` to ``parquet`` (columns :data:`qa.decisions.DECISION_COLUMNS`, sorted by
    ``decision_id``); returns the number of rows. A missing database exports an empty table with the same
    columns, so a fresh clone's ``dvc repro`` works. The write is atomic and byte-stable for the same rows."""
    import pandas as pd

    from pipeline.core import io

    decisions = DecisionStore(db).all() if Path(db).is_file() else []
    df = pd.DataFrame(
        [[getattr(d, c) for c in DECISION_COLUMNS] for d in decisions], columns=list(DECISION_COLUMNS)
    )
    df = df.astype({"decision_id": "int64", **{c: "str" for c in DECISION_COLUMNS if c != "decision_id"}})
    io.write_parquet(parquet, df)
    return len(df)
