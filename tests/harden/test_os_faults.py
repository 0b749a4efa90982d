"""Item 5 of issue 15: OS faults (read-only folder, full disk) print one sentence naming the path and the remedy.

Before: a 60-line traceback; ENOSPC's message named no file at all. The real faults come from a tiny tmpfs mounted
in a private mount namespace (``unshare -m``: nothing leaks to the machine), the unit tests from a patched write.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import user_message
from pipeline.core import io
from pipeline.core.errors import describe_os_error
from tests.conftest import VENV_BIN, maskloop, require, write_params

PARAMS = """
paths:
  raw: raw
  manifest: out/manifest.parquet
  ingest: out
  reports: reports
  state: .state
  decisions: out/decisions.parquet
  review_dir: db
runner:
  workers: 1
  progress: false
"""


# ---------------------------------------------------------------------------- unit


class _FullDisk:
    """A binary file object whose ``write`` fails like a full disk (errno ENOSPC, no file name)."""

    def __init__(self, fd: int, mode: str) -> None:
        self._fh = open(fd, mode)  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "table.json"
    io.write_json(target, {"v": 1})
    monkeypatch.setattr(io.os, "fdopen", _FullDisk)
    with pytest.raises(OSError) as info:
        io.write_json(target, {"v": 2})
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(target)
    message = user_message(info.value)
    assert message.startswith(f"{target}: No space left on device (ENOSPC); the disk is full"), message
    assert "\n" not in message
    monkeypatch.undo()
    assert io.read_json(target) == {"v": 1}  # the previous version survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]  # no temporary file left


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/d/x.png"),
         "/d/x.png: Permission denied (EACCES); give this user write access"),
        (OSError(errno.EROFS, "Read-only file system", "/d/x.png"), "/d/x.png: Read-only file system (EROFS); the file"),
        (OSError(errno.ENOSPC, "No space left on device"), "(a file this command writes; the OS did not say which)"),
        (OSError(errno.EMFILE, "Too many open files", "/d"), "raise `ulimit -n` or lower runner.workers"),
        (OSError(errno.ELOOP, "Too many levels of symbolic links", "/d"), "(ELOOP); check the path and rerun"),
        (FileNotFoundError("x.parquet: table not found (has the stage that writes it run?)"),
         "x.parquet: table not found (has the stage that writes it run?)"),
    ],
)
def test_describe(exc: OSError, expected: str) -> None:
    assert expected in describe_os_error(exc)


# ---------------------------------------------------------------------------- real faults


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           "mount -t tmpfs -o size=8k tmpfs /mnt"], capture_output=True)
    return proc.returncode == 0


def _in_namespace(root: Path, mount_opts: str, fill: bool, *args: str) -> subprocess.CompletedProcess[str]:
    """``maskloop *args`` in ``root`` with ``root/out`` a private tmpfs (``mount_opts``), optionally filled up."""
    require(_can_mount(), "a private mount namespace is needed for real OS faults (`unshare -m` as root)")
    script = ('mount -t tmpfs -o "$1" tmpfs out || exit 99; '
              'if [ "$2" = 1 ]; then dd if=/dev/zero of=out/.filler bs=4096 >/dev/null 2>&1; fi; '
              'shift 2; exec "$@"')
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", mount_opts, "1" if fill else "0",
         str(VENV_BIN / "maskloop"), *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    (root / "raw").mkdir(parents=True)
    (root / "out").mkdir()
    (root / "db").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        io.write_png(root / "raw" / f"img{i}.png", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    write_params(root, PARAMS)
    return root


def _one_sentence(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


def test_full_disk_one_sentence_then_a_clean_resume(root: Path, tmp_path: Path) -> None:
    line = _one_sentence(_in_namespace(root, "size=64k", True, "ingest"))
    # which output hits the full disk first is the stage's business (index.parquet, manifest.parquet, ...); the
    # sentence must name that file under out/, the error and the remedy
    assert re.match(r"error: out/[\w./-]+\.parquet: No space left on device \(ENOSPC\); the disk is full: free "
                    r"space on it", line), line
    # the state stayed consistent: the rerun (disk no longer full) writes exactly what a clean run writes
    maskloop("ingest", cwd=root)
    clean = tmp_path / "clean"
    shutil.copytree(root / "raw", clean / "raw")
    write_params(clean, PARAMS)
    maskloop("ingest", cwd=clean)
    for name in ("manifest.parquet", "quarantine.parquet"):
        assert (root / "out" / name).read_bytes() == (clean / "out" / name).read_bytes(), name


def test_read_only_folder_one_sentence(root: Path) -> None:
    line = _one_sentence(_in_namespace(root, "ro", False, "ingest"))
    assert re.match(r"error: out/[\w./-]+\.parquet: Read-only file system \(EROFS\); the file system is mounted "
                    r"read-only: remount it", line), line


def test_another_command_read_only(root: Path) -> None:
    """``review-export`` (a non-stage command) reports the same way."""
    line = _one_sentence(_in_namespace(root, "ro", False, "review-export"))
    assert "out/decisions.parquet: Read-only file system (EROFS)" in line, line
