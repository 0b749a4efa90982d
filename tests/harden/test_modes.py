"""Item 6 of issue 15: outputs follow the umask like any plain file write (teams share data folders).

The atomic writer's temporary file is created 0600 by ``mkstemp``; that mode used to survive the rename.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core import io
from tests.conftest import maskloop, write_params


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077, 0o027])
def test_every_writer_follows_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        assert io.current_umask() == umask
        io.write_text(tmp_path / "a.txt", "x")
        io.write_json(tmp_path / "a.json", {"a": 1})
        io.write_png(tmp_path / "a.png", np.zeros((4, 5), np.uint8))
        io.write_parquet(tmp_path / "a.parquet", pd.DataFrame({"a": [1]}))
        io.write_bytes(tmp_path / "new" / "dir" / "a.bin", b"1")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what a normal write gives
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert _mode(plain) == expected
    for name in ("a.txt", "a.json", "a.png", "a.parquet", "new/dir/a.bin"):
        assert _mode(tmp_path / name) == expected, name


def test_current_umask_does_not_change_it() -> None:
    old = os.umask(0o037)
    try:
        for _ in range(3):
            assert io.current_umask() == 0o037
    finally:
        os.umask(old)


def test_stage_outputs_are_group_readable(tmp_path: Path) -> None:
    """The real ``maskloop ingest`` run with umask 002: manifest, quarantine report and stage report 0664."""
    root = tmp_path / "p"
    (root / "raw").mkdir(parents=True)
    io.write_png(root / "raw" / "a.png", np.full((40, 50, 3), 90, np.uint8))
    write_params(root, "paths:\n  raw: raw\n  manifest: out/manifest.parquet\n  ingest: out\n"
                       "  reports: reports\n  state: .state\nrunner:\n  workers: 1\n  progress: false\n")
    old = os.umask(0o002)
    try:
        maskloop("ingest", cwd=root)
    finally:
        os.umask(old)
    outs = [root / "out" / "manifest.parquet", root / "out" / "quarantine.parquet"]
    outs += sorted((root / "reports").glob("ingest.*"))
    assert len(outs) >= 3
    for p in outs:
        assert _mode(p) == 0o664, (p, oct(_mode(p)))
