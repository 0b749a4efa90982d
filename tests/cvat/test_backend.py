"""Offline parts of the CVAT backend: params, item <-> (task, frame) mapping, receipt logic, shapes of real
masks, and bounded retries of the real cvat-sdk client against local sockets that refuse, drop or fail
connections (plain TCP/HTTP failures, not an imitation of the CVAT API)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cvat_sdk import masks as sdk
from cvat_sdk.api_client.exceptions import ApiException

from pipeline.annotation.base import BACKENDS, PushItem, ReceiptRow
from pipeline.annotation.cvat import (
    CvatConnection,
    CvatParams,
    classify_items,
    frame_file_name,
    frames_by_item,
    make_backend,
    plan_replacement,
    receipt_rows,
    shape_points,
    task_chunks,
    task_name,
    transient_reason,
    with_retries,
)
from pipeline.annotation.cvat_codec import polygon_to_mask
from pipeline.core import io
from pipeline.core.errors import ConfigError, UserError
from pipeline.core.params import ParamsError, Paths, from_mapping


def _item(i: int, tmp: Path, uncertainty: float = 0.5, note: str = "", ext: str = ".JPG") -> PushItem:
    mask = tmp / f"m{i}.png"
    if not mask.exists():
        m = np.zeros((4, 5), np.uint8)
        m[1:3, 1 : 1 + (i % 4)] = 255
        io.write_png(mask, m)
    return PushItem(item_id=f"{i:016x}", image_path=tmp / f"photo{i}{ext}", width=5, height=4, mask_path=mask,
                    model_version="m1", score=0.5, uncertainty=uncertainty, review_note=note)


# --------------------------------------------------------------------------- params


def test_default_params_and_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    p = CvatParams()
    monkeypatch.delenv("CVAT_URL", raising=False)
    assert p.server_url() == "http://localhost:8080" and p.counted_labels() == ("foreground",)
    monkeypatch.setenv("CVAT_URL", "https://cvat.example.org/")
    assert p.server_url() == "https://cvat.example.org"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "localhost:8080"}, "http://"),
        ({"project_name": " "}, "project_name"),
        ({"labels": []}, "labels must be"),
        ({"foreground_labels": ["cat"]}, "not in labels"),
        ({"task_size": 0}, "task_size"),
        ({"image_quality": 0}, "image_quality"),
        ({"pull_states": ["done"]}, "pull_states"),
        ({"pull_stages": []}, "pull_stages"),
        ({"max_retries": -1}, "max_retries"),
        ({"min_server_version": "two"}, "not a version"),
        ({"shape_type": "brush"}, "brush"),
        ({"task_sise": 3}, "unknown key"),
    ],
)
def test_bad_params(settings: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        from_mapping(CvatParams, settings, "params.yaml:annotation.cvat")


def test_backend_is_registered_and_needs_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert BACKENDS["cvat"] == "pipeline.annotation.cvat:make_backend"
    monkeypatch.chdir(tmp_path)  # no .env here
    for name in ("CVAT_USERNAME", "CVAT_PASSWORD", "CVAT_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="CVAT_USERNAME"):
        make_backend({}, Paths())
    monkeypatch.setenv("CVAT_USERNAME", "alice")
    with pytest.raises(ConfigError, match="CVAT_PASSWORD"):
        make_backend({}, Paths())
    monkeypatch.setenv("CVAT_PASSWORD", "s3cret-pw")
    backend = make_backend({"project_name": "p"}, Paths())
    assert backend.name == "cvat" and "s3cret-pw" not in repr(backend.conn)
    with pytest.raises(ConfigError, match="credentials are missing"):
        CvatConnection(CvatParams())


# --------------------------------------------------------------------------- mapping and receipt


def test_frame_names_chunks_and_mapping(tmp_path: Path) -> None:
    items = [_item(i, tmp_path, uncertainty=u) for i, u in enumerate([0.1, 0.9, 0.5, 0.9, 0.3])]
    assert frame_file_name(items[0]) == "0000000000000000.jpg"
    chunks = task_chunks(items, 2)
    assert [[it.item_id[-1] for it in c] for c in chunks] == [["1", "3"], ["2", "4"], ["0"]]
    assert task_name("proj", chunks[0]) == "proj 0000000000000001"
    names = ["0000000000000003.jpg", "0000000000000001.png", "IMG_1.jpg", "0000000000000003.jpg"]
    assert frames_by_item(names) == {"0000000000000003": 0, "0000000000000001": 1}


def test_classify_and_receipt(tmp_path: Path) -> None:
    a, b, c, d = (_item(i, tmp_path) for i in range(4))
    b2 = _item(1, tmp_path, note="please fix the hair")  # same item, new review note -> new digest
    on_server = {a.item_id: (7, 0), b.item_id: (7, 1), c.item_id: (8, 0)}
    receipt = [
        ReceiptRow(a.item_id, "cvat", "3", "7", 0, a.digest(), "m1"),
        ReceiptRow(b.item_id, "cvat", "3", "7", 1, b.digest(), "m1"),
        # c is on the server but has no receipt row (a push cut short): it counts as changed
        ReceiptRow("00000000000000ff", "cvat", "3", "9", 4, "x", "m0"),
    ]
    new, changed, unchanged = classify_items([a, b2, c, d], on_server, receipt)
    assert [it.item_id for it in new] == [d.item_id]
    assert [it.item_id for it in changed] == [b.item_id, c.item_id]
    assert [it.item_id for it in unchanged] == [a.item_id]
    placed = {**on_server, d.item_id: (9, 0)}
    pushed = {a.item_id: a.digest(), b.item_id: b2.digest(), c.item_id: c.digest(), d.item_id: d.digest()}
    rows, removed = receipt_rows([a, b2, c, d], placed, 3, receipt, pushed)
    assert removed == ["00000000000000ff"]
    assert [(r.item_id[-2:], r.task_id, r.frame, r.status) for r in rows] == [
        ("00", "7", 0, "active"), ("01", "7", 1, "active"), ("02", "8", 0, "active"), ("03", "9", 0, "active"),
        ("ff", "9", 4, "removed")]
    assert rows[1].prediction_digest == b2.digest() and rows[1].project_id == "3"
    # the same push again with the new receipt changes nothing
    assert classify_items([a, b2, c, d], placed, rows)[:2] == ([], [])


def test_shape_points_of_real_masks(gt_masks: dict[str, np.ndarray]) -> None:
    for name, m in gt_masks.items():
        (points,) = shape_points(m, "mask")
        h, w = m.shape
        assert np.array_equal(sdk.decode_mask(points, image_width=w, image_height=h), m > 0), name
        polys = shape_points(m, "polygon")
        filled = np.zeros((h, w), bool)
        for p in polys:
            filled |= polygon_to_mask(p, h, w)
        assert np.array_equal(filled & (m > 0), m > 0), name  # outlines kept; holes become filled
    assert shape_points(np.zeros((3, 3), np.uint8), "mask") == []


# --------------------------------------------------------------------------- retries


def test_with_retries_recovers_then_gives_up() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ApiException(status=503, reason="busy")
        return "ok"

    assert with_retries(flaky, "t", url="u", max_retries=4, backoff_s=0.5, sleep=sleeps.append) == "ok"
    assert sleeps == [0.5, 1.0]

    def down() -> None:
        raise ConnectionRefusedError("nope")

    sleeps.clear()
    with pytest.raises(UserError, match=r"CVAT at http://x is unreachable: ping failed 3 times \(cannot connect"):
        with_retries(down, "ping", url="http://x", max_retries=2, backoff_s=0.1, sleep=sleeps.append)
    assert sleeps == [0.1, 0.2]


def test_with_retries_does_not_retry_what_it_must_not() -> None:
    calls: list[int] = []

    def bad_request() -> None:
        calls.append(1)
        raise ApiException(status=400, reason="bad")

    with pytest.raises(UserError, match="CVAT at u: t failed with HTTP 400 bad"):
        with_retries(bad_request, "t", url="u", max_retries=3, backoff_s=0, sleep=lambda s: None)
    assert len(calls) == 1

    def bug() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        with_retries(bug, "t", url="u", max_retries=3, backoff_s=0, sleep=lambda s: None)

    def denied() -> None:
        raise ApiException(status=401, reason="no")

    with pytest.raises(UserError, match="HTTP 401"):
        with_retries(denied, "login", url="u", max_retries=3, backoff_s=0, sleep=lambda s: None)

    def server_error() -> None:
        calls.append(1)
        raise ApiException(status=500, reason="oops")

    calls.clear()
    with pytest.raises(UserError, match="not repeated automatically"):  # a failed POST is not blindly repeated
        with_retries(server_error, "create", url="u", max_retries=3, backoff_s=0, idempotent=False,
                     sleep=lambda s: None)
    assert len(calls) == 1
    assert transient_reason(ConnectionRefusedError(), idempotent=False) is not None
    assert transient_reason(ConnectionResetError(), idempotent=False) is None
    assert transient_reason(ValueError(), idempotent=True) is None


class _Server:
    """A local TCP server: ``mode`` ``drop`` closes every connection at once, ``503`` answers HTTP 503,
    ``hang`` reads the request and never answers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            with conn:
                if self.mode == "hang":
                    with contextlib.suppress(OSError):
                        conn.settimeout(3)
                        conn.recv(65536)
                        conn.recv(65536)  # waits until the client gives up and closes
                    continue
                if self.mode == "503":
                    conn.settimeout(2)
                    with contextlib.suppress(OSError):
                        conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    s = _Server(request.param)
    yield s
    s.close()


def _connection(url: str, retries: int = 2, timeout_s: float = 5) -> CvatConnection:
    params = CvatParams(url=url, url_env="", max_retries=retries, backoff_s=0.01, timeout_s=timeout_s)
    return CvatConnection(params, "alice", "pw")


def test_refused_connection_is_retried_then_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    conn = _connection(f"http://127.0.0.1:{port}")
    with pytest.raises(UserError, match=rf"CVAT at http://127.0.0.1:{port} is unreachable: version check .* 3 times"):
        conn.client()
    assert caplog.text.count("retry") == 2


@pytest.mark.parametrize("server", ["drop", "503"], indirect=True)
def test_dropping_or_failing_server_is_retried_a_bounded_number_of_times(server: _Server) -> None:
    conn = _connection(f"http://127.0.0.1:{server.port}", retries=3)
    with pytest.raises(UserError, match="failed 4 times") as info:
        conn.client()
    assert server.accepted == 4  # 1 try + 3 retries, no hidden retries inside the SDK
    assert ("HTTP 503" in str(info.value)) == (server.mode == "503")


def test_server_version_is_kept_in_the_receipt_file(tmp_path: Path) -> None:
    from pipeline.annotation.configured import read_receipt, write_receipt

    a, b = _item(1, tmp_path), _item(2, tmp_path)
    old = [ReceiptRow("00000000000000ff", "cvat", "3", "9", 4, "x", "m0", server_version="2.20.1")]
    rows, _ = receipt_rows([a, b], {a.item_id: (5, 0), b.item_id: (5, 1)}, 3, old,
                           {a.item_id: a.digest(), b.item_id: b.digest()}, "2.22.0")
    assert [r.server_version for r in rows] == ["2.22.0", "2.22.0", "2.20.1"]
    path = tmp_path / "receipt.parquet"
    write_receipt(path, rows)
    assert read_receipt(path) == rows
    # a receipt written before the column existed still reads (version unknown)
    df = io.read_parquet(path).drop(columns=["server_version"])
    io.write_parquet(path, df)
    assert {r.server_version for r in read_receipt(path)} == {""}


@pytest.mark.parametrize("server", ["hang"], indirect=True)
def test_a_server_that_never_answers_times_out_and_is_retried(server: _Server) -> None:
    conn = _connection(f"http://127.0.0.1:{server.port}", retries=1, timeout_s=0.3)
    with pytest.raises(UserError, match=r"failed 2 times \(ReadTimeoutError\)"):
        conn.client()
    assert server.accepted == 2


def test_plan_replacement_keeps_frames_people_edited(tmp_path: Path) -> None:
    a, b, c = (_item(i, tmp_path) for i in range(3))
    placed = {a.item_id: (7, 0), b.item_id: (7, 1), c.item_id: (7, 2)}
    shapes = [(10, 0, "auto"), (11, 0, "auto"),      # frame 0: only our shapes -> replaced
              (12, 1, "auto"), (13, 1, "manual"),    # frame 1: a person drew on it -> kept
              (14, 3, "auto")]                       # frame 3: not a changed item -> untouched
    todo, kept, stale = plan_replacement([c, b, a], placed, shapes)
    assert [it.item_id for it in todo] == [a.item_id, c.item_id]  # frame 2 has no shape: just add
    assert [it.item_id for it in kept] == [b.item_id]
    assert stale == [10, 11]
    _, kept2, _ = plan_replacement([a], placed, [(20, 0, "semi-auto")])  # a person edited our auto shape
    assert kept2 == [a]


def test_server_version_check() -> None:
    from pipeline.annotation.cvat import check_server_version

    assert check_server_version("2.80.3", "2.20", "u") is True
    assert check_server_version("2.22.0", "2.20", "u") is False  # older than the SDK: works, SDK check skipped
    assert check_server_version("2.20.0", "2.20", "u") is False
    with pytest.raises(UserError, match=r"runs version 2\.11\.1; maskloop needs 2\.20 or newer"):
        check_server_version("2.11.1", "2.20", "http://cvat")
    with pytest.raises(UserError, match="not a version number"):
        check_server_version("dev", "2.20", "http://cvat")
