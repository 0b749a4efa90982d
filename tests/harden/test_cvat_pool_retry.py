"""Issue 15 item 8: CVAT requests go through the one HTTP layer of the annotation backends.

cvat-sdk's urllib3 pool carries :func:`pipeline.annotation.http.make_retry` (the policy Label Studio's session
uses): proven offline against a loopback HTTP server (no CVAT server exists here) — a GET answered 503 is
repeated by the SDK's pool, a POST answered 503 never is, and the project's wrapper repeats nothing on top.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipeline.annotation.cvat import CvatConnection, CvatParams
from pipeline.annotation.http import IDEMPOTENT_METHODS, RETRY_STATUSES, make_retry
from pipeline.core.errors import UserError


class Script:
    """What the loopback server answers: per method, a list of statuses (the last one repeats)."""

    def __init__(self) -> None:
        self.statuses: dict[str, list[int]] = {}
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def next_status(self, method: str, path: str) -> int:
        with self.lock:
            self.seen.append((method, path))
            queue = self.statuses.get(method, [200])
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.seen if m == method)


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status = script.next_status(self.command, self.path)
            body = json.dumps({"version": "2.23.0"} if status == 200 else {"detail": "busy"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def connection(url: str, monkeypatch: pytest.MonkeyPatch, max_retries: int = 3) -> CvatConnection:
    params = CvatParams(url=url, max_retries=max_retries, backoff_s=0.0, timeout_s=5.0)
    monkeypatch.delenv(params.url_env, raising=False)
    return CvatConnection(params, token="test-token-not-real")


def test_the_sdk_pool_carries_the_shared_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = connection("http://127.0.0.1:9", monkeypatch, max_retries=3)
    client = conn.build_client()
    try:
        pool = client.api_client.rest_client.pool_manager
        retry = pool.connection_pool_kw["retries"]
        assert retry is client.api_client.configuration.retries
        shared = make_retry(conn.params.http(), "CVAT")
        assert type(retry).__module__ == type(shared).__module__ == "pipeline.annotation.http"
        assert retry.allowed_methods == IDEMPOTENT_METHODS
        assert "POST" not in retry.allowed_methods and "PATCH" not in retry.allowed_methods
        assert tuple(retry.status_forcelist) == RETRY_STATUSES
        for field in ("total", "connect", "read", "status", "other", "backoff_factor", "respect_retry_after_header"):
            assert getattr(retry, field) == getattr(shared, field), field
        assert retry.total == 3
        # the per-host pool the SDK really uses has it too (not only the kwargs for future pools)
        host_pool = pool.connection_from_url("http://127.0.0.1:9/api/server/about")
        assert host_pool.retries is retry
        assert host_pool.timeout.read_timeout == 5.0
    finally:
        client.close()


def test_get_503_then_200_is_retried_by_the_sdk_pool(server: tuple[str, Script],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = server
    script.statuses["GET"] = [503, 200]
    conn = connection(url, monkeypatch)
    client = conn.build_client()
    try:
        # through the SDK's generated API and the project's wrapper, which itself repeats nothing
        version = conn.retry("version check", lambda: conn._about(client))
        assert version == "2.23.0"
        assert script.seen == [("GET", "/api/server/about"), ("GET", "/api/server/about")]
    finally:
        client.close()


def test_get_503_forever_gives_up_after_max_retries(server: tuple[str, Script],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = server
    script.statuses["GET"] = [503]
    conn = connection(url, monkeypatch, max_retries=2)
    client = conn.build_client()
    try:
        with pytest.raises(UserError, match=r"is unreachable: version check failed 3 times \(HTTP 503\)"):
            conn.retry("version check", lambda: conn._about(client))
        assert script.count("GET") == 3  # 1 + max_retries, not (1 + max_retries) ** 2: one layer retries
    finally:
        client.close()


def test_post_and_patch_503_are_never_repeated(server: tuple[str, Script],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = server
    script.statuses["POST"] = [503, 200]
    script.statuses["PATCH"] = [503, 200]
    conn = connection(url, monkeypatch, max_retries=4)
    client = conn.build_client()
    rest = client.api_client.rest_client
    try:
        with pytest.raises(UserError, match=r"HTTP 503.*not repeated automatically"):
            conn.retry("task creation", lambda: rest.POST(f"{url}/api/tasks", body={"name": "t"}),
                       idempotent=False)
        assert script.count("POST") == 1
        with pytest.raises(UserError, match=r"HTTP 503.*not repeated automatically"):
            conn.retry("shape upload", lambda: rest.PATCH(f"{url}/api/tasks/1/annotations", body={}),
                       idempotent=False)
        assert script.count("PATCH") == 1
        # a PUT (idempotent) answered 503 once is repeated by the pool
        script.statuses["PUT"] = [503, 200]
        assert rest.PUT(f"{url}/api/tasks/1/annotations", body={}).status == 200
        assert script.count("PUT") == 2
    finally:
        client.close()


def test_refused_connection_is_retried_for_any_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing was sent, so even a POST may be retried; the pool does it, then one clear message."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = connection(f"http://127.0.0.1:{port}", monkeypatch, max_retries=2)
    client = conn.build_client()
    rest = client.api_client.rest_client
    try:
        with pytest.raises(UserError, match=r"unreachable: login failed 3 times \(cannot connect"):
            conn.retry("login", lambda: rest.POST(f"http://127.0.0.1:{port}/api/auth/login", body={}))
    finally:
        client.close()


def test_connect_through_the_project_code_retries_reads_not_the_login(server: tuple[str, Script],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """CvatConnection.client(): the version check (GET) survives a 503, the login (POST) answered 503 is sent once
    and reported in one sentence without the password."""
    url, script = server
    script.statuses["GET"] = [502, 200]
    script.statuses["POST"] = [503, 200]
    params = CvatParams(url=url, max_retries=3, backoff_s=0.0, timeout_s=5.0)
    monkeypatch.delenv(params.url_env, raising=False)
    conn = CvatConnection(params, username="bob", password="pw-not-real-1234")
    with pytest.raises(UserError, match=r"login failed with HTTP 503.*not repeated automatically") as failed:
        conn.client()
    assert "pw-not-real-1234" not in str(failed.value)
    assert conn.server_version == "2.23.0"
    assert [m for m, _ in script.seen] == ["GET", "GET", "POST"]
