"""Real Chromium logs into the real Label Studio and shows a pushed brush prediction on a task."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import io
from tests.conftest import CHROMIUM_ARGS, REPO, require_chromium
from tests.labelstudio.conftest import EMAIL, PASSWORD, Server

pytestmark = [pytest.mark.labelstudio, pytest.mark.browser]



def _red_pixels(png: bytes) -> int:
    rgb = io.decode_image_bytes(png).astype(np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(np.count_nonzero((r > 150) & (r - g > 80) & (r - b > 80)))


def test_brush_prediction_renders_in_the_labeling_editor(ls_server: Server, ls_project_factory) -> None:
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    proj = ls_project_factory("browser-render", names=("0018", "0026"))
    proj.run("push")
    pid = ls_server.project(proj.title)["id"]
    task = sorted(ls_server.tasks(pid), key=lambda t: t["id"])[0]
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{ls_server.url}/user/login/", wait_until="domcontentloaded")
            page.fill("input[name=email]", EMAIL)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000, wait_until="domcontentloaded")
            page.goto(f"{ls_server.url}/projects/{pid}/data?task={task['id']}", wait_until="domcontentloaded")
            # the editor lists the prediction's brush region with its label and draws it over the image
            page.wait_for_selector("canvas", timeout=90_000)
            page.get_by_text("foreground").first.wait_for(timeout=90_000)
            page.wait_for_timeout(3000)
            boxes = [b for b in (c.bounding_box() for c in page.locator("canvas").all()) if b]
            box = max(boxes, key=lambda b: b["width"] * b["height"])
            shot = page.screenshot(path=str(artifacts / "labelstudio-brush-prediction.png"))
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
