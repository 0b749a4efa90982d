"""Item 10 of issue 15: after a lost receipt, a CVAT push rewrites nothing identical and warns about nothing false.

Before: push deleted and re-created identical shapes on frames nobody edited (frames of completed jobs too,
bumping their dates), wrote an empty ``prediction_digest`` for an edited frame, and warned on every later push that
a changed pre-annotation was not sent. No CVAT server runs here: the planning logic is tested as a pure function and
the push flow against a small in-memory stand-in of the cvat-sdk objects it calls (the real-server round trip stays
in tests/cvat/test_integration.py, run whenever CVAT_URL is set). Also: the docs and the errors agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pipeline.annotation.base import PushItem
from pipeline.annotation.cvat import (
    AUTO_SOURCE,
    CvatBackend,
    CvatParams,
    ServerShape,
    plan_sync,
    shape_points,
    shape_signature,
)
from pipeline.core import io
from tests.conftest import REPO

LABEL = 5


def _item(i: int, tmp: Path, width: int = 3) -> PushItem:
    mask = np.zeros((6, 8), np.uint8)
    mask[1:5, 1 : 1 + width + i % 3] = 255
    path = tmp / f"m{i}_{width}.png"
    io.write_png(path, mask)
    return PushItem(item_id=f"{i:016x}", image_path=tmp / f"p{i}.jpg", width=8, height=6, mask_path=path,
                    model_version="m1", score=0.5, uncertainty=0.5)


def _expected(it: PushItem) -> list[tuple[str, int, tuple[float, ...]]]:
    mask = io.read_mask(it.mask_path)  # type: ignore[arg-type]
    return [shape_signature("mask", LABEL, pts) for pts in shape_points(mask, "mask")]


# ------------------------------------------------------------------ the pure plan


def test_plan_sync_table(tmp_path: Path) -> None:
    a, b, c, d, e = (_item(i, tmp_path) for i in range(5))
    placed = {it.item_id: (7, n) for n, it in enumerate((a, b, c, d, e))}
    sig = {it.item_id: _expected(it)[0] for it in (a, b, c, d, e)}

    def shape(sid: int, frame: int, source: str, it: PushItem, other: bool = False) -> ServerShape:
        t, lbl, pts = sig[it.item_id]
        return ServerShape(sid, frame, source, t, lbl, (*pts[:-1], 99.0) if other else pts)

    shapes = [
        shape(1, 0, AUTO_SOURCE, a),               # a: exactly the pre-annotation          -> identical
        shape(2, 1, AUTO_SOURCE, b, other=True),   # b: auto but different, frame in a completed job
        shape(3, 2, "manual", c),                  # c: a person drew on it
        shape(4, 3, AUTO_SOURCE, d, other=True),   # d: auto, differs, nobody touched it    -> replaced
        shape(5, 4, "semi-auto", e),               # e: a person edited our shape
    ]
    expected = {it.item_id: _expected(it) for it in (a, b, c, d, e)}
    # receipt lost: nothing is known
    plan = plan_sync([e, d, c, b, a], placed, shapes, expected, known=set(), locked_frames={1})
    assert [it.item_id for it in plan.identical] == [a.item_id]
    assert [it.item_id for it in plan.replace] == [d.item_id] and plan.stale == (4,)
    assert [it.item_id for it in plan.adopted] == [b.item_id, c.item_id, e.item_id]
    assert plan.kept == ()  # no false warning
    # the same frames when the receipt knew them: a real change on a frame people edited is kept (and warned); a
    # real change on untouched auto shapes is sent, also in a completed job (as before)
    plan = plan_sync([e, d, c, b, a], placed, shapes, expected, known={b.item_id, c.item_id, e.item_id},
                     locked_frames={1})
    assert [it.item_id for it in plan.kept] == [c.item_id, e.item_id] and plan.adopted == ()
    assert [it.item_id for it in plan.replace] == [b.item_id, d.item_id] and plan.stale == (2, 4)
    # an empty frame just gets its shapes
    plan = plan_sync([a], placed, [], expected, known=set())
    assert plan.replace == (a,) and plan.stale == ()
    # identical means the same multiset of shapes (a second copy is not identical)
    plan = plan_sync([a], placed, [shape(1, 0, AUTO_SOURCE, a), shape(9, 0, AUTO_SOURCE, a)], expected, set())
    assert plan.replace == (a,) and plan.stale == (1, 9)


# ------------------------------------------------------------------ the push flow


@dataclass
class FakeTask:
    id: int
    frames: list[str]
    shapes: list[SimpleNamespace] = field(default_factory=list)
    jobs: list[SimpleNamespace] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    next_id: int = 1000

    @property
    def size(self) -> int:
        return len(self.frames)

    @property
    def name(self) -> str:
        return f"maskloop {self.frames[0][:16]}"

    def get_frames_info(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=n, width=8, height=6) for n in self.frames]

    def get_annotations(self) -> SimpleNamespace:
        return SimpleNamespace(shapes=list(self.shapes))

    def get_jobs(self) -> list[SimpleNamespace]:
        return list(self.jobs)

    def remove_annotations(self, ids: list[int]) -> None:
        self.calls.append(f"remove {sorted(ids)}")
        self.shapes = [s for s in self.shapes if s.id not in ids]

    def update_annotations(self, data: Any, action: Any) -> None:
        self.calls.append(f"create {len(data.shapes)}")
        for r in data.shapes:
            self.next_id += 1
            self.shapes.append(SimpleNamespace(id=self.next_id, frame=r.frame, source=r.source, type=r.type,
                                               label_id=r.label_id, points=list(r.points)))


class FakeConn:
    server_version = "2.23.0"

    def __init__(self, project: Any) -> None:
        self.project = project

    def client(self) -> Any:
        return SimpleNamespace(projects=SimpleNamespace(list=lambda: [self.project]))

    def retry(self, what: str, fn: Any, idempotent: bool = True) -> Any:
        return fn()


def _server(items: list[PushItem], tmp: Path) -> tuple[CvatBackend, FakeTask]:
    task = FakeTask(7, [f"{it.item_id}.jpg" for it in items])
    project = SimpleNamespace(id=3, name="maskloop", get_labels=lambda: [SimpleNamespace(name="foreground", id=LABEL)],
                              get_tasks=lambda: [task])
    backend = CvatBackend(CvatParams(), FakeConn(project), None)  # type: ignore[arg-type]
    return backend, task


def test_push_after_a_lost_receipt_rewrites_nothing_identical(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    a, b, c, d = (_item(i, tmp_path) for i in range(4))
    backend, task = _server([a, b, c, d], tmp_path)
    # first push (receipt written), then the receipt is lost
    first = backend.push([a, b, c, d], [])
    assert task.calls == ["create 4"]
    shapes = {s.frame: s for s in task.shapes}
    # people finish job 1 (frame 1, untouched shapes) and edit frame 2
    task.jobs = [SimpleNamespace(state="completed", start_frame=1, stop_frame=1),
                 SimpleNamespace(state="in progress", start_frame=0, stop_frame=0),
                 SimpleNamespace(state="in progress", start_frame=2, stop_frame=3)]
    shapes[2].source = "manual"
    task.calls.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.annotation.cvat"):
        rebuilt = backend.push([a, b, c, d], [])  # no receipt
    assert task.calls == []  # nothing deleted, nothing re-created
    assert all(r.prediction_digest for r in rebuilt.receipt)  # no empty digest, edited frame included
    assert [r.prediction_digest for r in rebuilt.receipt] == [r.prediction_digest for r in first.receipt]
    assert "were not sent" not in caplog.text
    assert rebuilt.created == 0 and rebuilt.updated == 0 and rebuilt.unchanged == 4
    # later pushes: nothing to do, no warning
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.annotation.cvat"):
        again = backend.push([a, b, c, d], list(rebuilt.receipt))
    assert task.calls == [] and "were not sent" not in caplog.text and again.unchanged == 4
    # a real change: frame 3 (nobody touched it) is replaced, frame 2 (edited) is kept with a warning
    c2, d2 = _item(2, tmp_path, width=1), _item(3, tmp_path, width=1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.annotation.cvat"):
        out = backend.push([a, b, c2, d2], list(again.receipt))
    assert task.calls == [f"remove [{shapes[3].id}]", "create 1"]
    assert "1 changed pre-annotations were not sent" in caplog.text and c2.item_id in caplog.text
    assert out.updated == 1
    rows = {r.item_id: r for r in out.receipt}
    assert rows[d2.item_id].prediction_digest == d2.digest()
    assert rows[c2.item_id].prediction_digest == c.digest()  # still what is on the server


def test_docs_and_errors_agree() -> None:
    """docs/cvat.md quotes the messages the code really gives (missing credentials; refused login incl. HTTP 400)."""
    from cvat_sdk.api_client.exceptions import ApiException

    from pipeline.annotation.cvat import CvatConnection, with_retries
    from pipeline.core.errors import ConfigError, UserError

    doc = " ".join((REPO / "docs" / "cvat.md").read_text(encoding="utf-8").split())
    with pytest.raises(ConfigError) as missing:
        CvatConnection(CvatParams())
    assert str(missing.value).startswith("CVAT credentials are missing: set CVAT_USERNAME and CVAT_PASSWORD")
    assert "*CVAT credentials are missing: set CVAT_USERNAME and CVAT_PASSWORD" in doc
    for status in (400, 401):
        def refuse(status: int = status) -> None:
            raise ApiException(status=status, reason="no")

        with pytest.raises(UserError) as refused:
            with_retries(refuse, "login", url="URL", max_retries=0, backoff_s=0)
        assert str(refused.value).startswith(f"CVAT at URL refused login (HTTP {status})")
    assert "*CVAT at URL refused login (HTTP 400 or 401)*" in doc
