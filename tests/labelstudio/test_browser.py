"""Real Chromium in the real Label Studio editor: a pushed brush prediction is shown on a task, and the smart
keypoint tool sends the annotator's clicks to the real `maskloop assist`, whose brush mask the editor shows."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import requests

from pipeline.annotation.brush import rle_to_mask
from pipeline.core import io
from tests.conftest import CHROMIUM_ARGS, REPO, free_port, require_chromium
from tests.labelstudio.conftest import EMAIL, PASSWORD, AssistProcess, Server, enable_assist, interior

pytestmark = [pytest.mark.labelstudio, pytest.mark.browser]

ARTIFACTS = REPO / "test-artifacts"


def _red(rgb: np.ndarray) -> np.ndarray:
    """Bool ``(h, w)``: pixels of an RGB screenshot in the brush label's red."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return (r > 150) & (r - g > 80) & (r - b > 80)


def _red_pixels(png: bytes) -> int:
    return int(np.count_nonzero(_red(io.decode_image_bytes(png))))


def _open_task(page: Any, server: Server, project_id: int, task_id: int) -> None:
    """Log in and open the task in the labeling editor; returns once the pushed brush prediction is listed."""
    page.goto(f"{server.url}/user/login/", wait_until="domcontentloaded")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000, wait_until="domcontentloaded")
    page.goto(f"{server.url}/projects/{project_id}/data?task={task_id}", wait_until="domcontentloaded")
    page.wait_for_selector("canvas", timeout=90_000)
    page.get_by_text("foreground").first.wait_for(timeout=90_000)


def _image_box(page: Any) -> dict[str, float]:
    """Screen box of the image: the editor's largest canvas (the image is zoomed to fit it)."""
    boxes = [b for b in (c.bounding_box() for c in page.locator("canvas").all()) if b]
    return max(boxes, key=lambda b: b["width"] * b["height"])


def test_brush_prediction_renders_in_the_labeling_editor(ls_server: Server, ls_project_factory) -> None:
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    proj = ls_project_factory("browser-render", names=("0018", "0026"))
    proj.run("push")
    pid = ls_server.project(proj.title)["id"]
    task = sorted(ls_server.tasks(pid), key=lambda t: t["id"])[0]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _open_task(page, ls_server, pid, task["id"])
            # the editor lists the prediction's brush region with its label and draws it over the image
            page.wait_for_timeout(3000)
            box = _image_box(page)
            shot = page.screenshot(path=str(ARTIFACTS / "labelstudio-brush-prediction.png"))
        finally:
            browser.close()
    x0, y0 = int(box["x"]), int(box["y"])
    x1, y1 = x0 + int(box["width"]), y0 + int(box["height"])
    shown = io.decode_image_bytes(shot)[y0:y1, x0:x1]
    mask = proj.preannotation(task["data"]["item_id"])
    expected = np.count_nonzero(mask) / mask.size * shown.shape[0] * shown.shape[1]
    red = _red_pixels(io.encode_png(shown))
    # the prediction is drawn in the label's red over as much of the shown image as the mask covers
    assert 0.6 * expected < red < 1.4 * expected, f"{red} red pixels, expected about {expected:.0f}; see test-artifacts/"


# the editor's own state (mobx-state-tree, `window.Htx`), read for the assertions only: every action below is a
# click or key press of the annotator
_SELECTED_TOOL = """() => { const t = window.ToolManager.allInstances()[0].findSelectedTool();
    return t ? [t.fullName, t.dynamic, t.control ? t.control.isSelected : null] : null; }"""
_SUGGESTIONS = "() => Array.from(window.Htx.annotationStore.selected.suggestions.values()).map(s => s.cleanId)"
_RESULTS = "() => JSON.stringify(window.Htx.annotationStore.selected.serializeAnnotation())"


def test_smart_keypoints_in_the_editor_get_the_assist_brush_mask(ls_server: Server, ls_project_factory) -> None:
    """Auto-Annotation on, the smart keypoint tool of the Auto-Detect group with the `assist` label, a click on
    the object part the pre-annotation missed and an Alt-click on the background: the editor calls
    ``/api/ml/<id>/interactive-annotating`` for each, `maskloop assist` serves them, and the accepted suggestion
    is the brush mask assist returned, drawn in red at the positive point and not at the negative one."""
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    proj = ls_project_factory("browser-assist", names=("0003",))
    item = next(iter(proj.gt))
    gt = proj.gt[item] > 0
    h, w = gt.shape
    cols = np.arange(w)[None, :]
    cut = int(np.median(np.nonzero(gt)[1]))
    proj.set_preannotation(item, np.where(gt & (cols < cut), 255, 0).astype(np.uint8))  # misses the right half
    pos, neg = interior(gt & (cols >= cut + 5)), interior(~gt)
    port = free_port()
    enable_assist(proj, port)
    assist = AssistProcess(proj, port)
    ARTIFACTS.mkdir(exist_ok=True)
    calls: list[dict[str, Any]] = []
    try:
        proj.run("push")
        pid = ls_server.project(proj.title)["id"]
        task = ls_server.tasks(pid)[0]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("request", lambda r: calls.append(r.post_data_json) if "interactive-annotating" in r.url
                        else None)
                _open_task(page, ls_server, pid, task["id"])
                page.wait_for_timeout(1000)
                stage = _image_box(page)

                def at(xy: tuple[int, int]) -> tuple[float, float]:  # image pixel -> screen point (zoom to fit)
                    return stage["x"] + (xy[0] + 0.5) * stage["width"] / w, stage["y"] + (xy[1] + 0.5) * stage["height"] / h

                before = _red(io.decode_image_bytes(page.screenshot()))
                page.get_by_text("Auto-Annotation", exact=True).click()
                assert page.get_by_test_id("bottombar-auto-annotation-toggle").is_checked()
                # the keypoint label (hotkey 2; 3 is the smart rectangle's), then the keypoint of the Auto-Detect group
                assist_label = page.locator(".lsf-label", has=page.locator(".lsf-label__hotkey", has_text="2"))
                assert assist_label.inner_text().startswith("assist")
                assist_label.click()
                page.locator("button.lsf-tool_smart").first.hover()
                page.locator(".lsf-tool__extra button[aria-label=key-point-tool]").click()
                assert page.evaluate(_SELECTED_TOOL) == ["KeyPointTool-dynamic", True, True]
                page.mouse.move(5, 5)

                with page.expect_response(lambda r: "interactive-annotating" in r.url, timeout=60_000) as first:
                    page.mouse.click(*at(pos))
                assert first.value.ok
                page.get_by_test_id("bottombar-accept-suggestions-button").wait_for(timeout=30_000)
                # Label Studio unselects the label after every region (unless "keep label selected" is set)
                assist_label.click()
                with page.expect_response(lambda r: "interactive-annotating" in r.url, timeout=60_000) as second:
                    page.keyboard.down("Alt")
                    page.mouse.click(*at(neg))
                    page.keyboard.up("Alt")
                answer = second.value.json()
                assert "errors" not in answer, answer
                region = answer["data"]["result"][0]
                page.wait_for_function(f"() => ({_SUGGESTIONS})().includes({json.dumps(region['id'])})",
                                       timeout=30_000)
                page.screenshot(path=str(ARTIFACTS / "labelstudio-assist-suggestion.png"))
                page.get_by_test_id("bottombar-accept-suggestions-button").click()
                page.wait_for_function(f"() => ({_SUGGESTIONS})().length === 0", timeout=30_000)
                page.mouse.move(5, 5)
                page.wait_for_timeout(1000)
                shot = io.decode_image_bytes(page.screenshot(path=str(ARTIFACTS / "labelstudio-assist-accepted.png")))
                results = json.loads(page.evaluate(_RESULTS))
            finally:
                browser.close()
        metrics = requests.get(f"{assist.url}/metrics", timeout=5).json()
    finally:
        assist.stop()

    # the editor sent the smart clicks: first the positive one, then both (the Alt-click negative), in image pixels
    assert len(calls) == 2, calls
    clicks = [[(int(r["value"]["x"] * w / 100), int(r["value"]["y"] * h / 100), r["is_positive"])
               for r in c["context"]["result"] if r["type"] == "keypointlabels"] for c in calls]
    assert clicks == [[(*pos, True)], [(*pos, True), (*neg, False)]], clicks
    assert (metrics["served"], metrics["errors"]) == (2, 0), metrics
    returned = rle_to_mask(region["value"]["rle"], h, w) > 0
    assert returned[pos[1], pos[0]] and not returned[neg[1], neg[0]]
    # the accepted region is assist's mask, and the smart keypoints are gone
    brush = [r for r in results if r["type"] == "brushlabels" and r["id"] == region["id"]]
    assert len(brush) == 1 and brush[0]["value"]["brushlabels"] == ["foreground"], results
    assert np.array_equal(rle_to_mask(brush[0]["value"]["rle"], h, w) > 0, returned)
    assert not [r for r in results if r["type"] == "keypointlabels"], results

    # and it is drawn: red around the positive point (the pre-annotation had none there), none at the negative
    def red_near(red: np.ndarray, xy: tuple[int, int]) -> float:  # share of red in the 5x5 screen pixels there
        x, y = (round(v) for v in at(xy))
        return float(red[y - 2:y + 3, x - 2:x + 3].mean())

    shown = [(red_near(before, p), red_near(_red(shot), p)) for p in (pos, neg)]
    assert shown == [(0.0, 1.0), (0.0, 0.0)], f"red share (before, after) at pos, neg: {shown}; see test-artifacts/"
