"""Errors meant for people: the CLI prints their message as one sentence, without a traceback."""

from __future__ import annotations


class UserError(RuntimeError):
    """A problem the user can fix (missing checkpoint, unreachable server, bad export file...).

    The message must name the file/item/setting and the problem, and never contain a secret.
    """


class ConfigError(UserError):
    """A setting in params.yaml or the environment is missing or invalid."""
