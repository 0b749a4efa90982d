"""The one HTTP layer of the annotation backends (Label Studio over ``requests``, CVAT over cvat-sdk's urllib3).

Retries (docs/limits.md):

- **Retried** (``max_retries`` times, exponential backoff ``backoff_s * 2**k``, ``Retry-After`` honoured):
  failures to connect (nothing was sent, so any method is safe), and for the idempotent methods only
  (:data:`IDEMPOTENT_METHODS`: GET, HEAD, OPTIONS, PUT, DELETE, TRACE) also read timeouts, dropped connections
  and HTTP 429/500/502/503/504.
- **Never blindly repeated**: POST and PATCH, which create or change something. After an ambiguous failure of
  such a request (the server may have acted, the answer was lost) the caller reads back what exists and sends
  only what is missing (Label Studio's bulk import: tasks by ``data.item_id``; CVAT's tasks: by frame names).

Secrets: :func:`redact` removes tokens, passwords and URL credentials from any text before it is printed,
logged or written; every message built here goes through it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pipeline.core.secrets import REDACTED, redact, register_secret, safe_url

__all__ = ["IDEMPOTENT_METHODS", "REDACTED", "RETRY_STATUSES", "AmbiguousRequest", "HttpParams", "is_idempotent",
           "make_retry", "make_session", "may_have_arrived", "redact", "register_secret", "safe_url"]

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class HttpParams:
    """The retry/timeout settings both backends share (``timeout_s``, ``max_retries``, ``backoff_s`` of
    ``annotation.labelstudio`` / ``annotation.cvat``)."""

    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_s < 0 or self.timeout_s <= 0:
            raise ValueError("max_retries and backoff_s must be >= 0 and timeout_s > 0")


def make_retry(params: HttpParams, server: str = "server") -> Any:
    """The urllib3 ``Retry`` policy of every annotation-server request (see the module docstring); each retry is
    logged as "<server> <METHOD> <path> failed (<why>); retry k/n in s"."""
    from urllib3.util.retry import Retry

    class LoggedRetry(Retry):  # type: ignore[misc]
        def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                      error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> Any:
            new = super().increment(method, url, response, error, _pool, _stacktrace)
            why = (type(error).__name__ if error is not None
                   else f"HTTP {getattr(response, 'status', '?')}")
            path = urlsplit(url or "").path or (url or "")
            log.warning("%s %s %s failed (%s); retry %d/%d in %.1f s", server, method, path, why, len(new.history),
                        params.max_retries, new.get_backoff_time())
            return new

    n = params.max_retries
    return LoggedRetry(
        total=n, connect=n, read=n, status=n, other=0, redirect=5,
        allowed_methods=IDEMPOTENT_METHODS, status_forcelist=RETRY_STATUSES, backoff_factor=params.backoff_s,
        respect_retry_after_header=True, raise_on_status=False, raise_on_redirect=True,
    )


def make_session(params: HttpParams, server: str = "server") -> Any:
    """A ``requests.Session`` whose every request follows :func:`make_retry`."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(max_retries=make_retry(params, server))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def is_idempotent(method: str) -> bool:
    return method.upper() in IDEMPOTENT_METHODS


class AmbiguousRequest(Exception):
    """A request that creates or changes something failed after it may have reached the server (answer lost, read
    timeout, HTTP 5xx): the caller must read back what exists before sending anything again."""

    def __init__(self, method: str, path: str, why: str) -> None:
        self.method, self.path, self.why = method, path, why
        super().__init__(f"{method} {path}: {why}")


def may_have_arrived(exc: BaseException) -> bool:
    """True when the request may have reached the server (an ambiguous failure: read timeout, dropped
    connection after sending); False when it certainly never left (connection refused, DNS, connect timeout)."""
    import requests
    import urllib3.exceptions as u3

    inner: Any = exc
    seen = 0
    while inner is not None and seen < 6:
        if isinstance(inner, u3.MaxRetryError):
            inner = inner.reason
        elif isinstance(inner, requests.exceptions.ConnectTimeout | u3.ConnectTimeoutError | u3.NewConnectionError
                        | u3.NameResolutionError | ConnectionRefusedError):
            return False
        elif isinstance(inner, requests.RequestException) and inner.args and isinstance(inner.args[0], BaseException):
            inner = inner.args[0]
        else:
            break
        seen += 1
    return True


# redaction lives with the secrets (pipeline.core.secrets); re-exported here for the backends
