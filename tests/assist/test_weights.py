"""`maskloop models fetch`: verified, resumable, atomic downloads, against a real local HTTP server.

The server (``http.server`` on a free loopback port, in a thread) serves files from a dict, honours
``Range: bytes=N-`` with 206 unless told to ignore it, and can drop the connection after a number of bytes,
so resume and retry run over real sockets.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.core.weights import (
    WEIGHTS,
    ChecksumMismatch,
    Destination,
    WeightsError,
    WeightSpec,
    destinations,
    fetch_weights,
    part_path,
)
from tests.conftest import REPO, maskloop


@dataclass
class FileServer:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    drop_after: list[int] = field(default_factory=list)  # per request, in order: bytes sent before closing
    ignore_range: bool = False
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Range header)


@pytest.fixture
def server() -> Iterator[FileServer]:
    state = FileServer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range", "")
            state.requests.append((self.path, rng))
            body = state.files.get(self.path.lstrip("/"))
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(rng.split("=")[1].split("-")[0]) if rng and not state.ignore_range else 0
            if start >= len(body) and start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            chunk = body[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            limit = state.drop_after.pop(0) if state.drop_after else len(chunk)
            self.wfile.write(chunk[:limit])
            self.wfile.flush()
            if limit < len(chunk):
                self.close_connection = True

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _spec(server: FileServer, name: str, body: bytes) -> WeightSpec:
    server.files[name] = body
    return WeightSpec(name="test", url=f"{server.url}/{name}", sha256=hashlib.sha256(body).hexdigest(),
                      size=len(body), description="test file")


BODY = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: crosses the 1 MiB read size


def test_registry_entries_are_well_formed() -> None:
    assert {"sam_vit_b", "sam_vit_l", "sam_vit_h", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large",
            "mobilenet_v3_large"} <= set(WEIGHTS)
    for spec in WEIGHTS.values():
        # torchvision and SAM file names carry a prefix of the file's own hash (SAM: of its md5; torchvision: SHA-256)
        assert spec.url.startswith("https://")
        if "download.pytorch.org" in spec.url:
            assert spec.sha256.startswith(spec.filename.rsplit("-", 1)[1].split(".")[0])


def test_destinations_follow_params(tmp_path: Path) -> None:
    params = {"preannotate": {"sam": {"arch": "vit_b", "checkpoint": "models/sam.pth"},
                              "deeplabv3": {"arch": "resnet50", "checkpoint": "w/dl.pth"}},
              "refine": {"sam": {"arch": "vit_b", "checkpoint": "models/refine-sam.pth"}},
              "train": {"pretrained_backbone": None}}
    assert destinations(WEIGHTS["sam_vit_b"], params, Path("models")) == [
        Destination(Path("models/sam.pth"), "preannotate.sam.checkpoint"),
        Destination(Path("models/refine-sam.pth"), "refine.sam.checkpoint")]
    # another arch is configured: the file goes to paths.models under its official name, no setting
    assert destinations(WEIGHTS["sam_vit_h"], params, Path("m")) == [Destination(Path("m/sam_vit_h_4b8939.pth"), "")]
    assert destinations(WEIGHTS["deeplabv3_mobilenet_v3_large"], params, Path("m"))[0].setting == ""
    assert destinations(WEIGHTS["deeplabv3_resnet50"], params, Path("m"))[0].path == Path("w/dl.pth")
    assert destinations(WEIGHTS["mobilenet_v3_large"], params, Path("m"))[0].setting == ""
    params["train"]["pretrained_backbone"] = "models/bb.pth"
    assert destinations(WEIGHTS["mobilenet_v3_large"], params, Path("m")) == [
        Destination(Path("models/bb.pth"), "train.pretrained_backbone")]


def test_fetch_verifies_and_is_atomic(server: FileServer, tmp_path: Path) -> None:
    spec = _spec(server, "w.pth", BODY)
    dest = tmp_path / "sub" / "w.pth"
    out = fetch_weights(spec, dest, progress=False)
    assert out.status == "downloaded" and dest.read_bytes() == BODY and out.attempts == 1
    assert not part_path(dest).exists()
    # a second fetch finds it verified and sends no request
    n = len(server.requests)
    assert fetch_weights(spec, dest, progress=False).status == "present"
    assert len(server.requests) == n


def test_dropped_connection_resumes_with_range(server: FileServer, tmp_path: Path) -> None:
    spec = _spec(server, "w.pth", BODY)
    server.drop_after = [300_000, 500_000]
    out = fetch_weights(spec, tmp_path / "w.pth", progress=False, backoff_s=0.0)
    assert (tmp_path / "w.pth").read_bytes() == BODY
    assert out.attempts == 3
    offsets = [int(r.split("=")[1].rstrip("-")) if r else 0 for _, r in server.requests]
    # each resume asks for the bytes after those kept (a read cut short loses at most one 64 KiB block)
    assert offsets[0] == 0 and 300_000 - 65_536 < offsets[1] <= 300_000
    assert offsets[1] + 500_000 - 65_536 < offsets[2] <= offsets[1] + 500_000


def test_interrupted_download_resumes_on_the_next_run(server: FileServer, tmp_path: Path) -> None:
    spec = _spec(server, "w.pth", BODY)
    dest = tmp_path / "w.pth"
    server.drop_after = [400_000]
    with pytest.raises(WeightsError, match=r"\d+ of 1048580 bytes are kept in .*w\.pth\.part.*to resume"):
        fetch_weights(spec, dest, progress=False, max_retries=0)
    kept = part_path(dest).stat().st_size
    assert not dest.exists() and 400_000 - 65_536 < kept <= 400_000
    out = fetch_weights(spec, dest, progress=False)
    assert out.resumed_from == kept and dest.read_bytes() == BODY
    assert server.requests[-1][1] == f"bytes={kept}-"


def test_server_ignoring_range_restarts_cleanly(server: FileServer, tmp_path: Path) -> None:
    spec = _spec(server, "w.pth", BODY)
    dest = tmp_path / "w.pth"
    part_path(dest).write_bytes(BODY[:1000])
    server.ignore_range = True
    out = fetch_weights(spec, dest, progress=False)
    assert dest.read_bytes() == BODY and out.resumed_from == 0


def test_checksum_mismatch_is_clear_and_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    spec = _spec(server, "w.pth", BODY)
    server.files["w.pth"] = BODY[:-4] + b"TAIL"  # same size, other bytes
    dest = tmp_path / "w.pth"
    with pytest.raises(ChecksumMismatch) as err:
        fetch_weights(spec, dest, progress=False)
    msg = str(err.value)
    assert "checksum mismatch" in msg and spec.sha256 in msg and hashlib.sha256(server.files["w.pth"]).hexdigest() in msg
    assert not dest.exists() and not part_path(dest).exists()


def test_existing_other_file_is_refused_without_force(server: FileServer, tmp_path: Path) -> None:
    spec = _spec(server, "w.pth", BODY)
    dest = tmp_path / "w.pth"
    dest.write_bytes(b"something else")
    with pytest.raises(WeightsError, match="--force"):
        fetch_weights(spec, dest, progress=False)
    assert dest.read_bytes() == b"something else"
    fetch_weights(spec, dest, progress=False, force=True)
    assert dest.read_bytes() == BODY


def test_http_errors_are_named(server: FileServer, tmp_path: Path) -> None:
    spec = WeightSpec(name="gone", url=f"{server.url}/gone.pth", sha256="0" * 64, size=10, description="")
    with pytest.raises(WeightsError, match=r"gone: .*/gone\.pth answered HTTP 404"):
        fetch_weights(spec, tmp_path / "g.pth", progress=False)
    unreachable = WeightSpec(name="x", url="http://127.0.0.1:9/x.pth", sha256="0" * 64, size=10, description="")
    with pytest.raises(WeightsError, match="failed 2 times"):
        fetch_weights(unreachable, tmp_path / "x.pth", progress=False, max_retries=1, backoff_s=0.0, timeout_s=2)


def test_cli_fetch_through_a_mirror(server: FileServer, tmp_path: Path) -> None:
    """The real `maskloop models fetch` against a mirror serving other bytes under the official name: a
    one-sentence checksum error, exit 1, nothing written where params point."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    server.files["sam_vit_b_01ec64.pth"] = b"not the SAM weights"
    proc = maskloop("models", "fetch", "sam_vit_b", "--mirror", server.url, "--no-progress", cwd=tmp_path,
                    check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "checksum mismatch" in proc.stderr and WEIGHTS["sam_vit_b"].sha256 in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "models" / "sam_vit_b_01ec64.pth").exists()
    listing = maskloop("models", "list", cwd=tmp_path).stdout
    assert "sam_vit_b" in listing and "models/sam_vit_b_01ec64.pth [missing] (preannotate.sam.checkpoint)" in listing
