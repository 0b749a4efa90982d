"""Label Studio's ML-backend protocol, as ``maskloop assist`` speaks it (pure parsing and formatting).

Label Studio (tested against 1.23.2) calls an ML backend over HTTP with JSON bodies:

- ``GET /health`` (1 s timeout) -> ``{"status": "UP", ...}``;
- ``POST /setup`` (3 s timeout) with ``{"project": "<id>.<created ts>", "schema": <label config XML>,
  "hostname", "access_token", "extra_params"}`` -> ``{"model_version": ...}``. The body holds the project
  owner's API token: it is never logged or stored;
- ``POST /predict`` with ``{"tasks": [task], "project", "label_config", "params": {"context": {...}}}``.
  For **interactive** pre-annotation (``/api/ml/<id>/interactive-annotating``, what the editor's smart
  tools call) ``context.result`` holds the annotator's smart regions: ``keypointlabels`` (``value.x``/``y``
  in percent of the image, ``is_positive`` false for an Alt-click) and ``rectanglelabels``
  (``x``/``y``/``width``/``height`` in percent). The answer is ``{"results": [{"result": [regions],
  "score", "model_version"}]}``; Label Studio shows ``results[0]`` in the editor;
- ``POST /webhook`` (training events; maskloop trains in its own pipeline, so they are acknowledged only).

This module turns a ``/predict`` body into a :class:`PredictRequest` (item id from the task's
``data.item_id`` only, never a path or URL from the request; clicks still in percent) and a refined mask
into a brush region (:func:`brush_region`). Every problem is an :class:`AssistError` with an HTTP status
(4xx) and a short code, so the server answers one clear JSON error and keeps serving.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.errors import UserError

log = logging.getLogger(__name__)

# tool names in the labeling config maskloop generates (see pipeline.annotation.labelstudio.label_config)
CLICK_TOOL = "assist_click"
BOX_TOOL = "assist_box"


@dataclass(frozen=True)
class AssistParams:
    """Section ``annotation.labelstudio.assist``: the interactive ML backend (``maskloop assist``).

    ``enabled``: ``maskloop push`` adds smart keypoint/rectangle tools (label ``label``) to the labeling config
    and connects the backend at ``url`` (the address *Label Studio* reaches it at) to the project.
    ``host``/``port``: where ``maskloop assist`` listens. ``engine``: refinement engine (``""`` = ``refine.engine``).
    ``workers``: requests refined at once; ``max_pending``: requests running or waiting before the server
    answers 429 (busy); ``cache_items``: items whose image and current mask stay in memory (LRU).
    ``timeout_s``: the prediction timeout Label Studio uses for this backend.
    """

    enabled: bool = False
    url: str = "http://127.0.0.1:9090"
    host: str = "127.0.0.1"
    port: int = 9090
    engine: str = ""
    label: str = "assist"
    tools: tuple[str, ...] = ("keypoint", "rectangle")
    workers: int = 4
    max_pending: int = 32
    cache_items: int = 32
    timeout_s: float = 100.0
    title: str = "maskloop assist"

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        unknown = sorted(set(self.tools) - {"keypoint", "rectangle"})
        if unknown or not self.tools:
            raise ValueError(f"tools must be a non-empty subset of [keypoint, rectangle], got {list(self.tools)}")
        if not self.label.strip():
            raise ValueError("label must not be empty")
        if self.workers < 1 or self.max_pending < self.workers or self.cache_items < 1:
            raise ValueError("workers and cache_items must be >= 1 and max_pending >= workers")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


# --------------------------------------------------------------------------- errors


class AssistError(UserError):
    """A request the backend cannot answer: HTTP ``status`` (4xx) and a short machine-readable ``code``."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, item_id: str = "") -> None:
        super().__init__(message)
        self.item_id = item_id

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": str(self)}
        if self.item_id:
            out["item_id"] = self.item_id
        return out


class MalformedRequest(AssistError):
    status, code = 400, "malformed_request"


class UnknownItem(AssistError):
    status, code = 404, "unknown_item"


class ClickOutsideImage(AssistError):
    status, code = 422, "click_outside_image"


class BadPrompt(AssistError):
    status, code = 422, "bad_prompt"


class WeightsMissing(AssistError):
    status, code = 424, "weights_missing"


class Busy(AssistError):
    status, code = 429, "busy"


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class PercentPoint:
    """A smart keypoint: ``x``/``y`` in percent of the image (0..100), ``positive`` false for Alt-clicks."""

    x: float
    y: float
    positive: bool


@dataclass(frozen=True)
class PercentBox:
    """A smart rectangle in percent of the image: top-left ``x``/``y``, ``width``/``height``."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class PredictRequest:
    """An interactive ``/predict`` call: the task's item, its clicks (oldest first) and optional box.

    ``interactive`` is false for plain prediction calls (no smart region in the context): they are answered
    with no results (maskloop's pre-annotations reach Label Studio through ``maskloop push``).
    """

    item_id: str
    task_id: int | None
    points: tuple[PercentPoint, ...] = ()
    box: PercentBox | None = None
    interactive: bool = True
    brush_from: str = "mask"
    brush_to: str = "image"
    extra: Mapping[str, Any] = field(default_factory=dict)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise MalformedRequest(f"{what} must be a finite number, got {value!r}")
    return float(value)


_BRUSH_RE = re.compile(r"<BrushLabels\b[^>]*>", re.IGNORECASE)
_ATTR_RE = re.compile(r'\b(name|toName)\s*=\s*"([^"]*)"')


def brush_tool(label_config: str) -> tuple[str, str] | None:
    """``(name, toName)`` of the first ``BrushLabels`` tag of a labeling config, or None."""
    m = _BRUSH_RE.search(label_config or "")
    if not m:
        return None
    attrs = dict(_ATTR_RE.findall(m.group(0)))
    if "name" not in attrs or "toName" not in attrs:
        return None
    return attrs["name"], attrs["toName"]


def parse_predict(body: Any) -> PredictRequest:
    """Validate a ``/predict`` body; :class:`MalformedRequest` naming what is wrong."""
    if not isinstance(body, Mapping):
        raise MalformedRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise MalformedRequest("'tasks' must be a non-empty list of tasks")
    params = body.get("params") or {}
    if not isinstance(params, Mapping):
        raise MalformedRequest(f"'params' must be an object, got {type(params).__name__}")
    context = params.get("context") or {}
    if not isinstance(context, Mapping):
        raise MalformedRequest(f"'params.context' must be an object, got {type(context).__name__}")
    results = context.get("result") or []
    if not isinstance(results, list):
        raise MalformedRequest("'params.context.result' must be a list of regions")
    task = tasks[0]
    if not isinstance(task, Mapping) or not isinstance(task.get("data"), Mapping):
        raise MalformedRequest("each task must be an object with a 'data' object")
    item_id = task["data"].get("item_id")
    if not isinstance(item_id, str) or not item_id.strip():
        raise MalformedRequest("task data has no 'item_id' (only tasks pushed by maskloop can be assisted)")
    task_id = task.get("id")
    task_id = int(task_id) if isinstance(task_id, int) and not isinstance(task_id, bool) else None
    brush = brush_tool(str(body.get("label_config") or "")) or ("mask", "image")
    points: list[PercentPoint] = []
    box: PercentBox | None = None
    for i, region in enumerate(results):
        if not isinstance(region, Mapping):
            raise MalformedRequest(f"context region {i} must be an object")
        kind = str(region.get("type", "")).lower()
        value = region.get("value")
        if kind not in ("keypointlabels", "rectanglelabels"):
            continue  # brush strokes, text...: not prompts
        if not isinstance(value, Mapping):
            raise MalformedRequest(f"context region {i} ({kind}) has no 'value' object")
        x = _number(value.get("x"), f"context region {i} value.x")
        y = _number(value.get("y"), f"context region {i} value.y")
        if kind == "keypointlabels":
            positive = region.get("is_positive", True)
            if not isinstance(positive, bool):
                raise MalformedRequest(f"context region {i} is_positive must be true or false, got {positive!r}")
            points.append(PercentPoint(x, y, positive))
        else:
            w = _number(value.get("width"), f"context region {i} value.width")
            h = _number(value.get("height"), f"context region {i} value.height")
            box = PercentBox(x, y, w, h)  # the latest rectangle wins
    if len(tasks) > 1 and (points or box is not None):
        raise MalformedRequest(f"an interactive request must hold one task, got {len(tasks)}")
    interactive = bool(points) or box is not None
    return PredictRequest(item_id=item_id.strip(), task_id=task_id, points=tuple(points), box=box,
                          interactive=interactive, brush_from=brush[0], brush_to=brush[1])


# --------------------------------------------------------------------------- coordinates (pure)


def to_pixel(x_pct: float, y_pct: float, width: int, height: int) -> tuple[int, int]:
    """Percent coordinates -> the pixel ``(column, row)`` they fall in (100% maps to the last pixel)."""
    col = min(width - 1, math.floor(x_pct * width / 100.0))
    row = min(height - 1, math.floor(y_pct * height / 100.0))
    return col, row


def pixel_points(points: Sequence[PercentPoint], width: int, height: int,
                 item_id: str) -> list[tuple[int, int, bool]]:
    """Points as ``(x, y, positive)`` pixels of a ``width x height`` image; :class:`ClickOutsideImage` naming
    the item and the click for one outside it."""
    out = []
    for i, p in enumerate(points):
        if not (0.0 <= p.x <= 100.0 and 0.0 <= p.y <= 100.0):
            raise ClickOutsideImage(
                f"item {item_id}: click {i} at x={p.x:.6g}%, y={p.y:.6g}% lies outside the {width}x{height} image",
                item_id,
            )
        out.append((*to_pixel(p.x, p.y, width, height), p.positive))
    return out


def pixel_box(box: PercentBox, width: int, height: int, item_id: str) -> tuple[int, int, int, int]:
    """A percent box as XYXY pixels (``x1``/``y1`` exclusive) clipped to the image; :class:`BadPrompt` when
    it is empty or lies wholly outside."""
    x0 = math.floor(box.x * width / 100.0)
    y0 = math.floor(box.y * height / 100.0)
    x1 = math.ceil((box.x + box.width) * width / 100.0)
    y1 = math.ceil((box.y + box.height) * height / 100.0)
    x0, y0, x1, y1 = min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if not (cx0 < cx1 and cy0 < cy1):
        raise BadPrompt(f"item {item_id}: the box ({x0}, {y0}, {x1}, {y1}) px holds no pixel of the "
                        f"{width}x{height} image", item_id)
    return cx0, cy0, cx1, cy1


# --------------------------------------------------------------------------- responses


def region_id(item_id: str, points: Sequence[tuple[int, int, bool]], box: tuple[int, ...] | None) -> str:
    """A deterministic region id for one answer (same prompt, same id; 10 characters like Label Studio's)."""
    key = f"{item_id}|{points}|{box}".encode()
    return "as" + hashlib.sha256(key).hexdigest()[:8]


def brush_region(mask: np.ndarray, label: str, from_name: str, to_name: str, rid: str,
                 score: float | None = None) -> dict[str, Any]:
    """A Label Studio brush region for ``mask`` ``(H, W)`` (nonzero = foreground), RLE-encoded."""
    from pipeline.annotation.brush import mask_to_rle

    m = np.where(np.asarray(mask) > 0, np.uint8(255), np.uint8(0))
    h, w = m.shape
    region: dict[str, Any] = {
        "id": rid, "from_name": from_name, "to_name": to_name, "type": "brushlabels",
        "original_width": int(w), "original_height": int(h), "image_rotation": 0, "readonly": False,
        "value": {"format": "rle", "rle": mask_to_rle(m), "brushlabels": [label]},
    }
    if score is not None:
        region["score"] = float(score)
    return region


def predict_response(regions: list[dict[str, Any]], model_version: str, score: float) -> dict[str, Any]:
    """The ``/predict`` answer: one prediction holding ``regions`` (no results when ``regions`` is empty)."""
    if not regions:
        return {"results": []}
    return {"results": [{"result": regions, "score": float(score), "model_version": model_version}]}


def mask_confidence(probability: np.ndarray) -> float:
    """Mean certainty ``2|p - 0.5|`` of a probability map, in [0, 1]."""
    p = np.asarray(probability, np.float32)
    return float(np.mean(np.abs(p - 0.5)) * 2.0) if p.size else 0.0


# --------------------------------------------------------------------------- push wiring


def assist_tools(params: AssistParams, to_name: str) -> list[str]:
    """The smart tools ``maskloop push`` adds to the labeling config when assist is enabled: a keypoint tool
    (click = foreground, Alt-click = background) and a rectangle tool (the object lies inside), both with the
    label ``params.label`` (not the brush label, so pull never counts them as foreground)."""
    from xml.sax.saxutils import quoteattr

    label = quoteattr(params.label)
    out = []
    if "keypoint" in params.tools:
        out.append(f'  <KeyPointLabels name="{CLICK_TOOL}" toName="{to_name}" smart="true">\n'
                   f'    <Label value={label} smart="true" background="#00c853" showInline="true"/>\n'
                   "  </KeyPointLabels>")
    if "rectangle" in params.tools:
        out.append(f'  <RectangleLabels name="{BOX_TOOL}" toName="{to_name}" smart="true">\n'
                   f'    <Label value={label} smart="true" background="#00c853" showInline="true"/>\n'
                   "  </RectangleLabels>")
    return out


def connect_backend(client: Any, project_id: int, params: AssistParams) -> int:
    """Connect the assist backend at ``params.url`` to the Label Studio project (interactive), once: an
    existing connection with that URL is reused (and made interactive). Label Studio checks ``/health`` and
    ``/setup`` while connecting, so ``maskloop assist`` must be running and reachable from the Label Studio
    server. The project's ``model_version`` (which predictions the editor shows) is kept as it was.
    Returns the ML backend id. ``client`` is a :class:`~pipeline.annotation.labelstudio.LabelStudioClient`."""
    url = params.url.rstrip("/")
    before = (client.request("GET", f"/api/projects/{project_id}") or {}).get("model_version")
    backends = client.request("GET", "/api/ml", params={"project": project_id}) or []
    found = [b for b in backends if str(b.get("url", "")).rstrip("/") == url]
    fields = {"is_interactive": True, "title": params.title, "timeout": params.timeout_s}
    if found:
        backend = found[0]
        if any(backend.get(k) != v for k, v in fields.items()):
            backend = client.request("PATCH", f"/api/ml/{backend['id']}", json=fields) or backend
    else:
        from pipeline.annotation.http import AmbiguousRequest

        try:
            backend = client.request("POST", "/api/ml", json={"url": url, "project": project_id, **fields,
                                                              "auto_update": True})
        except (UserError, AmbiguousRequest) as exc:  # refused, or the answer was lost: read back what exists
            # Label Studio 1.23 also creates a training webhook for every new ML backend and refuses it (HTTP 403,
            # SSRF protection) for a loopback/private URL after the backend itself was connected: that is fine,
            # maskloop trains in its own pipeline and needs no webhook
            again = [b for b in client.request("GET", "/api/ml", params={"project": project_id}) or []
                     if str(b.get("url", "")).rstrip("/") == url]
            if again:
                log.info("assist backend %s is connected (Label Studio answered %s: its training webhook, not needed)",
                         url, type(exc).__name__)
                return _finish_connect(client, project_id, again[0], before)
            raise UserError(
                f"annotation.labelstudio.assist is enabled, but Label Studio at {client.shown_url} could not connect "
                f"the assist backend at {url}: start `maskloop assist` where the Label Studio server reaches that URL "
                "(a loopback or private address also needs ML_BLOCK_LOCAL_IP=false in the Label Studio server's "
                f"environment), then push again. Label Studio said: {str(exc)[-400:]}"
            ) from exc
    return _finish_connect(client, project_id, backend, before)


def _finish_connect(client: Any, project_id: int, backend: Mapping[str, Any], before: Any) -> int:
    after = (client.request("GET", f"/api/projects/{project_id}") or {}).get("model_version")
    if after != before:  # connecting a backend makes it the project's model version: keep push's predictions shown
        client.request("PATCH", f"/api/projects/{project_id}", json={"model_version": before or ""})
    log.info("assist backend %s connected to Label Studio project %s (ML backend %s)", backend.get("url"),
             project_id, backend.get("id"))
    return int(backend["id"])
