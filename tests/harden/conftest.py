"""Fixtures the hardening tests share with other folders."""

from __future__ import annotations

from tests.dashboard.conftest import app

__all__ = ["app"]
