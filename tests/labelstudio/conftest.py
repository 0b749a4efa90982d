"""A real Label Studio server for the session, and maskloop projects with real ECSSD photos to push to it.

The server (``.lsvenv``, installed by ``scripts/install_labelstudio.sh``) runs on a free loopback port with a
temporary data dir and local-files document root, a preset admin user and legacy API token, and is stopped by
the PID of the process group it was started in. Each test uses its own Label Studio project.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from pipeline.core import io
from tests.conftest import REPO, VENV_BIN, free_port, maskloop, missing

LS_BIN = REPO / ".lsvenv" / "bin" / "label-studio"
TOKEN = "maskloop-test-token-4f2a"
EMAIL, PASSWORD = "admin@example.com", "admin12345"

# ECSSD photos: 0018, 0026, 0034 have two parts and holes, 0005 has holes, the others are plain.
NAMES = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0018", "0026", "0034")


@dataclass
class Server:
    url: str
    port: int
    data_dir: Path
    document_root: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LABEL_STUDIO_USERNAME": EMAIL, "LABEL_STUDIO_PASSWORD": PASSWORD, "LABEL_STUDIO_USER_TOKEN": TOKEN,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            # the assist ML backend runs on loopback: Label Studio refuses to call such URLs unless told
            "ML_BLOCK_LOCAL_IP": "false",
        }

    def start(self, timeout: float = 300.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server writes to it until stopped
        self.proc = subprocess.Popen(
            [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited ({self.proc.returncode}); see {self.log_path}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Label Studio did not answer on {self.url}/health within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        pid = self.proc.pid  # leader of the process group started for it
        os.killpg(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        self.proc = None

    def api(self, method: str, path: str, **kwargs: object) -> requests.Response:
        r = requests.request(method, f"{self.url}{path}", headers={"Authorization": f"Token {TOKEN}"}, timeout=60,
                             **kwargs)  # type: ignore[arg-type]
        r.raise_for_status()
        return r

    def project(self, title: str) -> dict:
        rows = self.api("GET", "/api/projects", params={"page_size": 1000}).json()["results"]
        matches = [p for p in rows if p["title"] == title]
        assert len(matches) == 1, f"expected one project {title!r}, found {len(matches)}"
        return matches[0]

    def tasks(self, project_id: int) -> list[dict]:
        return self.api("GET", "/api/tasks", params={"project": project_id, "fields": "all",
                                                     "page_size": 1000}).json()["tasks"]


TEMPLATE = REPO / ".maskloop" / "labelstudio-template-1.23.2"


def _data_template(scratch: Path) -> Path:
    """A data dir where the first start already ran (database migrated, admin user and token created): copying
    it makes each session's start take seconds instead of the first start's minute or more."""
    import fcntl

    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    with open(TEMPLATE.parent / "labelstudio-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (TEMPLATE / "ready").exists():
            building = TEMPLATE.with_name(TEMPLATE.name + ".building")
            shutil.rmtree(building, ignore_errors=True)
            port = free_port()
            first = Server(url=f"http://127.0.0.1:{port}", port=port, data_dir=building, document_root=scratch,
                           log_path=scratch / "first-start.log")
            building.mkdir()
            first.start(timeout=600)
            first.stop()
            (building / "ready").write_text("label-studio 1.23.2 data dir after a first start\n")
            shutil.rmtree(TEMPLATE, ignore_errors=True)
            building.rename(TEMPLATE)
    return TEMPLATE


@pytest.fixture(scope="session")
def ls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not LS_BIN.exists():
        missing(f"Label Studio is not installed at {LS_BIN}: run scripts/install_labelstudio.sh (make system-deps)")
    root = tmp_path_factory.mktemp("labelstudio")
    port = free_port()
    server = Server(url=f"http://127.0.0.1:{port}", port=port, data_dir=root / "data",
                    document_root=root / "docroot", log_path=root / "server.log")
    server.document_root.mkdir()
    template = _data_template(root)
    shutil.copytree(template, server.data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class LSProject:
    """A maskloop project pushing to its own Label Studio project."""

    root: Path
    title: str
    gt: dict[str, np.ndarray]  # item_id -> real ground-truth mask
    names: dict[str, str]  # item_id -> ECSSD name

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    def env(self, token: str = TOKEN) -> dict[str, str]:
        return {"LABEL_STUDIO_API_KEY": token}

    def run(self, *args: str, check: bool = True, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
        return maskloop(*args, cwd=self.root, check=check, env=self.env(token))

    def set_preannotation(self, item_id: str, mask: np.ndarray) -> None:
        io.write_png(self.root / "data" / "preannotate" / "masks" / f"{item_id}.png", mask)

    def preannotation(self, item_id: str) -> np.ndarray:
        return io.read_mask(self.root / "data" / "preannotate" / "masks" / f"{item_id}.png")


def _erode(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2

    return cv2.erode(mask, np.ones((2 * px + 1, 2 * px + 1), np.uint8))


def make_project(root: Path, server: Server, ecssd: Path, title: str, names: tuple[str, ...] = NAMES,
                 chunk_size: int = 100, max_retries: int = 4, backoff_s: float = 0.5) -> LSProject:
    """Ingest real ECSSD photos, write pre-annotations (ground truth eroded by 2 px, uncertainty by name) and a
    params.yaml whose annotation section points at ``server``."""
    raw = root / "data" / "raw" / "images"
    raw.mkdir(parents=True)
    for n in names:
        shutil.copy(ecssd / "images" / f"{n}.jpg", raw / f"{n}.jpg")
    params = (REPO / "params.yaml").read_text(encoding="utf-8")
    params = params.replace("  backend: none ", "  backend: labelstudio ", 1)
    params = params.replace("    url: http://127.0.0.1:8080", f"    url: {server.url}", 1)
    params = params.replace("    project_title: maskloop", f"    project_title: {title}", 1)
    params = params.replace('    document_root: ""', f"    document_root: {server.document_root}", 1)
    params = params.replace("    chunk_size: 100", f"    chunk_size: {chunk_size}", 1)
    params = params.replace("    max_retries: 4", f"    max_retries: {max_retries}", 1)
    params = params.replace("    backoff_s: 0.5", f"    backoff_s: {backoff_s}", 1)
    assert f"project_title: {title}" in params and "backend: labelstudio" in params, "params.yaml layout changed"
    (root / "params.yaml").write_text(params, encoding="utf-8")
    maskloop("ingest", cwd=root)
    manifest = io.read_parquet(root / "data" / "ingest" / "manifest.parquet")
    rows, gt, by_id = [], {}, {}
    for i, r in enumerate(manifest.sort_values("item_id").itertuples(index=False)):
        name = Path(str(r.source_path)).stem
        mask = io.read_mask(ecssd / "masks" / f"{name}.png")
        gt[str(r.item_id)] = mask
        by_id[str(r.item_id)] = name
        io.write_png(root / "data" / "preannotate" / "masks" / f"{r.item_id}.png", _erode(mask, 2))
        rows.append({"item_id": str(r.item_id), "model": "test", "model_version": "test-1", "checkpoint_sha256": "",
                     "confidence": 0.5, "entropy": 0.1, "sam_iou": float("nan"),
                     "uncertainty": round((int(name) % 7) / 10 + i / 1000, 4)})
    io.write_parquet(root / "data" / "preannotate" / "preannotations.parquet", pd.DataFrame(rows))
    return LSProject(root=root, title=title, gt=gt, names=by_id)


@pytest.fixture
def ls_project_factory(tmp_path: Path, ls_server: Server, ecssd: Path):  # type: ignore[no-untyped-def]
    counter = iter(range(100))

    def make(title: str, **kwargs: object) -> LSProject:
        return make_project(tmp_path / f"proj{next(counter)}", ls_server, ecssd, title, **kwargs)  # type: ignore[arg-type]

    return make


# --------------------------------------------------------------------------- maskloop assist (docs/assist.md)


def enable_assist(project: LSProject, port: int) -> None:
    """Turn ``annotation.labelstudio.assist`` on in the project's params.yaml, serving on ``port``."""
    text = project.params.read_text(encoding="utf-8")
    for old, new in (("      enabled: false        # push adds", "      enabled: true         # push adds"),
                     ("      url: http://127.0.0.1:9090", f"      url: http://127.0.0.1:{port}"),
                     ("      port: 9090", f"      port: {port}")):
        assert old in text, f"params.yaml layout changed: {old!r}"
        text = text.replace(old, new, 1)
    project.params.write_text(text, encoding="utf-8")


class AssistProcess:
    """The real `maskloop assist` command in the project folder, stopped by its process group."""

    def __init__(self, project: LSProject, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = project.root / "assist.log"
        env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", **project.env()}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(VENV_BIN / "maskloop"), "assist", "--workers", "2"], cwd=project.root,
                                         env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"maskloop assist exited: {self.log.read_text()}"
            try:
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "maskloop assist did not answer /health"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(20)


def interior(region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of ``region`` farthest from its edge."""
    import cv2

    dist = cv2.distanceTransform(np.pad(region.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)
