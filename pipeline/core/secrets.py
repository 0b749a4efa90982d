"""Secrets (server tokens, passwords) from the environment or an untracked ``.env`` file; never logged.

Lookup order for a name: the process environment, then ``.env`` in the current directory (``KEY=value``
lines; ``#`` comments, optional ``export`` prefix and quotes allowed). A missing secret is a
:class:`~pipeline.core.errors.ConfigError` that names the variable, never a value.

Every secret read here is remembered, and :func:`redact` removes it (and URL credentials, ``Authorization``
values, ``password``/``token``/``key`` fields) from any text before it is printed, logged or written: the CLI
runs its error messages and every log record through it, the runner every item error.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)

DOTENV = Path(".env")


def read_dotenv(path: Path = DOTENV) -> dict[str, str]:
    """``KEY=value`` pairs of a ``.env`` file (empty when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{lineno}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def get_secret(name: str, what: str = "", dotenv: Path = DOTENV, required: bool = True) -> str:
    """The value of secret ``name`` from the environment or ``.env`` ("" when absent and not ``required``)."""
    if not name:
        raise ConfigError(f"no environment variable name given for {what or 'a secret'}")
    value = os.environ.get(name)
    source = "environment"
    if not value:
        value = read_dotenv(dotenv).get(name)
        source = str(dotenv)
    if not value:
        if required:
            raise ConfigError(f"{what or 'a secret'} is missing: set the environment variable {name} "
                              f"(or add {name}=... to an untracked .env file)")
        return ""
    log.debug("using %s from the %s", name, source)  # the name only, never the value
    register_secret(value)
    return value


# --------------------------------------------------------------------------- redaction

REDACTED = "***"

_known: set[str] = set()
_known_lock = threading.Lock()

_URL_CREDS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<creds>[^/\s@:]+(?::[^/\s@]*)?)@")
_AUTH_HEADER = re.compile(r"(?i)(?P<head>\b(?:authorization|proxy-authorization|x-api-key|cookie|set-cookie)"
                          r"['\"]?\s*[:=]\s*['\"]?)(?P<value>[^'\"\r\n,}]+)")
_SCHEME_TOKEN = re.compile(r"(?i)\b(?P<scheme>token|bearer|basic|jwt)\s+(?P<value>(?=[^\s]*\d)[A-Za-z0-9._~+/=-]{8,})")
_SECRET_FIELD = re.compile(
    r"(?i)(?P<head>['\"]?\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?token|refresh[_-]?token|"
    r"access|refresh|key|sessionid|csrftoken|client[_-]?secret)\b['\"]?\s*[:=]\s*['\"]?)"
    r"(?P<value>[^'\"\s,&}\]]+)"
)


def register_secret(value: str) -> None:
    """Remember a secret value (a token, a password) so :func:`redact` removes it wherever it appears."""
    if value and len(value) >= 4:
        with _known_lock:
            _known.add(value)


def redact(text: object, extra: Iterable[str] = ()) -> str:
    """``text`` without secrets: registered secret values, URL credentials (``user:password@``), the values of
    ``Authorization``-like headers, ``Token``/``Bearer``/``Basic`` credentials and ``password``/``token``/
    ``key``/``secret``... fields of JSON, form or query strings, each replaced by ``***``."""
    out = str(text)
    with _known_lock:
        values = sorted({*_known, *(e for e in extra if e and len(e) >= 4)}, key=len, reverse=True)
    for value in values:
        out = out.replace(value, REDACTED)
    out = _URL_CREDS.sub(lambda m: f"{m['scheme']}{REDACTED}@", out)
    out = _AUTH_HEADER.sub(lambda m: f"{m['head']}{REDACTED}", out)
    out = _SCHEME_TOKEN.sub(lambda m: f"{m['scheme']} {REDACTED}", out)
    out = _SECRET_FIELD.sub(lambda m: f"{m['head']}{REDACTED}", out)
    return out


def safe_url(url: str) -> str:
    """``url`` without ``user:password@`` (for messages); the URL itself is used unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{REDACTED}@{host}", parts.path, parts.query, parts.fragment))


class RedactingFilter(logging.Filter):
    """A logging filter that runs every record's final message through :func:`redact` (install it on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's problem, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
