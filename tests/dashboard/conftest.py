"""Fixtures for the dashboard tests: a synthetic project and an AppTest bound to it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dashboard.synth import SynthProject, make_project

APP = Path(__file__).resolve().parents[2] / "dashboards" / "review.py"


@pytest.fixture
def synth(tmp_path: Path) -> SynthProject:
    return make_project(tmp_path / "proj", n=12)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    """``app(project, reviewer="tester")`` -> a started ``AppTest`` of the review dashboard on that project."""
    from streamlit.testing.v1 import AppTest

    def start(project: SynthProject, reviewer: str = "tester") -> AppTest:
        monkeypatch.setenv("MASKLOOP_PARAMS", str(project.params))
        monkeypatch.setenv("MASKLOOP_REVIEWER", reviewer)
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        return at

    return start
