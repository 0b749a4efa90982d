"""The ``cvat`` annotation backend: push pre-annotations to CVAT as mask shapes, pull finished jobs back.

Push (idempotent)
-----------------
1. Connect (``CVAT_URL`` or ``url``; user/password or a personal access token from the environment / ``.env``),
   read the server version (refusing servers older than ``min_server_version``), log in.
2. Find the project named ``project_name`` or create it with ``labels``.
3. Map items already on the server: every frame is uploaded as ``<item_id><ext>``, so a task's frame names
   say which item sits on which ``(task, frame)``. Tasks left empty by an interrupted push are deleted.
4. New items (highest ``uncertainty`` first) go into new tasks of ``task_size`` frames each, so no request
   grows with the dataset; each pre-annotation becomes one ``mask`` shape (CVAT RLE, holes and parts kept)
   or, with ``shape_type: polygon``, one polygon per outer contour (holes lost), marked ``source: auto``.
5. Items whose pre-annotation changed (digest differs from the receipt, or no receipt row) get the shapes
   of their frame replaced, only while every shape on that frame is still ``auto`` (nobody has touched it).

Pull
----
Only jobs whose ``state`` is in ``pull_states`` and ``stage`` in ``pull_stages`` count. Every frame of such a
job with at least one counted region becomes a correction: masks, polygons (rasterised at the original size),
rectangles and ellipses of the ``foreground_labels`` are merged (union). Annotator = job assignee; times = the
job's; ``annotation_id`` = ``job<id>:frame<n>``.

Errors: every request goes through cvat-sdk's urllib3 pool, which carries the one retry policy of the annotation
backends (:func:`pipeline.annotation.http.make_retry`, shared with Label Studio): failures to connect are retried
for any method, read errors and HTTP 429/5xx only for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE),
``max_retries`` times with exponential backoff. POST and PATCH (creating a task, uploading shapes) are never
blindly repeated: a re-run finds what was created by frame name. Then one clear
:class:`~pipeline.core.errors.UserError` (:meth:`CvatConnection.retry` translates, it does not repeat).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from pipeline.annotation.base import PullOutcome, PullProblem, PushItem, PushOutcome, ReceiptRow
from pipeline.annotation.cvat_codec import encode_mask, mask_to_polygons
from pipeline.annotation.formats_cvat import is_item_id, iso_utc, mask_from_shapes, shapes_from_api
from pipeline.annotation.http import RETRY_STATUSES, HttpParams, make_retry, redact, register_secret, safe_url
from pipeline.core import io
from pipeline.core.errors import ConfigError, UserError
from pipeline.core.params import Paths, from_mapping

log = logging.getLogger(__name__)

BACKEND = "cvat"
AUTO_SOURCE = "auto"
JOB_STATES = ("new", "in progress", "rejected", "completed")
JOB_STAGES = ("annotation", "validation", "acceptance")
T = TypeVar("T")


@dataclass(frozen=True)
class CvatParams:
    """Section ``annotation.cvat`` of params.yaml (see ``docs/cvat.md``).

    ``url`` is overridden by the environment variable named ``url_env`` when it is set. Credentials come
    from the variables named ``username_env`` / ``password_env`` (or a personal access token in
    ``access_token_env``), never from this file. ``labels``: the project's labels; pre-annotations use
    ``labels[0]``. ``foreground_labels``: labels counted as foreground on pull (empty = all of ``labels``).
    """

    url: str = "http://localhost:8080"
    url_env: str = "CVAT_URL"
    username_env: str = "CVAT_USERNAME"
    password_env: str = "CVAT_PASSWORD"
    access_token_env: str = "CVAT_ACCESS_TOKEN"
    organization: str = ""
    project_name: str = "maskloop"
    labels: tuple[str, ...] = ("foreground",)
    foreground_labels: tuple[str, ...] = ()
    task_size: int = 50
    shape_type: Literal["mask", "polygon"] = "mask"
    image_quality: int = 95
    pull_states: tuple[str, ...] = ("completed",)
    pull_stages: tuple[str, ...] = JOB_STAGES
    min_server_version: str = "2.20"
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    verify_ssl: bool = True

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if not self.project_name.strip():
            raise ValueError("project_name must not be empty")
        if not self.labels or any(not lbl.strip() for lbl in self.labels):
            raise ValueError(f"labels must be a non-empty list of names, got {list(self.labels)}")
        unknown = sorted(set(self.foreground_labels) - set(self.labels))
        if unknown:
            raise ValueError(f"foreground_labels {unknown} are not in labels {list(self.labels)}")
        if self.task_size < 1:
            raise ValueError(f"task_size must be >= 1, got {self.task_size}")
        if not 1 <= self.image_quality <= 100:
            raise ValueError(f"image_quality must be in 1..100, got {self.image_quality}")
        bad_states = sorted(set(self.pull_states) - set(JOB_STATES))
        bad_stages = sorted(set(self.pull_stages) - set(JOB_STAGES))
        if bad_states or not self.pull_states:
            raise ValueError(f"pull_states must be a non-empty subset of {list(JOB_STATES)}, got {list(self.pull_states)}")
        if bad_stages or not self.pull_stages:
            raise ValueError(f"pull_stages must be a non-empty subset of {list(JOB_STAGES)}, got {list(self.pull_stages)}")
        if self.max_retries < 0 or self.backoff_s < 0 or self.timeout_s <= 0:
            raise ValueError("max_retries and backoff_s must be >= 0 and timeout_s > 0")
        _parse_version(self.min_server_version, "min_server_version")

    def http(self) -> HttpParams:
        """The retry/timeout settings shared with the other backends (:mod:`pipeline.annotation.http`)."""
        return HttpParams(timeout_s=self.timeout_s, max_retries=self.max_retries, backoff_s=self.backoff_s)

    def server_url(self) -> str:
        """``url``, or the value of the ``url_env`` environment variable when that is set."""
        env = os.environ.get(self.url_env, "").strip() if self.url_env else ""
        return (env or self.url).rstrip("/")

    def counted_labels(self) -> tuple[str, ...]:
        return self.foreground_labels or self.labels


def _parse_version(text: str, what: str) -> Any:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(str(text))
    except InvalidVersion as exc:
        raise ValueError(f"{what}: {text!r} is not a version number") from exc


# --------------------------------------------------------------------------- retries


def transient_reason(exc: BaseException, idempotent: bool) -> str | None:
    """Why ``exc`` is worth retrying (None when it is not). Connection failures before a request was sent are
    always transient; dropped connections, timeouts and HTTP 429/5xx only for idempotent requests."""
    import urllib3.exceptions as u3
    from cvat_sdk.api_client.exceptions import ApiException

    if isinstance(exc, u3.MaxRetryError):
        inner = exc.reason
        if isinstance(inner, u3.NewConnectionError | u3.ConnectTimeoutError):
            return f"cannot connect ({type(inner).__name__})"
        return f"{type(inner).__name__ if inner else 'connection error'}" if idempotent else None
    if isinstance(exc, u3.NewConnectionError | u3.ConnectTimeoutError | ConnectionRefusedError):
        return f"cannot connect ({type(exc).__name__})"
    if isinstance(exc, u3.HTTPError | ConnectionError | TimeoutError):
        return type(exc).__name__ if idempotent else None
    if isinstance(exc, ApiException) and (exc.status in RETRY_STATUSES or (exc.status or 0) >= 500):
        return f"HTTP {exc.status}" if idempotent else None
    return None


def with_retries(fn: Callable[[], T], what: str, *, url: str, max_retries: int, backoff_s: float,
                 idempotent: bool = True, sleep: Callable[[float], None] = time.sleep,
                 attempts: int | None = None) -> T:
    """Call ``fn``; on a transient failure retry up to ``max_retries`` times, waiting ``backoff_s * 2**k``
    seconds; then raise a :class:`UserError` naming the server and the operation. Other HTTP errors (401/403
    credentials, 4xx, 5xx of non-idempotent requests) become a :class:`UserError` at once; errors that are not
    from the server (bugs, bad data) propagate unchanged. ``attempts`` is the number of tries the final message
    reports (default ``max_retries + 1``; :class:`CvatConnection` passes ``max_retries=0`` because its pool
    already retried each request)."""
    from cvat_sdk.api_client.exceptions import ApiException

    last = ""
    for attempt in range(max_retries + 1):
        if attempt:
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning("CVAT %s failed (%s); retry %d/%d in %.1f s", what, last, attempt, max_retries, delay)
            sleep(delay)
        try:
            return fn()
        except Exception as exc:
            # CVAT 2.23 answers a wrong password with HTTP 400, older servers with 401
            refused = exc.status in (401, 403) or (what == "login" and exc.status == 400) \
                if isinstance(exc, ApiException) else False
            if refused:
                raise UserError(f"CVAT at {url} refused {what} (HTTP {exc.status}): check the credentials "  # type: ignore[attr-defined]
                                "(CVAT_USERNAME / CVAT_PASSWORD or CVAT_ACCESS_TOKEN) and their permissions") from None
            reason = transient_reason(exc, idempotent)
            if reason is None:
                if isinstance(exc, ApiException):
                    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or "")
                    again = "" if idempotent else " (not repeated automatically; re-running is safe)"
                    raise UserError(redact(f"CVAT at {url}: {what} failed with HTTP {exc.status} {exc.reason or ''}"
                                           f"{again}: {body[:300]}").rstrip(": ")) from None
                raise
            last = reason
    tries = max_retries + 1 if attempts is None else attempts
    raise UserError(f"CVAT at {url} is unreachable: {what} failed {tries} times ({last}); is the server "
                    "running? Nothing is duplicated: re-run the command when it is back")


# --------------------------------------------------------------------------- connection


def check_server_version(version: str, minimum: str, url: str) -> bool:
    """Refuse (:class:`UserError`) a server older than ``minimum`` or with an unreadable version; returns whether
    cvat-sdk lists the server among its supported versions (same major.minor as the SDK or the next one)."""
    from cvat_sdk.core.client import Client

    try:
        found = _parse_version(version, "server version")
    except ValueError as exc:
        raise UserError(f"CVAT at {url} reports version {version!r}, which is not a version number") from exc
    if found < _parse_version(minimum, "min_server_version"):
        raise UserError(f"CVAT at {url} runs version {version}; maskloop needs {minimum} or newer")
    return any(found.release[:2] == v.release[:2] for v in Client.SUPPORTED_SERVER_VERSIONS)


class CvatConnection:
    """A logged-in cvat-sdk client with bounded retries. Nothing connects until :meth:`client` is used."""

    def __init__(self, params: CvatParams, username: str = "", password: str = "", token: str = "") -> None:
        if not token and not (username and password):
            raise ConfigError(f"CVAT credentials are missing: set {params.username_env} and {params.password_env} "
                              f"(or {params.access_token_env}) in the environment or an untracked .env")
        self.params = params
        self.url = params.server_url()
        self.shown_url = safe_url(self.url)  # for messages: no user:password@
        self._username = username
        self._password = password
        self._token = token
        for secret in (password, token):
            register_secret(secret)
        self._client: Any = None
        self.server_version = ""

    def __repr__(self) -> str:  # never show a secret
        return f"CvatConnection({self.shown_url!r}, user={self._username!r})"

    def retry(self, what: str, fn: Callable[[], T], idempotent: bool = True) -> T:
        """``fn`` with its failures translated into one clear :class:`UserError`. It does not repeat anything:
        each request was already retried by the client's pool under the shared policy (:meth:`build_client`,
        :func:`pipeline.annotation.http.make_retry`: idempotent methods only, POST/PATCH never blindly)."""
        http = self.params.http()
        return with_retries(fn, what, url=self.shown_url, max_retries=0, backoff_s=0, idempotent=idempotent,
                            attempts=http.max_retries + 1)

    def client(self) -> Any:
        """The connected client (connects, checks the server version and logs in on first use)."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def build_client(self) -> Any:
        """A cvat-sdk client, not yet connected, whose urllib3 pool retries every request under the shared policy
        of the annotation backends (:func:`pipeline.annotation.http.make_retry`: connection failures for any
        method, read errors and HTTP 429/5xx for idempotent methods only) with the shared timeout."""
        import urllib3
        from cvat_sdk.core.client import Client, Config

        # cvat-sdk 2.80 refuses to talk to older servers during its own version check: skip it, do ours instead
        client = Client(self.url, config=Config(verify_ssl=self.params.verify_ssl), check_server_version=False)
        http = self.params.http()
        retry = make_retry(http, "CVAT")
        client.api_client.configuration.retries = retry  # what the SDK would build a new pool from
        pool = client.api_client.rest_client.pool_manager  # built already: its per-host pools take these kwargs
        pool.connection_pool_kw["retries"] = retry
        pool.connection_pool_kw["timeout"] = urllib3.util.Timeout(connect=http.timeout_s, read=http.timeout_s)
        pool.clear()  # no per-host pool made before this keeps the SDK's own policy
        return client

    def _connect(self) -> Any:
        from cvat_sdk.core.client import AccessTokenCredentials, Client, PasswordCredentials

        client = self.build_client()
        self.server_version = self.retry("version check (GET /api/server/about)", lambda: self._about(client))
        if not check_server_version(self.server_version, self.params.min_server_version, self.shown_url):
            log.info("CVAT server %s is outside cvat-sdk's tested range (%s); its own version check is skipped",
                     self.server_version, ", ".join(str(v) for v in Client.SUPPORTED_SERVER_VERSIONS))
        creds = AccessTokenCredentials(self._token) if self._token else PasswordCredentials(self._username,
                                                                                            self._password)
        self.retry("login", lambda: client.login(creds), idempotent=False)  # a POST: the pool never repeats it
        if self.params.organization:
            client.organization_slug = self.params.organization
        log.info("connected to CVAT %s at %s", self.server_version, self.shown_url)
        return client

    def _about(self, client: Any) -> str:
        import json

        _, resp = client.api_client.server_api.retrieve_about_endpoint.call_with_http_info(
            _parse_response=False, _request_timeout=self.params.timeout_s)
        version = str(json.loads(resp.data).get("version") or "")
        if not version:
            raise UserError(f"{self.shown_url} answered /api/server/about without a version: is this a CVAT server?")
        return version

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# --------------------------------------------------------------------------- pure helpers (tested offline)


def frame_file_name(item: PushItem) -> str:
    """The name a frame is uploaded under: ``<item_id><ext>`` (the ext of the source image, lower case)."""
    ext = Path(item.image_path).suffix.lower() or ".jpg"
    return f"{item.item_id}{ext}"


def task_chunks(items: Sequence[PushItem], size: int) -> list[list[PushItem]]:
    """New items in queue order (highest uncertainty first, then item id), cut into tasks of ``size``."""
    order = sorted(items, key=lambda it: (-it.uncertainty, it.item_id))
    return [order[i : i + size] for i in range(0, len(order), size)]


def task_name(project: str, chunk: Sequence[PushItem]) -> str:
    """Deterministic task name: the project name and the first item id of the chunk."""
    return f"{project} {chunk[0].item_id}"


def frames_by_item(frame_names: Sequence[str]) -> dict[str, int]:
    """{item_id: frame index} from a task's frame names (names that are not ``<item_id>.<ext>`` are skipped)."""
    out: dict[str, int] = {}
    for index, name in enumerate(frame_names):
        stem = Path(name).stem
        if is_item_id(stem):
            out.setdefault(stem, index)
    return out


def classify_items(items: Sequence[PushItem], on_server: Mapping[str, tuple[int, int]],
                   receipt: Sequence[ReceiptRow]) -> tuple[list[PushItem], list[PushItem], list[PushItem]]:
    """Split ``items`` into (new, changed, unchanged). New: not on the server. Changed: on the server but the
    receipt has no active CVAT row with the same digest (a push cut short, or a new pre-annotation)."""
    digests = {r.item_id: r.prediction_digest for r in receipt if r.backend == BACKEND and r.status == "active"}
    new, changed, unchanged = [], [], []
    for it in sorted(items, key=lambda i: i.item_id):
        if it.item_id not in on_server:
            new.append(it)
        elif digests.get(it.item_id) != it.digest():
            changed.append(it)
        else:
            unchanged.append(it)
    return new, changed, unchanged


def receipt_rows(items: Sequence[PushItem], placed: Mapping[str, tuple[int, int]], project_id: int,
                 receipt: Sequence[ReceiptRow], pushed: Mapping[str, str], server_version: str = "",
                 ) -> tuple[list[ReceiptRow], list[str]]:
    """The receipt after a push: one active row per item (sorted), plus ``removed`` rows for items that left the
    dataset (their tasks are kept on the server). ``pushed``: digest of what is on the server per item;
    ``server_version``: the CVAT version the push talked to (recorded on the active rows)."""
    current = {it.item_id for it in items}
    rows = []
    for it in sorted(items, key=lambda i: i.item_id):
        task_id, frame = placed[it.item_id]
        rows.append(ReceiptRow(item_id=it.item_id, backend=BACKEND, project_id=str(project_id), task_id=str(task_id),
                               frame=int(frame), prediction_digest=pushed.get(it.item_id, ""),
                               model_version=it.model_version, status="active", server_version=server_version))
    removed = sorted({r.item_id for r in receipt if r.item_id not in current})
    old = {r.item_id: r for r in receipt}
    for item_id in removed:
        r = old[item_id]
        rows.append(ReceiptRow(item_id=r.item_id, backend=r.backend, project_id=r.project_id, task_id=r.task_id,
                               frame=r.frame, prediction_digest=r.prediction_digest, model_version=r.model_version,
                               pushed_digest=r.pushed_digest, status="removed", server_version=r.server_version))
    rows.sort(key=lambda r: r.item_id)
    return rows, removed


def plan_replacement(items: Sequence[PushItem], placed: Mapping[str, tuple[int, int]],
                     shapes: Sequence[tuple[int, int, str]]) -> tuple[list[PushItem], list[PushItem], list[int]]:
    """Which changed items of one task get new shapes. ``shapes``: ``(shape_id, frame, source)`` of every shape
    in the task. A frame whose shapes are all ``auto`` (or that has none) is replaced: its shape ids are
    returned as stale; a frame with any other source was edited by a person and is kept.
    Returns (to replace, kept, stale shape ids)."""
    on_frame: dict[int, list[tuple[int, str]]] = {}
    for shape_id, frame, source in shapes:
        on_frame.setdefault(frame, []).append((shape_id, source))
    todo: list[PushItem] = []
    kept: list[PushItem] = []
    stale: list[int] = []
    for it in sorted(items, key=lambda i: i.item_id):
        old = on_frame.get(placed[it.item_id][1], [])
        if any(source != AUTO_SOURCE for _, source in old):
            kept.append(it)
            continue
        todo.append(it)
        stale.extend(shape_id for shape_id, _ in old)
    return todo, kept, sorted(stale)


@dataclass(frozen=True)
class ServerShape:
    """A shape on the server, as far as a push compares it: where it is, who made it and what it is."""

    shape_id: int
    frame: int
    source: str
    type: str = ""
    label_id: int = -1
    points: tuple[float, ...] = ()

    def signature(self) -> tuple[str, int, tuple[float, ...]]:
        return shape_signature(self.type, self.label_id, self.points)


def shape_signature(shape_type: str, label_id: int, points: Sequence[float]) -> tuple[str, int, tuple[float, ...]]:
    """What makes two shapes identical for a push (points rounded to 0.01 px: the server stores floats)."""
    return str(shape_type), int(label_id), tuple(round(float(p), 2) for p in points)


@dataclass(frozen=True)
class SyncPlan:
    """What a push does with the frames of items that are on the server but whose receipt digest differs or is
    missing (a new pre-annotation, or a lost receipt being rebuilt)."""

    replace: tuple[PushItem, ...]  # auto shapes differ from the pre-annotation: replaced
    identical: tuple[PushItem, ...]  # the server already holds exactly these shapes: nothing is sent
    kept: tuple[PushItem, ...]  # changed since the last push, but people own the frame: not sent (warned)
    adopted: tuple[PushItem, ...]  # no receipt row and people own the frame: recorded as sent, no warning
    stale: tuple[int, ...]  # shape ids removed before the replacement shapes are added


def plan_sync(items: Sequence[PushItem], placed: Mapping[str, tuple[int, int]], shapes: Sequence[ServerShape],
              expected: Mapping[str, Sequence[tuple[str, int, tuple[float, ...]]]], known: AbstractSet[str],
              locked_frames: AbstractSet[int] = frozenset()) -> SyncPlan:
    """Plan one task's frames (pure). ``expected``: item_id -> signatures of the shapes its current pre-annotation
    gives; ``known``: items with an active receipt row (a differing digest there is a real change);
    ``locked_frames``: frames of completed jobs.

    A frame whose shapes are all ``auto`` and equal ``expected`` is left alone (rebuilding a lost receipt rewrites
    nothing identical and bumps no job's date). A frame a person edited (any non-``auto`` shape) is never
    rewritten: for a known item that is a changed pre-annotation not sent (warned); for an item the
    receipt did not know it is adopted (its current digest recorded, so later pushes raise no false warning); so is
    a frame of a completed job the receipt did not know (the annotator accepted its auto shapes). Any other frame
    gets its auto shapes replaced (a known item's genuinely new pre-annotation, also in a completed job)."""
    on_frame: dict[int, list[ServerShape]] = {}
    for sh in shapes:
        on_frame.setdefault(sh.frame, []).append(sh)
    replace: list[PushItem] = []
    identical: list[PushItem] = []
    kept: list[PushItem] = []
    adopted: list[PushItem] = []
    stale: list[int] = []
    for it in sorted(items, key=lambda i: i.item_id):
        frame = placed[it.item_id][1]
        old = on_frame.get(frame, [])
        people = any(sh.source != AUTO_SOURCE for sh in old)
        if not people and sorted(sh.signature() for sh in old) == sorted(expected.get(it.item_id, ())):
            identical.append(it)
        elif people:
            (kept if it.item_id in known else adopted).append(it)
        elif frame in locked_frames and it.item_id not in known:
            adopted.append(it)  # rebuilding: a completed job's auto shapes are what the annotator accepted
        else:
            replace.append(it)
            stale.extend(sh.shape_id for sh in old)
    return SyncPlan(tuple(replace), tuple(identical), tuple(kept), tuple(adopted), tuple(sorted(stale)))


def shape_points(mask: np.ndarray, shape_type: str) -> list[list[float]]:
    """The points of the shapes that carry ``mask`` ``(H, W)`` uint8 ``{0, 255}``: one mask shape, or one
    polygon per outer contour. An empty mask gives no shape."""
    if not mask.any():
        return []
    if shape_type == "mask":
        return [[float(v) for v in encode_mask(mask > 0)]]
    return mask_to_polygons(mask > 0)


def _str(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


@contextmanager
def _staged_frames(chunk: Sequence[PushItem]) -> Iterator[list[Path]]:
    """The chunk's images under their frame names in a temporary folder (hard links when possible)."""
    tmp = Path(tempfile.mkdtemp(prefix="maskloop-cvat-"))
    try:
        paths = []
        for it in chunk:
            dest = tmp / frame_file_name(it)
            try:
                os.link(it.image_path, dest)
            except OSError:
                shutil.copyfile(it.image_path, dest)
            paths.append(dest)
        yield sorted(paths)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the backend


class CvatBackend:
    """Push/pull against a CVAT server (see module docstring)."""

    name = BACKEND

    def __init__(self, params: CvatParams, connection: CvatConnection, paths: Paths | None = None) -> None:
        self.params = params
        self.conn = connection
        self.paths = paths or Paths()

    # ---- server look-ups

    def find_project(self) -> Any | None:
        client = self.conn.client()
        name = self.params.project_name
        projects = self.conn.retry("project lookup", lambda: client.projects.list())
        found = sorted((p for p in projects if p.name == name), key=lambda p: p.id)
        if len(found) > 1:
            log.warning("%d CVAT projects are named %r; using the oldest (id %d)", len(found), name, found[0].id)
        return found[0] if found else None

    def ensure_project(self) -> Any:
        from cvat_sdk import models

        project = self.find_project()
        if project is None:
            client = self.conn.client()
            spec = models.ProjectWriteRequest(
                name=self.params.project_name,
                labels=[models.PatchedLabelRequest(name=n, type="any") for n in self.params.labels])
            project = self.conn.retry("project creation", lambda: client.projects.create(spec), idempotent=False)
            log.info("created CVAT project %r (id %d)", self.params.project_name, project.id)
        return project

    def label_ids(self, project: Any) -> dict[str, int]:
        labels = self.conn.retry("label lookup", lambda: project.get_labels())
        ids = {str(lbl.name): int(lbl.id) for lbl in labels}
        missing = [n for n in self.params.labels if n not in ids]
        if missing:
            raise UserError(f"CVAT project {self.params.project_name!r} (id {project.id}) lacks the label(s) {missing}; "
                            f"it has {sorted(ids)}: add them in CVAT or change annotation.cvat.labels")
        return ids

    def tasks(self, project: Any) -> list[Any]:
        tasks = self.conn.retry("task list", lambda: project.get_tasks())
        return sorted(tasks, key=lambda t: t.id)

    def frame_names(self, task: Any) -> list[str]:
        frames = self.conn.retry(f"frame list of task {task.id}", lambda: task.get_frames_info())
        return [str(f.name) for f in frames]

    def _frame_sizes(self, task: Any) -> list[tuple[str, int, int]]:
        frames = self.conn.retry(f"frame list of task {task.id}", lambda: task.get_frames_info())
        return [(str(f.name), int(f.height), int(f.width)) for f in frames]

    # ---- push

    def _server_map(self, project: Any) -> tuple[dict[str, tuple[int, int]], dict[int, Any]]:
        """{item_id: (task_id, frame)} for every frame on the server; deletes tasks left empty by a cut push."""
        placed: dict[str, tuple[int, int]] = {}
        by_id: dict[int, Any] = {}
        prefix = f"{self.params.project_name} "
        for task in self.tasks(project):
            if not int(task.size or 0):
                if str(task.name).startswith(prefix):
                    log.warning("deleting CVAT task %d (%s): it has no images (an earlier push was cut short)",
                                task.id, task.name)
                    self.conn.retry(f"deletion of empty task {task.id}", task.remove)
                continue
            by_id[int(task.id)] = task
            for item_id, frame in frames_by_item(self.frame_names(task)).items():
                if item_id in placed:
                    log.warning("item %s is on CVAT twice (task %d and %d); using task %d", item_id,
                                placed[item_id][0], task.id, placed[item_id][0])
                    continue
                placed[item_id] = (int(task.id), frame)
        return placed, by_id

    def _shape_requests(self, it: PushItem, frame: int, label_id: int) -> list[Any]:
        from cvat_sdk import models

        if it.mask_path is None:
            return []
        mask = io.read_mask(it.mask_path, shape=(it.height, it.width))
        return [models.LabeledShapeRequest(type=models.ShapeType(self.params.shape_type), frame=frame,
                                           label_id=label_id, points=pts, source=AUTO_SOURCE, occluded=False,
                                           z_order=0, attributes=[])
                for pts in shape_points(mask, self.params.shape_type)]

    def _add_shapes(self, task: Any, frames: Mapping[str, int], items: Sequence[PushItem], label_id: int) -> None:
        from cvat_sdk import models
        from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

        shapes = [s for it in items for s in self._shape_requests(it, frames[it.item_id], label_id)]
        if shapes:
            data = models.PatchedLabeledDataRequest(shapes=shapes, tags=[], tracks=[])
            self.conn.retry(f"upload of {len(shapes)} shapes to task {task.id}",
                            lambda: task.update_annotations(data, action=AnnotationUpdateAction.CREATE),
                            idempotent=False)

    def _create_task(self, project: Any, chunk: Sequence[PushItem]) -> Any:
        from cvat_sdk import models

        client = self.conn.client()
        name = task_name(self.params.project_name, chunk)
        with _staged_frames(chunk) as files:
            spec = models.TaskWriteRequest(name=name, project_id=project.id)
            try:
                task = client.tasks.create_from_data(
                    spec=spec, resources=files,
                    data_params={"image_quality": self.params.image_quality, "sorting_method": "lexicographical"})
            except Exception as exc:
                from cvat_sdk.api_client.exceptions import ApiException
                from cvat_sdk.core.exceptions import CvatSdkException

                reason = transient_reason(exc, idempotent=True)
                if reason is None and isinstance(exc, ApiException | CvatSdkException):
                    reason = str(exc).strip().replace("\n", " ")[:300]
                if reason is None:
                    raise
                raise UserError(f"CVAT at {self.conn.shown_url}: creating task {name!r} failed ({reason}); re-run the "
                                "push: tasks already complete are found again by their frame names, an empty "
                                "one is deleted") from exc
        return task

    def push(self, items: Sequence[PushItem], receipt: Sequence[ReceiptRow]) -> PushOutcome:
        project = self.ensure_project()
        label_id = self.label_ids(project)[self.params.labels[0]]
        placed, tasks = self._server_map(project)
        new, changed, unchanged = classify_items(items, placed, receipt)
        pushed = {r.item_id: r.prediction_digest for r in receipt if r.backend == BACKEND and r.status == "active"}
        chunks = task_chunks(new, self.params.task_size)
        for n, chunk in enumerate(chunks, 1):
            task = self._create_task(project, chunk)
            frames = frames_by_item(self.frame_names(task))
            missing = [it.item_id for it in chunk if it.item_id not in frames]
            if missing:
                raise UserError(f"CVAT task {task.id} was created without the frames of items {missing[:5]}")
            self._add_shapes(task, frames, chunk, label_id)
            for it in chunk:
                placed[it.item_id] = (int(task.id), frames[it.item_id])
                pushed[it.item_id] = it.digest()
            log.info("CVAT: task %d with %d frames created (%d/%d)", task.id, len(chunk), n, len(chunks))
        known = {item_id for item_id, digest in pushed.items() if digest}  # an empty digest was never a real push
        plan = self._replace_changed(changed, placed, tasks, label_id, known)
        replaced, kept = list(plan.replace), list(plan.kept)
        for it in (*plan.replace, *plan.identical, *plan.adopted):
            pushed[it.item_id] = it.digest()
        if plan.identical:
            log.info("CVAT: %d frames already hold exactly their pre-annotation; nothing sent for them",
                     len(plan.identical))
        if plan.adopted:
            log.info("CVAT: receipt rebuilt for %d frames people edited (or in completed jobs): kept as they are",
                     len(plan.adopted))
        if kept:
            log.warning("CVAT: %d changed pre-annotations were not sent because people already edited those frames "
                        "(or their jobs are completed): %s", len(kept), ", ".join(it.item_id for it in kept[:10]))
        rows, removed = receipt_rows(items, placed, int(project.id), receipt, pushed, self.conn.server_version)
        if removed:
            log.info("CVAT: %d items left the dataset; their frames stay on the server", len(removed))
        return PushOutcome(receipt=tuple(rows), created=len(new), updated=len(replaced),
                           unchanged=len(unchanged) + len(kept) + len(plan.identical) + len(plan.adopted),
                           removed=tuple(removed),
                           server_version=self.conn.server_version)

    def _replace_changed(self, changed: Sequence[PushItem], placed: Mapping[str, tuple[int, int]],
                         tasks: Mapping[int, Any], label_id: int, known: AbstractSet[str]) -> SyncPlan:
        """Bring the frames of changed items up to date (:func:`plan_sync`): replace differing auto shapes, send
        nothing for identical ones, never touch frames people edited or frames of completed jobs."""
        by_task: dict[int, list[PushItem]] = {}
        for it in changed:
            by_task.setdefault(placed[it.item_id][0], []).append(it)
        plans: list[SyncPlan] = []
        for task_id in sorted(by_task):
            task = tasks[task_id]
            anns = self.conn.retry(f"annotations of task {task_id}", task.get_annotations)
            shapes = [ServerShape(int(s.id), int(s.frame), _str(s.source), _str(s.type), int(s.label_id),
                                  tuple(float(p) for p in (s.points or []))) for s in anns.shapes]
            jobs = self.conn.retry(f"job list of task {task_id}", task.get_jobs)
            locked = {f for job in jobs if _str(job.state) == "completed"
                      for f in range(int(job.start_frame), int(job.stop_frame) + 1)}
            expected = {it.item_id: [shape_signature(r.type.value if hasattr(r.type, "value") else str(r.type),
                                                     int(r.label_id), r.points)
                                     for r in self._shape_requests(it, 0, label_id)]
                        for it in by_task[task_id]}
            plan = plan_sync(by_task[task_id], placed, shapes, expected, known, locked)
            if plan.stale:
                self.conn.retry(f"removal of {len(plan.stale)} old shapes in task {task_id}",
                                functools.partial(task.remove_annotations, ids=list(plan.stale)),
                                idempotent=False)  # a PATCH: the pool never repeats it
            frames = {it.item_id: placed[it.item_id][1] for it in plan.replace}
            self._add_shapes(task, frames, plan.replace, label_id)
            plans.append(plan)
        return SyncPlan(*(tuple(x for p in plans for x in getattr(p, f)) for f in
                          ("replace", "identical", "kept", "adopted", "stale")))

    # ---- pull

    def _counted_frames(self, task: Any, skipped: dict[str, int]) -> dict[int, Any]:
        jobs = self.conn.retry(f"job list of task {task.id}", lambda: task.get_jobs())
        frames: dict[int, Any] = {}
        for job in sorted(jobs, key=lambda j: j.id):
            if _str(getattr(job, "type", "") or "annotation") != "annotation":
                continue  # ground-truth and consensus-replica jobs are not the task's annotation
            state, stage = _str(job.state), _str(job.stage)
            span = range(int(job.start_frame), int(job.stop_frame) + 1)
            if state in self.params.pull_states and stage in self.params.pull_stages:
                for f in span:
                    frames.setdefault(f, job)
            else:
                key = f"job {stage}/{state}"
                skipped[key] = skipped.get(key, 0) + len(span)
        return frames

    def pull(self, receipt: Sequence[ReceiptRow]) -> PullOutcome:
        from pipeline.annotation.files import ExportedAnnotation, server_pull_outcome

        project = self.find_project()
        if project is None:
            raise UserError(f"CVAT at {self.conn.shown_url} has no project named {self.params.project_name!r}; "
                            "run `maskloop push` first")
        names = {v: k for k, v in self.label_ids(project).items()}
        labels = self.params.counted_labels()
        source = f"{BACKEND}:{project.id}"
        anns: list[ExportedAnnotation] = []
        problems: list[PullProblem] = []
        skipped: dict[str, int] = {}
        on_server: set[str] = set()
        for task in self.tasks(project):
            on_server.add(str(task.id))
            counted = self._counted_frames(task, skipped)
            if not counted:
                continue
            sizes = self._frame_sizes(task)
            data = self.conn.retry(f"annotations of task {task.id}", task.get_annotations)
            if data.tracks:
                log.warning("CVAT task %d has %d tracks; tracks are not read (annotate images with shapes)",
                            task.id, len(data.tracks))
            by_frame: dict[int, list[Any]] = {}
            for s in data.shapes:
                by_frame.setdefault(int(s.frame), []).append(s)
            for frame in sorted(counted):
                if frame >= len(sizes):
                    continue
                job = counted[frame]
                name, height, width = sizes[frame]
                where = f"CVAT task {task.id} frame {frame} ({name})"
                stem = Path(name).stem
                try:
                    mask = mask_from_shapes(shapes_from_api(by_frame.get(frame, []), names), height, width,
                                            labels, where)
                except ValueError as exc:
                    problems.append(PullProblem(stem if is_item_id(stem) else "", str(task.id), str(exc)))
                    continue
                if mask is None:
                    skipped["no region"] = skipped.get("no region", 0) + 1
                    continue
                if not is_item_id(stem):
                    problems.append(PullProblem("", str(task.id), f"{where}: the frame name is not an item id "
                                                "(frames pushed by maskloop are named <item_id>.<ext>)"))
                    continue
                assignee = getattr(job, "assignee", None)
                anns.append(ExportedAnnotation(
                    mask=mask, source=source, item_id=stem, task_id=str(task.id), image_name=name,
                    annotation_id=f"job{job.id}:frame{frame}",
                    annotator=str(getattr(assignee, "username", "") or "") if assignee else "",
                    created_at=iso_utc(str(job.created_date or "")), updated_at=iso_utc(str(job.updated_date or "")),
                ))
        active = [r for r in receipt if r.backend == BACKEND and r.status == "active" and r.project_id == str(project.id)]
        return server_pull_outcome(anns, receipt, active, on_server, problems, skipped, "CVAT")

    def status(self) -> Mapping[str, Any]:
        project = self.find_project()
        if project is None:
            return {"backend": BACKEND, "url": self.conn.shown_url, "project": None,
                    "server_version": self.conn.server_version}
        jobs: dict[str, int] = {}
        tasks = self.tasks(project)
        for task in tasks:
            for job in self.conn.retry(f"job list of task {task.id}", task.get_jobs):
                key = f"{_str(job.stage)}/{_str(job.state)}"
                jobs[key] = jobs.get(key, 0) + 1
        return {"backend": BACKEND, "url": self.conn.shown_url, "server_version": self.conn.server_version,
                "project": int(project.id), "tasks": len(tasks), "jobs": dict(sorted(jobs.items()))}


def make_backend(settings: Mapping[str, Any], paths: Paths, where: str = "params.yaml:annotation.cvat") -> CvatBackend:
    """Factory registered in ``BACKENDS``: params from ``settings``, credentials from the environment / ``.env``."""
    from pipeline.core.secrets import get_secret

    params = from_mapping(CvatParams, dict(settings), where)
    token = get_secret(params.access_token_env, what="a CVAT access token", required=False)
    user = password = ""
    if not token:
        user = get_secret(params.username_env, what=f"the CVAT user name for {params.server_url()}")
        password = get_secret(params.password_env, what=f"the CVAT password for {params.server_url()}")
    return CvatBackend(params, CvatConnection(params, user, password, token), paths)
