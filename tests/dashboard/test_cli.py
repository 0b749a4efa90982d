"""`maskloop review-export` (the decisions stage) and `maskloop review` start-up, through the real console script."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd

from pipeline.stages.decisions import seed_from_export
from qa.decision_store import DecisionStore
from qa.decisions import DECISION_COLUMNS
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def _maskloop(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    from tests.conftest import maskloop

    return maskloop(*args, cwd=cwd, check=check)


def _project(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    return tmp_path


def test_export_without_database_writes_empty_table(tmp_path: Path) -> None:
    root = _project(tmp_path)
    proc = _maskloop("review-export", cwd=root)
    assert "0 review decision(s)" in proc.stdout
    df = pd.read_parquet(root / "data/review/decisions.parquet")
    assert tuple(df.columns) == DECISION_COLUMNS and df.empty


def test_export_with_database_and_keep_when_database_is_gone(tmp_path: Path) -> None:
    root = _project(tmp_path)
    db = root / "data/review/db/decisions.sqlite"
    store = DecisionStore(db)
    store.record("0123456789abcdef", "reject", reviewer="ana", reason="hair cut off")
    store.record("fedcba9876543210", "accept", reviewer="ana")
    assert "2 review decision(s)" in _maskloop("review-export", cwd=root).stdout
    out = root / "data/review/decisions.parquet"
    assert list(pd.read_parquet(out)["decision"]) == ["reject", "accept"]
    # fresh clone: the export came back from the DVC cache, there is no database -> kept, not emptied
    for p in db.parent.glob("decisions.sqlite*"):
        p.unlink()
    assert "2 review decision(s)" in _maskloop("review-export", cwd=root).stdout
    assert len(pd.read_parquet(out)) == 2
    # ... and the dashboard's start seeds a new database from it, ids and times kept
    assert seed_from_export(db, out) == 2
    assert [d.decision_id for d in DecisionStore(db).all()] == [1, 2]
    assert seed_from_export(db, out) == 0  # never twice


def test_export_to_explicit_paths(tmp_path: Path) -> None:
    root = _project(tmp_path)
    DecisionStore(root / "elsewhere.sqlite").record("0123456789abcdef", "accept", reviewer="ana")
    _maskloop("review-export", "--db", "elsewhere.sqlite", "--out", "x/d.parquet", cwd=root)
    assert len(pd.read_parquet(root / "x/d.parquet")) == 1


def test_export_of_a_corrupt_database_is_one_clear_error(tmp_path: Path) -> None:
    root = _project(tmp_path)
    db = root / "data/review/db/decisions.sqlite"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"garbage" * 1000)
    proc = _maskloop("review-export", cwd=root, check=False)
    assert proc.returncode == 1
    assert "not a usable SQLite review database" in proc.stderr and "Traceback" not in proc.stderr


def test_review_bad_port_is_a_clear_error(tmp_path: Path) -> None:
    root = _project(tmp_path)
    proc = _maskloop("review", "--port", "70000", cwd=root, check=False)
    assert proc.returncode == 1 and "--port must be in 1..65535" in proc.stderr


def test_review_serves_on_loopback_by_default(tmp_path: Path) -> None:
    root = _project(tmp_path)
    port = free_port()
    from tests.conftest import VENV_BIN

    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([str(VENV_BIN / "maskloop"), "review", "--port", str(port)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        body = b""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    body = r.read()
                    break
            except OSError:
                time.sleep(0.3)
        assert body == b"ok"
        # bound to 127.0.0.1 only: the listening socket's address is loopback
        import psutil

        local = {c.laddr.ip for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert local == {"127.0.0.1"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_status_reports_decisions_and_pending_export(tmp_path: Path) -> None:
    root = _project(tmp_path)
    store = DecisionStore(root / "data/review/db/decisions.sqlite")
    store.record("0123456789abcdef", "reject", reviewer="ana", reason="hair cut off")
    store.record("fedcba9876543210", "accept", reviewer="bo")
    import os

    from pipeline.commands.review import status_lines
    from pipeline.core.params import load_paths

    cwd = os.getcwd()
    os.chdir(root)
    try:
        lines = status_lines(load_paths(root / "params.yaml"))
        assert lines[0] == ("2 item(s) decided by 2 reviewer(s): 1 accepted, 0 fixed, 1 rejected "
                            "(sent back on the next push)")
        assert "2 decision(s) not exported yet" in lines[1]
        _maskloop("review-export", cwd=root)
        assert len(status_lines(load_paths(root / "params.yaml"))) == 1
    finally:
        os.chdir(cwd)
    assert "[review]" in _maskloop("status", cwd=root).stdout
