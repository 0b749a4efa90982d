"""A decision-writing process for the store's concurrency and crash tests (run as a script).

usage: writer_proc.py DB MODE N TAG
  MODE=loop     record N decisions, printing each committed decision_id (flushed) as it returns
  MODE=open-txn record N decisions, then start a big transaction, print "in-transaction" and hang (to be killed)
A "go" file next to the DB, when present, is waited for so several writers start together.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from qa.decision_store import DecisionStore  # noqa: E402


def main() -> None:
    db, mode, n, tag = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    go = db.with_name("go")
    store = DecisionStore(db)
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    for i in range(n):
        d = store.record(f"{tag}{i:06d}", "reject" if i % 3 == 0 else "accept", reviewer=tag,
                         reason="halo around hair" if i % 3 == 0 else "")
        print(d.decision_id, flush=True)
    if mode == "open-txn":
        conn = store._connect()
        conn.execute("BEGIN IMMEDIATE")
        for i in range(20000):
            conn.execute(
                "INSERT INTO decisions (item_id, decision, reason, fix, reviewer, decided_at, mask_digest) "
                "VALUES (?, 'accept', '', '', ?, '2026-01-01T00:00:00.000000Z', '')", (f"uncommitted{i:06d}", tag))
        print("in-transaction", flush=True)
        time.sleep(600)


if __name__ == "__main__":
    main()
