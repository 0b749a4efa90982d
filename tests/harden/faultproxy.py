"""A loopback HTTP proxy that forwards every request to a real server and misbehaves on chosen ones.

``FaultProxy(upstream, faults)`` listens on a free 127.0.0.1 port; each fault is ``(method, path_fragment, kind,
times)``: the first ``times`` matching requests are forwarded (the server acts on them) and then the answer is
``"drop"``ped (connection closed without a response) or replaced by a ``"502"``. ``hits`` counts what happened.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "content-encoding"}


@dataclass
class Fault:
    method: str
    fragment: str
    kind: str  # "drop" | "502" | "echo400" (a 400 whose body echoes the request's headers, like some proxies)
    times: int = 1
    hits: int = 0


@dataclass
class FaultProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        up = urlsplit(self.upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                fault = proxy._match(self.command, self.path)
                proxy.log.append(f"{self.command} {self.path} -> {resp.status}{' ' + fault.kind if fault else ''}")
                self.close_connection = True
                if fault is not None and fault.kind == "drop":
                    return  # the server acted; the client never hears about it
                status, payload = (resp.status, data)
                if fault is not None and fault.kind == "502":
                    status, payload = 502, b"Bad Gateway"
                elif fault is not None and fault.kind == "echo400":
                    echo = "".join(f"{k}: {v}\n" for k, v in self.headers.items())
                    status, payload = 400, f"bad request {self.path}\n{echo}".encode()
                self.send_response(status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP and fault is None:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _match(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.method == method and f.fragment in path and f.hits < f.times:
                    f.hits += 1
                    return f
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
