"""`maskloop assist`: the Label Studio ML-backend protocol, bad input, caching and concurrency.

The app is the real Starlette app with the real ``grabcut`` refinement engine on real ECSSD photos of an
ingested project; most tests go through Starlette's TestClient, the concurrency tests through a real uvicorn
server on a free port with several client threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests

from pipeline.annotation.brush import rle_to_mask
from pipeline.annotation.labelstudio_ml import AssistParams
from pipeline.commands.assist import AssistService, create_app
from pipeline.preannotators.base import CheckpointMissing
from pipeline.refine import build_refiner
from pipeline.refine.base import RefineParams, RefineResult, RefinerSpec, SamRefineParams
from tests.assist.conftest import AssistProject, keypoint, pct, predict_body, rectangle
from tests.conftest import free_port

# Starlette 1.x asks for httpx2 in its TestClient; the httpx it supports today works the same
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def interior(region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the distance-transform maximum of a bool region."""
    dist = cv2.distanceTransform(np.pad(region.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def iou_of(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def grabcut_service(project: AssistProject, **kw: Any) -> AssistService:
    params = AssistParams(enabled=True, **kw)
    return AssistService(params, project.paths, lambda: build_refiner("grabcut", RefineParams(), project.paths),
                         "grabcut", "foreground", project.root)


@pytest.fixture(scope="module")
def client(assist_project: AssistProject) -> Iterator[Any]:
    from starlette.testclient import TestClient

    service = grabcut_service(assist_project)
    with TestClient(create_app(service)) as c:
        c.service = service  # type: ignore[attr-defined]
        yield c


def decode(answer: dict[str, Any]) -> np.ndarray:
    region = answer["results"][0]["result"][0]
    assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
    return rle_to_mask(region["value"]["rle"], region["original_height"], region["original_width"]) > 0


# --------------------------------------------------------------------------- protocol


def test_health_setup_webhook_versions(client: Any) -> None:
    h = client.get("/health").json()
    assert h["status"] == "UP" and h["model_class"] == "maskloop-assist" and h["engine"] == "grabcut"
    assert client.get("/").status_code == 200
    body = predict_body("x", [])
    r = client.post("/setup", json={"project": "3.170", "schema": body["label_config"], "hostname": "h",
                                    "access_token": "secret-token-never-logged", "extra_params": None})
    assert r.status_code == 200 and r.json()["model_version"].startswith("maskloop-assist-")
    bad = client.post("/setup", json={"project": "3.1", "schema": "<View><Image name='i' value='$image'/></View>"})
    assert bad.status_code == 400 and "BrushLabels" in bad.json()["message"]
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED"}).json()["status"] == "ignored"
    assert client.get("/versions").json()["versions"]


def test_positive_and_negative_clicks_make_the_brush_mask(client: Any, assist_project: AssistProject) -> None:
    item = assist_project.item("0001")
    gt = assist_project.gt[item] > 0
    pre = cv2.erode(gt.astype(np.uint8), np.ones((13, 13), np.uint8)) > 0
    pos = interior(gt & ~pre)  # in the object, missed by the pre-annotation
    neg = interior(~gt)  # deep in the background
    h, w = gt.shape
    regions = [keypoint(*pct(gt, pos), True, w, h), keypoint(*pct(gt, neg), False, w, h)]
    r = client.post("/predict", json=predict_body(item, regions))
    assert r.status_code == 200, r.text
    answer = r.json()
    result = answer["results"][0]
    assert result["model_version"].startswith("maskloop-assist-grabcut")
    region = result["result"][0]
    assert (region["from_name"], region["to_name"]) == ("mask", "image")
    assert region["value"]["brushlabels"] == ["foreground"]
    mask = decode(answer)
    assert mask.shape == gt.shape
    assert mask[pos[1], pos[0]] and not mask[neg[1], neg[0]]
    assert iou_of(mask, gt) > iou_of(pre, gt) + 0.1  # the clicks fix much of what the prior missed
    # the same prompt gives the same region id and the same mask (OpenCV's RNG, which cv2.grabCut seeds its
    # k-means from, is re-seeded for every request)
    again = client.post("/predict", json=predict_body(item, regions)).json()
    assert again["results"][0]["result"][0]["id"] == region["id"] and (decode(again) == mask).all()


def test_box_prompt_keeps_the_mask_inside(client: Any, assist_project: AssistProject) -> None:
    item = assist_project.item("0002")
    gt = assist_project.gt[item] > 0
    ys, xs = np.nonzero(gt)
    h, w = gt.shape
    x0, x1 = xs.min() * 100 / w, (xs.max() + 1) * 100 / w
    y0, y1 = ys.min() * 100 / h, (ys.max() + 1) * 100 / h
    r = client.post("/predict", json=predict_body(item, [rectangle(x0, y0, x1 - x0, y1 - y0)]))
    assert r.status_code == 200, r.text
    mask = decode(r.json())
    assert mask.any()
    assert not mask[:, : max(0, xs.min() - 1)].any() and not mask[: max(0, ys.min() - 1)].any()


def test_plain_prediction_without_context_has_no_results(client: Any, assist_project: AssistProject) -> None:
    body = predict_body(assist_project.item("0001"), [])
    assert client.post("/predict", json=body).json() == {"results": []}
    del body["params"]["context"]
    assert client.post("/predict", json=body).json() == {"results": []}


def test_paths_in_the_request_are_never_used(client: Any, assist_project: AssistProject) -> None:
    """The image comes from the manifest by item id: a path in the task data changes nothing."""
    item = assist_project.item("0005")
    gt = assist_project.gt[item]
    regions = [keypoint(*pct(gt, interior(gt > 0)), True, gt.shape[1], gt.shape[0])]
    plain = client.post("/predict", json=predict_body(item, regions)).json()
    hostile = client.post("/predict", json=predict_body(item, regions, extra_data={
        "image": "/etc/passwd", "path": "/etc/shadow"})).json()
    assert (decode(plain) == decode(hostile)).all()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "status", "code", "words"),
    [
        (lambda item: predict_body("0123456789abcdef", [keypoint(50, 50)]), 404, "unknown_item", "0123456789abcdef"),
        (lambda item: predict_body(item, [keypoint(101.5, 50)]), 422, "click_outside_image", "outside"),
        (lambda item: predict_body(item, [keypoint(50, -3)]), 422, "click_outside_image", "click 0"),
        (lambda item: predict_body(item, [rectangle(120, 120, 5, 5)]), 422, "bad_prompt", "box"),
        (lambda item: {"tasks": []}, 400, "malformed_request", "tasks"),
        (lambda item: [1, 2], 400, "malformed_request", "JSON object"),
        (lambda item: {"tasks": [{"data": {}}]}, 400, "malformed_request", "item_id"),
        (lambda item: predict_body(item, [{"type": "keypointlabels", "value": {"x": "a", "y": 1}}]), 400,
         "malformed_request", "value.x"),
        (lambda item: predict_body(item, [{**keypoint(5, 5), "is_positive": "yes"}]), 400, "malformed_request",
         "is_positive"),
        (lambda item: {"tasks": [{"data": {"item_id": item}}], "params": {"context": "x"}}, 400,
         "malformed_request", "context"),
    ],
)
def test_bad_input_gets_one_clear_error_and_the_server_keeps_serving(
    client: Any, assist_project: AssistProject, make: Any, status: int, code: str, words: str
) -> None:
    item = assist_project.item("0001")
    r = client.post("/predict", json=make(item))
    assert r.status_code == status, r.text
    payload = r.json()
    assert payload["error"] == code and words in payload["message"]
    if code in ("unknown_item", "click_outside_image", "bad_prompt"):
        assert payload["item_id"] and payload["item_id"] in payload["message"]
    ok = client.post("/predict", json=predict_body(item, [keypoint(50, 50)]))
    assert ok.status_code == 200


def test_invalid_json_is_a_400(client: Any) -> None:
    r = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_request"
    assert client.post("/setup", content=b"\xff\xfe").status_code == 400


def test_missing_weights_name_the_fetch_command_and_need_no_restart(assist_project: AssistProject) -> None:
    """The engine is built on first use: missing weights answer 424 naming `maskloop models fetch`; once the
    weights are there the next request works on the same server."""
    from starlette.testclient import TestClient

    ready = threading.Event()

    def make() -> Any:
        if not ready.is_set():
            raise CheckpointMissing("models/sam_vit_b_01ec64.pth: sam/vit_b checkpoint not found")
        return build_refiner("grabcut", RefineParams(), assist_project.paths)

    service = AssistService(AssistParams(enabled=True), assist_project.paths, make, "sam", "foreground", assist_project.root)
    item = assist_project.item("0001")
    with TestClient(create_app(service)) as c:
        r = c.post("/predict", json=predict_body(item, [keypoint(50, 50)]))
        assert r.status_code == 424 and r.json()["error"] == "weights_missing"
        assert "`maskloop models fetch sam_vit_b`" in r.json()["message"]
        assert c.get("/health").json()["engine_loaded"] is False
        ready.set()
        assert c.post("/predict", json=predict_body(item, [keypoint(50, 50)])).status_code == 200


def sam_service(project: AssistProject, checkpoint: Path, sam_cache: Path, arch: str = "vit_tiny") -> AssistService:
    from dataclasses import replace

    params = RefineParams(engine="sam", device="cpu", sam=SamRefineParams(arch=arch, checkpoint=checkpoint))  # type: ignore[arg-type]
    paths = replace(project.paths, sam_cache=sam_cache)
    return AssistService(AssistParams(enabled=True), paths, lambda: build_refiner("sam", params, paths), "sam",
                         "foreground", project.root)


def test_real_sam_engine_without_weights_names_the_fetch_command(assist_project: AssistProject, tmp_path: Path
                                                                 ) -> None:
    from starlette.testclient import TestClient

    service = sam_service(assist_project, tmp_path / "sam_vit_b_01ec64.pth", tmp_path / "cache", arch="vit_b")
    with TestClient(create_app(service)) as c:
        r = c.post("/predict", json=predict_body(assist_project.item("0001"), [keypoint(50, 50)]))
        assert r.status_code == 424, r.text
        assert "maskloop models fetch sam_vit_b" in r.json()["message"]
        assert c.get("/health").json() == {**c.get("/health").json(), "status": "UP", "engine_loaded": False}


def test_sam_embedding_missing_from_the_cache_is_computed_once_then_cached(
    assist_project: AssistProject, tiny_sam_ckpt: Path, tmp_path: Path
) -> None:
    """No embedding for the item in paths.sam_cache: the first click runs the encoder and stores it; later
    clicks (and a restarted server) read it."""
    from starlette.testclient import TestClient

    item = assist_project.item("0005")
    gt = assist_project.gt[item]
    h, w = gt.shape
    pos, neg = interior(gt > 0), interior(gt == 0)
    first = [keypoint(*pct(gt, pos), True, w, h)]
    both = [*first, keypoint(*pct(gt, neg), False, w, h)]
    service = sam_service(assist_project, tiny_sam_ckpt, tmp_path / "cache")
    with TestClient(create_app(service)) as c:
        a = c.post("/predict", json=predict_body(item, first))
        assert a.status_code == 200, a.text
        engine = service.engine()
        assert engine.encoder_calls == 1
        assert (tmp_path / "cache" / engine.checkpoint_sha256[:16] / f"{item}.npy").is_file()
        b = c.post("/predict", json=predict_body(item, both))
        assert engine.encoder_calls == 1
    mask = decode(b.json())
    assert mask[pos[1], pos[0]] and not mask[neg[1], neg[0]]
    restarted = sam_service(assist_project, tiny_sam_ckpt, tmp_path / "cache")
    with TestClient(create_app(restarted)) as c:
        assert c.post("/predict", json=predict_body(item, both)).status_code == 200
        assert restarted.engine().encoder_calls == 0


# --------------------------------------------------------------------------- cache and concurrency


class SlowEngine:
    """Wraps the real grabcut engine, holding each call until ``gate`` opens (to pile requests up)."""

    spec = RefinerSpec(name="slow", version="slow-1")

    def __init__(self, inner: Any, gate: threading.Event) -> None:
        self.inner, self.gate = inner, gate
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()

    def refine(self, *args: Any, **kwargs: Any) -> RefineResult:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            self.gate.wait(30)
            return self.inner.refine(*args, **kwargs)  # type: ignore[no-any-return]
        finally:
            with self.lock:
                self.running -= 1


class Uvicorn:
    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Uvicorn:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def test_concurrent_annotators_share_one_item_load_and_are_bounded(assist_project: AssistProject) -> None:
    """8 annotators click on the same new item at once: the item loads once, at most `workers` refinements run
    together, /health answers immediately meanwhile, and requests beyond `max_pending` get 429 at once."""
    gate = threading.Event()
    slow = SlowEngine(build_refiner("grabcut", RefineParams(), assist_project.paths), gate)
    service = AssistService(AssistParams(enabled=True, workers=3, max_pending=8, cache_items=2),
                            assist_project.paths, lambda: slow, "grabcut", "foreground", assist_project.root)
    item = assist_project.item("0002")
    gt = assist_project.gt[item]
    body = predict_body(item, [keypoint(*pct(gt, interior(gt > 0)), True, gt.shape[1], gt.shape[0])])
    with Uvicorn(create_app(service)) as srv, ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(requests.post, f"{srv.url}/predict", json=body, timeout=60) for _ in range(8)]
        deadline = time.monotonic() + 20
        while slow.running < 3:
            assert time.monotonic() < deadline, "refinements did not start"
            time.sleep(0.02)
        t0 = time.perf_counter()
        assert requests.get(f"{srv.url}/health", timeout=1).ok
        health_s = time.perf_counter() - t0
        over = [requests.post(f"{srv.url}/predict", json=body, timeout=5) for _ in range(2)]
        gate.set()
        answers = [f.result() for f in futures]
    assert health_s < 0.5
    assert [r.status_code for r in over] == [429, 429] and over[0].json()["error"] == "busy"
    assert [r.status_code for r in answers] == [200] * 8
    masks = [decode(r.json()) for r in answers]
    assert all((m == masks[0]).all() for m in masks)
    assert slow.peak == 3
    assert service.items.loads == 1 and service.items.hits == 7


def test_item_cache_is_bounded_lru(assist_project: AssistProject) -> None:
    from starlette.testclient import TestClient

    service = grabcut_service(assist_project, cache_items=2, workers=1, max_pending=1)
    ids = [assist_project.item(n) for n in ("0001", "0002", "0005")]
    with TestClient(create_app(service)) as c:
        for item in [*ids, ids[2], ids[0]]:
            assert c.post("/predict", json=predict_body(item, [keypoint(50, 50)])).status_code == 200
    assert len(service.items) == 2
    assert (service.items.loads, service.items.hits) == (4, 1)  # 3 first loads, 0005 hit, 0001 evicted -> reload
