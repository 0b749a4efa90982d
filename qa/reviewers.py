"""Reviewer sign-in (for the review dashboard and `maskloop review`): per-reviewer tokens whose hashes live in a
file outside git.

The file (default ``.maskloop/review_users.json`` next to ``params.yaml``; ``.maskloop/`` is git-ignored) maps a
reviewer name to the SHA-256 of their token. Tokens are 32 random bytes (``secrets.token_urlsafe``), so a plain
hash is enough (nothing to brute-force) and the file can be read by the team without revealing any token. It is
written with mode 0600 and managed by ``maskloop review-users add|list|remove``; a token is shown once, on
``add``.

When the file lists at least one reviewer the dashboard shows nothing but a sign-in form until a valid token is
entered, and every decision is recorded under the signed-in name. ``maskloop review`` refuses to bind beyond
loopback without it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_USERS_FILE = Path(".maskloop") / "review_users.json"
ENV_USERS_FILE = "MASKLOOP_REVIEW_USERS"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")


class UsersFileError(ValueError):
    """The users file is unreadable or malformed (the message names it)."""


@dataclass(frozen=True)
class Reviewer:
    name: str
    token_sha256: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise ValueError(f"reviewer name {name!r} must be 1-64 characters: letters, digits, space, . _ @ -")
    return name


def read_users(path: Path) -> dict[str, Reviewer]:
    """Reviewers in ``path`` (empty when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        users = data["users"]
        out = {str(n): Reviewer(str(n), str(u["token_sha256"])) for n, u in users.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsersFileError(f"{path}: not a review users file ({type(exc).__name__}: {exc}); "
                             "manage it with `maskloop review-users`") from exc
    return dict(sorted(out.items()))


def write_users(path: Path, users: dict[str, Reviewer]) -> None:
    """Atomically write ``users`` to ``path`` with mode 0600 (hashes only, never a token)."""
    from pipeline.core import io

    text = json.dumps({"users": {n: {"token_sha256": u.token_sha256} for n, u in sorted(users.items())}},
                      indent=2, sort_keys=True) + "\n"
    io.write_text(path, text)
    os.chmod(path, 0o600)


def add_user(path: Path, name: str) -> str:
    """Add (or give a new token to) reviewer ``name``; returns the token, which is stored only as a hash."""
    name = check_name(name)
    token = secrets.token_urlsafe(32)
    users = read_users(path)
    users[name] = Reviewer(name, hash_token(token))
    write_users(path, users)
    return token


def remove_user(path: Path, name: str) -> bool:
    users = read_users(path)
    if name not in users:
        return False
    del users[name]
    write_users(path, users)
    return True


def authenticate(users: dict[str, Reviewer], token: str) -> str | None:
    """The name of the reviewer whose token this is (constant-time comparison), else None."""
    token = token.strip()
    if not token:
        return None
    digest = hash_token(token)
    found = None
    for user in users.values():
        if hmac.compare_digest(user.token_sha256, digest):
            found = user.name
    return found


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
