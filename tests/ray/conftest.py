"""A real two-node Ray cluster on this machine for the ``ray`` tests.

``cluster_proc.py`` starts a head node and a second node (1 CPU each, loopback only) in its own session,
so teardown ends exactly the processes started here (SIGTERM, then its process group), never other Ray
instances on the machine. The pytest process and the ``maskloop`` subprocesses are Ray drivers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Drivers must take 127.0.0.1 at face value too (Ray otherwise swaps in the machine's network address).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# `ray start` turns token authentication on; drivers then need the mode and the token. A per-run token in
# the environment (inherited by the nodes, the drivers and the `maskloop` subprocesses) keeps ~/.ray alone.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)

try:
    import ray  # noqa: F401
except ImportError:
    if IN_CI:  # `make test` installs the [ray] extra: its absence under CI is a failure, not a skip
        raise
    pytest.skip("Ray is not installed: pip install -e '.[dev,ray]'", allow_module_level=True)

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Cluster:
    address: str  # HOST:PORT of the head's GCS, what runner.ray.address takes
    temp_dir: Path


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the cluster process (it shuts both nodes down on SIGTERM), then end whatever is left of the
    process group this fixture started."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


RAY_SOCKET_SUFFIX = len("/mlrayXXXXXXXX/session_2026-12-02_03-53-07_965134_4194304/sockets/plasma_store.1")


def _short_temp_parent() -> str:
    """TMPDIR when a Ray socket path under it fits Linux's 107-byte limit, else /tmp."""
    parent = tempfile.gettempdir()
    return parent if len(parent) + RAY_SOCKET_SUFFIX <= 107 else "/tmp"


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Head node + one separate worker node (own raylet and worker processes), 1 CPU each."""
    tmp = tmp_path_factory.mktemp("raycluster")
    # Ray's own temp root, fresh for this run. Ray writes <root>/ray/ray_current_cluster itself, so that folder
    # must exist; and its socket paths (<root>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store.1) must fit
    # in 107 bytes: under TMPDIR when that is short enough, else under /tmp (still a new, private folder).
    temp_dir = Path(tempfile.mkdtemp(prefix="mlray", dir=_short_temp_parent()))
    (temp_dir / "ray").mkdir()
    os.environ["RAY_TMPDIR"] = str(temp_dir)  # the nodes, the drivers and the `maskloop` subprocesses
    address_file, log = tmp / "address", tmp / "cluster.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "cluster_proc.py"), str(temp_dir), str(address_file)],
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while not (address_file.is_file() and address_file.read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test Ray cluster did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        yield Cluster(address=address_file.read_text().strip(), temp_dir=temp_dir)
    finally:
        _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
