"""The SQLite decision store: validation, history, export, concurrent writers, crash safety."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from qa.decision_store import DecisionStore, StoreError, export_decisions
from qa.decisions import DECISION_COLUMNS, latest_per_item, read_decisions

WRITER = Path(__file__).with_name("writer_proc.py")


def test_record_and_read_back(tmp_path: Path) -> None:
    store = DecisionStore(tmp_path / "sub" / "review.sqlite")
    assert store.all() == [] and store.count() == 0  # no file yet: empty, nothing created
    a = store.record("aaaa000000000001", "accept", reviewer="ana", mask_digest="d1")
    r = store.record("aaaa000000000002", "reject", reviewer="bo", reason="  halo on the left  ")
    f = store.record("aaaa000000000001", "fix", reviewer="ana", fix="fill_holes")
    assert (a.decision_id, r.decision_id, f.decision_id) == (1, 2, 3)
    assert r.reason == "halo on the left"  # stripped
    assert store.count() == 3
    assert [d.decision for d in store.history("aaaa000000000001")] == ["accept", "fix"]
    latest = store.latest()
    assert latest["aaaa000000000001"].decision == "fix" and latest["aaaa000000000002"].decision == "reject"
    assert set(store.latest(["aaaa000000000002"])) == {"aaaa000000000002"}
    assert a.decided_at < f.decided_at  # ISO UTC strings sort in time order
    assert store.integrity_check() == "ok"
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_fix_name_only_kept_for_fix_decisions(tmp_path: Path) -> None:
    store = DecisionStore(tmp_path / "r.sqlite")
    d = store.record("x1", "accept", reviewer="ana", fix="fill_holes")
    assert d.fix == ""


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"item_id": "x", "decision": "maybe", "reviewer": "a"}, "decision must be one of"),
        ({"item_id": "x", "decision": "reject", "reviewer": "a", "reason": "   "}, "needs a reason"),
        ({"item_id": "x", "decision": "fix", "reviewer": "a"}, "must name the fix"),
        ({"item_id": "x", "decision": "accept", "reviewer": " "}, "reviewer"),
        ({"item_id": "", "decision": "accept", "reviewer": "a"}, "item_id"),
    ],
)
def test_invalid_decisions_are_refused_and_not_stored(tmp_path: Path, kwargs: dict, message: str) -> None:
    store = DecisionStore(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match=message):
        store.record(**kwargs)
    assert store.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"busy_timeout_s": 0}, "busy_timeout_s"), ({"retries": -1}, "retries"), ({"journal": "memory"}, "journal")],
)
def test_bad_store_settings(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DecisionStore(tmp_path / "r.sqlite", **kwargs)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "r.sqlite"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite review database"):
        DecisionStore(bad).record("x", "accept", reviewer="a")


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "r.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match="not a maskloop review database"):
        DecisionStore(other).record("x", "accept", reviewer="a")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    DecisionStore(db).record("x", "accept", reviewer="a")
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer than this maskloop"):
        DecisionStore(db).all()


def test_locked_database_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    DecisionStore(db).record("x", "accept", reviewer="a")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        store = DecisionStore(db, busy_timeout_s=0.05, retries=1)
        with pytest.raises(StoreError, match="was NOT recorded"):
            store.record("y", "accept", reviewer="b")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert [d.item_id for d in DecisionStore(db).all()] == ["x"]


def test_export_schema_matches_qa_decisions(tmp_path: Path) -> None:
    db, out = tmp_path / "r.sqlite", tmp_path / "out" / "decisions.parquet"
    store = DecisionStore(db)
    store.record("b", "reject", reviewer="ana", reason="missing ear")
    store.record("a", "accept", reviewer="bo", mask_digest="abc")
    store.record("b", "accept", reviewer="bo")
    assert export_decisions(db, out) == 3
    df = pd.read_parquet(out)
    assert tuple(df.columns) == DECISION_COLUMNS
    assert list(df["decision_id"]) == [1, 2, 3]
    back = read_decisions(out)
    assert back == store.all()
    assert latest_per_item(back)["b"].decision == "accept"
    first = out.read_bytes()
    export_decisions(db, out)
    assert out.read_bytes() == first  # byte-stable: DVC sees no change when nothing changed


def test_export_without_database_writes_empty_table(tmp_path: Path) -> None:
    out = tmp_path / "decisions.parquet"
    assert export_decisions(tmp_path / "missing.sqlite", out) == 0
    df = pd.read_parquet(out)
    assert tuple(df.columns) == DECISION_COLUMNS and len(df) == 0
    assert read_decisions(out) == []
    assert not (tmp_path / "missing.sqlite").exists()


def test_import_rows_keeps_ids_and_skips_duplicates(tmp_path: Path) -> None:
    src = DecisionStore(tmp_path / "a.sqlite")
    src.record("a", "accept", reviewer="ana")
    src.record("b", "reject", reviewer="ana", reason="blurry")
    rows = src.all()
    dst = DecisionStore(tmp_path / "b.sqlite")
    assert dst.import_rows(rows) == 2
    assert dst.import_rows(rows) == 0
    assert dst.all() == rows
    assert dst.record("c", "accept", reviewer="bo").decision_id == 3  # ids continue after imported ones


def _start_writer(db: Path, mode: str, n: int, tag: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(WRITER), str(db), mode, str(n), tag],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def test_two_processes_500_decisions_each_all_present(tmp_path: Path) -> None:
    db = tmp_path / "review.sqlite"
    DecisionStore(db).all()
    procs = [_start_writer(db, "loop", 500, tag) for tag in ("alice", "bob")]
    (tmp_path / "go").touch()  # both start writing at the same moment
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert len(out.split()) == 500
    decisions = DecisionStore(db).all()
    assert len(decisions) == 1000
    assert len({d.decision_id for d in decisions}) == 1000
    for tag in ("alice", "bob"):
        mine = [d for d in decisions if d.reviewer == tag]
        assert sorted(d.item_id for d in mine) == [f"{tag}{i:06d}" for i in range(500)]
    # the writers really interleaved (not one after the other)
    order = [d.reviewer for d in decisions]
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches > 1
    assert DecisionStore(db).integrity_check() == "ok"


def test_kill_9_mid_transaction_keeps_database_and_committed_decisions(tmp_path: Path) -> None:
    db = tmp_path / "review.sqlite"
    (tmp_path / "go").touch()
    proc = _start_writer(db, "open-txn", 25, "crashy")
    assert proc.stdout is not None
    acknowledged = []
    line = proc.stdout.readline().strip()
    while line != "in-transaction":
        assert line, proc.stderr.read() if proc.stderr else ""
        acknowledged.append(int(line))
        line = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)  # dies holding the write lock with 20,000 uncommitted rows
    proc.wait(timeout=30)
    store = DecisionStore(db)
    assert store.integrity_check() == "ok"
    decisions = store.all()
    assert [d.decision_id for d in decisions] == acknowledged == list(range(1, 26))
    assert not any(d.item_id.startswith("uncommitted") for d in decisions)
    # the lock died with the process: the next reviewer writes at once
    t0 = time.monotonic()
    assert store.record("after", "accept", reviewer="next").decision_id == 26
    assert time.monotonic() - t0 < 5


def test_kill_9_during_a_stream_of_decisions_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "review.sqlite"
    (tmp_path / "go").touch()
    proc = _start_writer(db, "loop", 100000, "stream")
    assert proc.stdout is not None
    acknowledged = [int(proc.stdout.readline()) for _ in range(60)]
    os.kill(proc.pid, signal.SIGKILL)  # at an arbitrary point of the write loop
    proc.wait(timeout=30)
    store = DecisionStore(db)
    assert store.integrity_check() == "ok"
    ids = {d.decision_id for d in store.all()}
    assert set(acknowledged) <= ids
    assert ids == set(range(1, len(ids) + 1))  # no gaps, no half rows
