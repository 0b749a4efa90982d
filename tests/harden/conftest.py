"""Fixtures the hardening tests share with other folders."""

from __future__ import annotations

from tests.dashboard.conftest import app
from tests.labelstudio.conftest import ls_project_factory, ls_server

__all__ = ["app", "ls_project_factory", "ls_server"]
