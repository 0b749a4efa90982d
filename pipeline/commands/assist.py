"""``maskloop assist``: a Label Studio ML backend that turns smart clicks into a refined brush mask.

Label Studio's editor sends the annotator's smart keypoints (positive, or negative with Alt) and rectangle to
``POST /predict`` (protocol in :mod:`pipeline.annotation.labelstudio_ml`); the server finds the item from the
task's ``data.item_id`` in the manifest (never from a path in the request), refines the item's current mask
(its pre-annotation) with the configured refinement engine (:mod:`pipeline.refine`: ``grabcut``, ``sam`` on
the pipeline's cached SAM embeddings, ``trained``) and answers with one brush region.

Design for several annotators at once:

- an ASGI app (Starlette) under uvicorn: ``/health`` and ``/setup`` answer on the event loop at once (Label
  Studio gives them 1 s and 3 s) even while refinements run;
- refinements run on a thread pool of ``workers`` threads (engines are thread-safe; OpenCV and torch release
  the GIL); at most ``max_pending`` requests run or wait, more get HTTP 429 at once instead of queueing
  behind a slow item;
- a bounded LRU of per-item state (image, current mask; ``cache_items``), loaded once per item even when
  several first clicks on it arrive together; the engine keeps its own per-item state (SAM embedding:
  computed once, then read from ``paths.sam_cache``);
- the engine is built on the first request that needs it (weights load then); missing weights answer HTTP
  424 naming ``maskloop models fetch`` and the next request tries again, so fetching the weights needs no
  restart.

Every bad request gets one JSON error ``{"error": code, "message": ..., "item_id": ...}`` with a 4xx status
and the server keeps serving. Nothing from a request body is logged (``/setup`` carries an API token).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from pipeline.annotation.labelstudio_ml import (
    AssistError,
    AssistParams,
    BadPrompt,
    Busy,
    MalformedRequest,
    PredictRequest,
    UnknownItem,
    WeightsMissing,
    brush_region,
    brush_tool,
    mask_confidence,
    parse_predict,
    pixel_box,
    pixel_points,
    predict_response,
    region_id,
)
from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS, Paths

if TYPE_CHECKING:
    from starlette.applications import Starlette

log = logging.getLogger(__name__)

MODEL_CLASS = "maskloop-assist"


class StalePreannotation(AssistError):
    status, code = 409, "stale_preannotation"


# --------------------------------------------------------------------------- items


class ItemUnavailable(AssistError):
    status, code = 404, "item_unavailable"


class ManifestIndex:
    """item id -> image path of the manifest's ok items (relative ones under ``root``, the project root),
    re-read when the manifest file changes."""

    def __init__(self, manifest: Path, root: Path = Path(".")) -> None:
        self.manifest = Path(manifest)
        self.root = Path(root)
        self._key: tuple[int, int] | None = None
        self._index: dict[str, Path] = {}
        self._lock = threading.Lock()

    def image_path(self, item_id: str) -> Path:
        with self._lock:
            try:
                st = self.manifest.stat()
            except FileNotFoundError:
                raise UnknownItem(f"item {item_id}: no manifest at {self.manifest} (run `dvc repro ingest`)",
                                  item_id) from None
            if self._key != (st.st_mtime_ns, st.st_size):
                from pipeline.core.items import ok_items

                self._index = {it.item_id: self.root / it.source_path for it in ok_items(self.manifest)}
                self._key = (st.st_mtime_ns, st.st_size)
            found = self._index.get(item_id)
        if found is None:
            raise UnknownItem(f"item {item_id!r} is not an ok item of {self.manifest}", item_id)
        return found


@dataclass(frozen=True, eq=False)
class ItemState:
    """What the server keeps per item: the refine item (with its pixels) and its current mask {0, 1}."""

    item: Any  # pipeline.refine.base.RefineItem
    height: int
    width: int
    current: np.ndarray | None


class ItemCache:
    """A thread-safe LRU of :class:`ItemState` holding at most ``capacity`` items; each item is loaded once
    even when several requests for it arrive together (per-item load lock)."""

    def __init__(self, capacity: int, load: Callable[[str], ItemState]) -> None:
        self.capacity = capacity
        self._load = load
        self._items: OrderedDict[str, ItemState] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0
        self.hits = 0

    def get(self, item_id: str) -> tuple[ItemState, bool]:
        """(state, cached)."""
        with self._lock:
            if item_id in self._items:
                self._items.move_to_end(item_id)
                self.hits += 1
                return self._items[item_id], True
            gate = self._loading.setdefault(item_id, threading.Lock())
        with gate:
            with self._lock:
                if item_id in self._items:  # loaded by the request we waited for
                    self._items.move_to_end(item_id)
                    self.hits += 1
                    return self._items[item_id], True
            try:
                state = self._load(item_id)
            finally:
                with self._lock:
                    self._loading.pop(item_id, None)
            with self._lock:
                self.loads += 1
                self._items[item_id] = state
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
            return state, False

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# --------------------------------------------------------------------------- service


def _fetch_hint(message: str) -> str:
    """Name the ``maskloop models fetch`` command for a missing checkpoint message."""
    if "maskloop models fetch" in message:
        return message
    from pipeline.core.weights import WEIGHTS

    names = [n for n, s in WEIGHTS.items() if s.filename in message]
    return f"{message}; fetch it with `maskloop models fetch {names[0] if names else 'NAME'}`" + (
        "" if names else " (see `maskloop models list`)")


def _seed_opencv() -> None:
    """Seed OpenCV's RNG of the calling thread: cv2.grabCut seeds its k-means from it, so without this the same
    clicks could give a visibly different mask depending on what the worker thread ran before."""
    import cv2

    cv2.setRNGSeed(0)


class AssistService:
    """Answers parsed ``/predict`` requests (thread-safe; called from the server's worker threads).

    ``make_engine`` builds the refinement engine (called lazily, once it succeeds); ``paths`` locates the
    manifest and the pipeline's cached outputs; ``label`` is the brush label of the answer; ``root`` the project
    root that relative image paths of the manifest start from.
    """

    def __init__(self, params: AssistParams, paths: Paths, make_engine: Callable[[], Any], engine_name: str,
                 label: str, root: Path = Path(".")) -> None:
        self.params = params
        self.paths = paths
        self.engine_name = engine_name
        self.label = label
        self.model_version = f"{MODEL_CLASS}-{engine_name}"
        self._make_engine = make_engine
        self._engine: Any = None
        self._engine_lock = threading.Lock()
        self.index = ManifestIndex(paths.manifest, root)
        self.items = ItemCache(params.cache_items, self._load_item)

    # ---- engine
    @property
    def engine_loaded(self) -> bool:
        return self._engine is not None

    def engine(self) -> Any:
        if self._engine is not None:
            return self._engine
        from pipeline.preannotators.base import CheckpointError

        with self._engine_lock:
            if self._engine is None:
                try:
                    engine = self._make_engine()
                except CheckpointError as exc:
                    raise WeightsMissing(f"refine engine {self.engine_name}: {_fetch_hint(str(exc))}") from exc
                self._engine = engine
                version = getattr(getattr(engine, "spec", None), "version", "")
                if version:
                    self.model_version = f"{MODEL_CLASS}-{version}"
                log.info("refine engine %s ready (%s)", self.engine_name, self.model_version)
        return self._engine

    # ---- items
    def _load_item(self, item_id: str) -> ItemState:
        from pipeline.core import io
        from pipeline.refine.base import RefineItem

        path = self.index.image_path(item_id)
        try:
            pixels = io.read_image(path)
        except (OSError, ValueError) as exc:  # io.ImageError is a ValueError
            raise ItemUnavailable(f"item {item_id}: its image cannot be read ({exc})", item_id) from None
        item = RefineItem(item_id=item_id, image_path=path, paths=self.paths, pixels=pixels)
        h, w = pixels.shape[:2]
        current = item.preannotation()
        if current is not None and current.shape != (h, w):
            raise StalePreannotation(f"item {item_id}: its pre-annotation is {current.shape[1]}x{current.shape[0]}, "
                                     f"the image is {w}x{h}: re-run `dvc repro preannotate`", item_id)
        return ItemState(item=item, height=h, width=w, current=current)

    # ---- predict
    def predict(self, req: PredictRequest) -> dict[str, Any]:
        """The ``/predict`` answer for ``req``; :class:`AssistError` for anything that cannot be answered."""
        if not req.interactive:
            return predict_response([], self.model_version, 0.0)
        from pipeline.refine.base import Box, Click, RefineInputError

        t0 = time.perf_counter()
        state, cached = self.items.get(req.item_id)
        pts = pixel_points(req.points, state.width, state.height, req.item_id)
        box = pixel_box(req.box, state.width, state.height, req.item_id) if req.box is not None else None
        engine = self.engine()
        _seed_opencv()
        try:
            result = engine.refine(state.item, state.current, [Click(x, y, pos) for x, y, pos in pts],
                                   Box(*box) if box is not None else None)
        except RefineInputError as exc:
            raise BadPrompt(str(exc), req.item_id) from exc
        except UserError as exc:
            from pipeline.preannotators.base import CheckpointError

            if isinstance(exc, CheckpointError):
                raise WeightsMissing(f"refine engine {self.engine_name}: {_fetch_hint(str(exc))}",
                                     req.item_id) from exc
            raise
        region = brush_region(result.mask, self.label, req.brush_from, req.brush_to,
                              region_id(req.item_id, pts, box), score=None)
        score = mask_confidence(result.probability)
        log.info("item %s: %d click(s)%s refined in %.3f s (item %s, engine state %s)", req.item_id, len(pts),
                 " + box" if box else "", time.perf_counter() - t0, "cached" if cached else "loaded",
                 "cached" if getattr(result, "cached", False) else "computed")
        return predict_response([region], self.model_version, score)


# --------------------------------------------------------------------------- ASGI app


def create_app(service: AssistService) -> Starlette:
    """The Starlette app serving ``service`` (``/``, ``/health``, ``/setup``, ``/predict``, ``/webhook``,
    ``/versions``, ``/metrics``)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    params = service.params
    executor = ThreadPoolExecutor(max_workers=params.workers, thread_name_prefix="assist")
    pending = {"n": 0, "served": 0, "errors": 0}

    def error(exc: AssistError) -> JSONResponse:
        pending["errors"] += 1
        return JSONResponse(exc.payload(), status_code=exc.status)

    async def read_json(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MalformedRequest(f"the request body is not valid JSON ({exc.__class__.__name__}: "
                                   f"{str(exc)[:120]})") from None

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "UP", "model_class": MODEL_CLASS, "engine": service.engine_name,
                             "engine_loaded": service.engine_loaded, "model_version": service.model_version})

    async def setup(request: Request) -> JSONResponse:
        try:
            body = await read_json(request)
            if not isinstance(body, dict):
                raise MalformedRequest("the /setup body must be a JSON object")
            schema = body.get("schema")
            if isinstance(schema, str) and schema.strip() and brush_tool(schema) is None:
                raise MalformedRequest("the project's labeling config has no BrushLabels tool (with name and "
                                       "toName) to answer with; push with maskloop or add one")
        except AssistError as exc:
            return error(exc)
        return JSONResponse({"model_version": service.model_version})

    async def predict(request: Request) -> JSONResponse:
        try:
            req = parse_predict(await read_json(request))
            if pending["n"] >= params.max_pending:
                raise Busy(f"{pending['n']} requests are running or waiting (max_pending {params.max_pending}); "
                           "try again", req.item_id)
        except AssistError as exc:
            return error(exc)
        pending["n"] += 1
        try:
            out = await asyncio.get_running_loop().run_in_executor(executor, service.predict, req)
        except AssistError as exc:
            log.warning("%s", exc)
            return error(exc)
        except UserError as exc:
            log.warning("item %s: %s", req.item_id, exc)
            return error(BadPrompt(str(exc), req.item_id))
        except Exception as exc:
            log.exception("item %s: refinement failed", req.item_id)
            pending["errors"] += 1
            return JSONResponse({"error": "internal_error", "item_id": req.item_id,
                                 "message": f"item {req.item_id}: {type(exc).__name__}: {str(exc)[:300]}"},
                                status_code=500)
        finally:
            pending["n"] -= 1
        pending["served"] += 1
        return JSONResponse(out)

    async def webhook(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ignored", "reason": "maskloop trains in its own pipeline (dvc repro train)"})

    async def versions(request: Request) -> JSONResponse:
        return JSONResponse({"versions": [service.model_version], "message": ""})

    async def metrics(request: Request) -> JSONResponse:
        return JSONResponse({"pending": pending["n"], "served": pending["served"], "errors": pending["errors"],
                             "items_cached": len(service.items), "item_loads": service.items.loads,
                             "item_hits": service.items.hits})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        try:
            yield
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    return Starlette(routes=[
        Route("/", health, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/setup", setup, methods=["POST"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/webhook", webhook, methods=["POST"]),
        Route("/versions", versions, methods=["GET", "POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ], lifespan=lifespan)


# --------------------------------------------------------------------------- command


def build_service(params_path: Path, engine: str = "", workers: int = 0) -> AssistService:
    """An :class:`AssistService` from params.yaml (``annotation.labelstudio.assist``, ``refine``, ``paths``)."""
    from dataclasses import replace

    from pipeline.annotation.labelstudio import LabelStudioParams
    from pipeline.core.params import from_mapping, load_paths, read_params_file
    from pipeline.refine import REFINERS, build_refiner
    from pipeline.refine.base import load_refine_params

    data = read_params_file(params_path)
    section = ((data.get("annotation") or {}).get("labelstudio") or {})
    ls = from_mapping(LabelStudioParams, section, f"{params_path}:annotation.labelstudio")
    assist = ls.assist if not workers else replace(ls.assist, workers=workers,
                                                   max_pending=max(ls.assist.max_pending, workers))
    paths = load_paths(params_path)
    refine = load_refine_params(params_path)
    name = engine or assist.engine or refine.engine
    if name not in REFINERS:
        raise UserError(f"unknown refine engine {name!r}; choose one of {sorted(REFINERS)}")
    return AssistService(assist, paths, lambda: build_refiner(name, refine, paths), name, ls.label)


def serve(params_path: Path, host: str = "", port: int = 0, engine: str = "", workers: int = 0) -> None:
    """Run the backend until interrupted."""
    import uvicorn

    service = build_service(params_path, engine, workers)
    host = host or service.params.host
    port = port or service.params.port
    log.info("maskloop assist: engine %s, %d workers, on http://%s:%d (Label Studio reaches it at %s)",
             service.engine_name, service.params.workers, host, port, service.params.url)
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False)


def register(app: typer.Typer) -> None:
    """Add ``maskloop assist`` to the CLI."""

    @app.command("assist")
    def assist_cmd(
        params: Annotated[Path, typer.Option("--params", "-p", help="params file.")] = DEFAULT_PARAMS,
        host: Annotated[str, typer.Option("--host", help="listen address (default: assist.host).")] = "",
        port: Annotated[int, typer.Option("--port", help="listen port (default: assist.port).")] = 0,
        engine: Annotated[str, typer.Option("--engine", help="refine engine (default: assist.engine or "
                                                             "refine.engine).")] = "",
        workers: Annotated[int, typer.Option("--workers", help="refinements at once (default: assist.workers).")] = 0,
    ) -> None:
        """Serve interactive refinement to Label Studio (an ML backend): smart keypoints/rectangles in, a
        refined brush mask of the task's item out. `maskloop push` connects it when
        annotation.labelstudio.assist.enabled is true."""
        from pipeline.cli import run_guarded

        run_guarded(serve, params, host, port, engine, workers)
