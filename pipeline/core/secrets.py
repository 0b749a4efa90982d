"""Secrets (server tokens, passwords) from the environment or an untracked ``.env`` file; never logged.

Lookup order for a name: the process environment, then ``.env`` in the current directory (``KEY=value``
lines; ``#`` comments, optional ``export`` prefix and quotes allowed). A missing secret is a
:class:`~pipeline.core.errors.ConfigError` that names the variable, never a value.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

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
    return value
