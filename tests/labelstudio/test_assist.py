"""`maskloop assist` connected to the REAL Label Studio server by `maskloop push`, answering interactive
requests made through Label Studio's own API (``/api/ml/<id>/interactive-annotating``), on real ECSSD photos.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from pipeline.annotation.brush import rle_to_mask
from tests.conftest import free_port
from tests.labelstudio.conftest import TOKEN, AssistProcess, LSProject, Server, enable_assist, interior

pytestmark = pytest.mark.labelstudio


@pytest.fixture
def assisted(ls_project_factory: Any) -> Iterator[tuple[LSProject, AssistProcess]]:
    project = ls_project_factory("assist-it", names=("0001", "0005"))
    port = free_port()
    enable_assist(project, port)
    server = AssistProcess(project, port)
    try:
        yield project, server
    finally:
        server.stop()


def keypoint(xy: tuple[int, int], shape: tuple[int, int], positive: bool) -> dict[str, Any]:
    h, w = shape
    return {"original_width": w, "original_height": h, "image_rotation": 0, "from_name": "assist_click",
            "to_name": "image", "type": "keypointlabels", "origin": "manual", "is_positive": positive,
            "value": {"x": (xy[0] + 0.5) * 100 / w, "y": (xy[1] + 0.5) * 100 / h, "width": 0.5,
                      "keypointlabels": ["assist"]}}


def test_push_connects_assist_and_label_studio_gets_refined_masks(ls_server: Server,
                                                                   assisted: tuple[LSProject, AssistProcess]) -> None:
    project, assist = assisted
    project.run("push")
    ls_project = ls_server.project(project.title)
    pid = ls_project["id"]
    config = ls_project["label_config"]
    assert 'smart="true"' in config and "KeyPointLabels" in config and "RectangleLabels" in config
    backends = ls_server.api("GET", "/api/ml", params={"project": pid}).json()
    assert [(b["url"], b["is_interactive"], b["state"]) for b in backends] == [(assist.url, True, "CO")]
    tasks = ls_server.tasks(pid)
    assert len(tasks) == 2 and all(t["total_predictions"] == 1 for t in tasks)
    # a second push reuses the connection
    project.run("push")
    assert len(ls_server.api("GET", "/api/ml", params={"project": pid}).json()) == 1

    task = next(t for t in tasks if project.names[t["data"]["item_id"]] == "0001")
    gt = project.gt[task["data"]["item_id"]] > 0
    pre = project.preannotation(task["data"]["item_id"]) > 0
    pos = interior(gt & ~pre)  # the object's edge band the pre-annotation missed
    neg = interior(~gt)
    t0 = time.perf_counter()
    answer = ls_server.api("POST", f"/api/ml/{backends[0]['id']}/interactive-annotating", json={
        "task": task["id"], "context": {"result": [keypoint(pos, gt.shape, True), keypoint(neg, gt.shape, False)]},
    }).json()
    seconds = time.perf_counter() - t0
    assert "errors" not in answer, answer
    region = answer["data"]["result"][0]
    assert region["from_name"] == "mask" and region["value"]["brushlabels"] == ["foreground"]
    mask = rle_to_mask(region["value"]["rle"], region["original_height"], region["original_width"]) > 0
    assert mask.shape == gt.shape
    assert mask[pos[1], pos[0]] and not mask[neg[1], neg[0]]
    iou, prior_iou = (mask & gt).sum() / (mask | gt).sum(), (pre & gt).sum() / (pre | gt).sum()
    assert iou > prior_iou - 0.05, (iou, prior_iou)  # the refinement does not wreck the pre-annotation
    print(f"interactive request through Label Studio: {seconds:.2f} s")

    # bad input through Label Studio: one error, and the backend keeps serving
    outside = ls_server.api("POST", f"/api/ml/{backends[0]['id']}/interactive-annotating", json={
        "task": task["id"], "context": {"result": [{**keypoint(pos, gt.shape, True),
                                                    "value": {"x": 140.0, "y": 10.0, "keypointlabels": ["assist"]}}]},
    }).json()
    assert outside.get("errors") and "422" in outside["errors"][0]
    assert requests.get(f"{assist.url}/health", timeout=1).ok
    again = ls_server.api("POST", f"/api/ml/{backends[0]['id']}/interactive-annotating", json={
        "task": task["id"], "context": {"result": [keypoint(pos, gt.shape, True)]}}).json()
    assert "errors" not in again and again["data"]["result"][0]["type"] == "brushlabels"
    assert "outside the" in (project.root / "assist.log").read_text()  # the reason is in the server's log

    # connecting the backend did not hide push's predictions: the project's model version is unchanged
    assert ls_server.project(project.title).get("model_version", "") == ls_project.get("model_version", "")


def test_push_with_assist_enabled_but_not_running_is_one_clear_error(ls_project_factory: Any,
                                                                     ls_server: Server) -> None:
    project = ls_project_factory("assist-down", names=("0001",))
    enable_assist(project, free_port())
    proc = project.run("push", check=False)
    assert proc.returncode == 1
    assert "start `maskloop assist`" in proc.stderr and "Traceback" not in proc.stderr
    assert TOKEN not in proc.stderr + proc.stdout

