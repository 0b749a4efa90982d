"""Label Studio backend: push pre-annotations as brush predictions, pull submitted human corrections.

Talks to the Label Studio REST API (tested against 1.23.2) with ``requests``:

- **push** finds the project by title (or creates it with a BrushLabels config generated from params), makes
  sure images are reachable (a Local Storage under the server's local-files document root, or data URIs),
  lists the project's tasks (``data.item_id`` identifies an item, ``data.digest`` what was pushed) and then
  imports new items **in bulk** (one ``/import`` request per chunk, predictions included, most uncertain
  first) and replaces the predictions of changed items (one bulk delete + one bulk ``/import/predictions``).
  Re-running it never duplicates a task: everything is re-derived from the server, the receipt is a copy.
- **pull** lists the tasks with their annotations and hands them to
  :func:`pipeline.annotation.formats_labelstudio.annotations_from_task` (the same code that reads a JSON
  export) and :func:`pipeline.annotation.files.resolve_corrections`.

Requests go through the shared HTTP layer (:mod:`pipeline.annotation.http`): idempotent ones are retried on
connection errors, timeouts and 429/5xx with exponential backoff (``max_retries``, ``backoff_s``); a request that
creates something is never blindly repeated: after an ambiguous failure of the bulk import, push reads the
project's tasks back by ``data.item_id`` and sends only the missing ones. Then a
:class:`~pipeline.core.errors.UserError` names the URL (credentials removed) and what failed.
A rejected token gives an authentication error naming the environment variable, never the token.
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

from pipeline.annotation.base import PullOutcome, PushItem, PushOutcome, ReceiptRow
from pipeline.annotation.http import (
    AmbiguousRequest,
    HttpParams,
    is_idempotent,
    make_session,
    may_have_arrived,
    redact,
    register_secret,
    safe_url,
)
from pipeline.annotation.labelstudio_ml import AssistParams
from pipeline.core import io
from pipeline.core.errors import ConfigError, UserError
from pipeline.core.params import Paths, from_mapping

log = logging.getLogger(__name__)

BACKEND = "labelstudio"
FROM_NAME = "mask"
TO_NAME = "image"


@dataclass(frozen=True)
class LabelStudioParams:
    """Section ``annotation.labelstudio`` of params.yaml.

    ``token_env``: environment variable (or ``.env`` key) holding the API token. ``image_mode``: ``local``
    serves images through a Local Storage (images outside ``document_root`` are hard-linked, or copied, into
    ``document_root/link_dir``); ``upload`` uploads them to the server (one multipart request per chunk; no
    shared file system needed); ``data-uri`` embeds them in the task (big tasks). ``document_root`` must equal the server's ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` ("" = read
    that environment variable). ``tools``: drawing tools in the generated config (brush always; ``polygon``,
    ``rectangle`` optional, rasterised on pull). ``alpha_threshold``: brush alpha counted as foreground.
    ``archive_removed``: mark tasks of items no longer in the dataset with ``data.removed = true`` (filterable
    in the Data Manager); they are never deleted.
    """

    url: str = "http://127.0.0.1:8080"
    token_env: str = "LABEL_STUDIO_API_KEY"
    project_title: str = "maskloop"
    label: str = "foreground"
    tools: tuple[str, ...] = ("brush",)
    image_mode: Literal["local", "upload", "data-uri"] = "local"
    document_root: str = ""
    link_dir: str = "maskloop-images"
    chunk_size: int = 100
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 0.5
    page_size: int = 500
    alpha_threshold: int = 128
    archive_removed: bool = False
    assist: AssistParams = field(default_factory=AssistParams)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if not self.project_title.strip():
            raise ValueError("project_title must not be empty")
        unknown = sorted(set(self.tools) - {"brush", "polygon", "rectangle"})
        if unknown or "brush" not in self.tools:
            raise ValueError(f"tools must include 'brush' and only brush/polygon/rectangle, got {list(self.tools)}")
        if self.chunk_size < 1 or self.page_size < 1:
            raise ValueError("chunk_size and page_size must be >= 1")
        if self.max_retries < 0 or self.backoff_s < 0 or self.timeout_s <= 0:
            raise ValueError("max_retries and backoff_s must be >= 0 and timeout_s > 0")
        if not 1 <= self.alpha_threshold <= 255:
            raise ValueError(f"alpha_threshold must be in 1..255, got {self.alpha_threshold}")
        if self.assist.label == self.label:
            raise ValueError(f"assist.label must differ from label {self.label!r} (pull would count smart boxes)")


def label_config(params: LabelStudioParams) -> str:
    """The project's labeling config (XML): the image, a BrushLabels tool (plus polygon/rectangle when asked)
    with the one foreground label, and the review note / uncertainty shown above the image."""
    label = quoteattr(params.label)
    tools = [f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n    <Label value={label} background="#ff0000"/>\n'
             "  </BrushLabels>"]
    if "polygon" in params.tools:
        tools.append(f'  <PolygonLabels name="polygon" toName="{TO_NAME}">\n    <Label value={label}/>\n  </PolygonLabels>')
    if "rectangle" in params.tools:
        tools.append(f'  <RectangleLabels name="rectangle" toName="{TO_NAME}">\n    <Label value={label}/>\n'
                     "  </RectangleLabels>")
    if params.assist.enabled:
        from pipeline.annotation.labelstudio_ml import assist_tools

        tools.extend(assist_tools(params.assist, TO_NAME))
    return ("<View>\n  <Header value=\"$review_note\"/>\n"
            f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n' + "\n".join(tools) + "\n</View>")


# --------------------------------------------------------------------------- HTTP


class LabelStudioClient:
    """A thin REST client: token auth, the shared retry policy of :mod:`pipeline.annotation.http` (idempotent
    requests retried, creating requests never blindly repeated), clear errors without secrets."""

    def __init__(self, url: str, token: str, token_env: str = "LABEL_STUDIO_API_KEY", timeout_s: float = 60.0,
                 max_retries: int = 4, backoff_s: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self.token_env = token_env
        self.http = HttpParams(timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.session = make_session(self.http, server="Label Studio")
        # legacy tokens are 40 hex chars; personal access tokens are JWTs exchanged for a Bearer token
        self._token = token
        register_secret(token)
        self._bearer = token.count(".") == 2
        if not self._bearer:
            self.session.headers["Authorization"] = f"Token {token}"

    def __repr__(self) -> str:  # never show the token
        return f"LabelStudioClient({safe_url(self.url)!r})"

    @property
    def shown_url(self) -> str:
        """The server URL for messages (credentials in it removed)."""
        return safe_url(self.url)

    def _ensure_auth(self) -> None:
        if self._bearer and "Authorization" not in self.session.headers:
            data = self._send("POST", "/api/token/refresh", json={"refresh": self._token}, auth=False)
            register_secret(str(data["access"]))
            self.session.headers["Authorization"] = f"Bearer {data['access']}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; returns the decoded JSON (None for an empty body).

        Raises :class:`~pipeline.annotation.http.AmbiguousRequest` when a POST/PATCH may have reached the server
        but its answer was lost (the caller reads back what exists), :class:`UserError` otherwise."""
        self._ensure_auth()
        return self._send(method, path, **kwargs)

    def _send(self, method: str, path: str, auth: bool = True, **kwargs: Any) -> Any:
        import requests

        url = f"{self.url}{path}"
        try:
            resp = self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            why = redact(type(exc).__name__)
            if not is_idempotent(method) and may_have_arrived(exc):
                raise AmbiguousRequest(method, path, why) from None
            tries = self.max_retries + 1 if is_idempotent(method) or not may_have_arrived(exc) else 1
            raise UserError(
                f"Label Studio at {self.shown_url} is unreachable: {method} {path} failed {tries} times "
                f"({why}); is the server running? (nothing is lost: re-run the command when it is back)"
            ) from None
        if resp.status_code in (401, 403):
            raise UserError(
                f"Label Studio at {self.shown_url} rejected the API token (HTTP {resp.status_code} on {path}); "
                f"set a valid token in the environment variable {self.token_env} (or .env)"
            )
        if resp.status_code >= 500 or resp.status_code == 429:
            if not is_idempotent(method):
                raise AmbiguousRequest(method, path, f"HTTP {resp.status_code}")
            raise UserError(
                f"Label Studio at {self.shown_url} is unreachable: {method} {path} failed {self.max_retries + 1} "
                f"times (HTTP {resp.status_code}); is the server running? (nothing is lost: re-run the command "
                "when it is back)"
            )
        if resp.status_code >= 400:
            raise UserError(redact(f"Label Studio at {self.shown_url}: {method} {path} failed with HTTP "
                                   f"{resp.status_code}: {resp.text[:500]}", extra=(self._token,)))
        if not resp.content:
            return None
        return resp.json()

    def paged(self, path: str, params: Mapping[str, Any], key: str, page_size: int) -> list[dict[str, Any]]:
        """All rows of a paginated list endpoint (``page`` / ``page_size``)."""
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self.request("GET", path, params={**params, "page": page, "page_size": page_size})
            batch = data.get(key, []) if isinstance(data, dict) else data
            rows.extend(batch)
            total = data.get("total") if isinstance(data, dict) else None
            if not batch or len(batch) < page_size or (total is not None and len(rows) >= total):
                return rows
            page += 1

    def version(self) -> str:
        try:
            data = self.request("GET", "/api/version")
        except UserError:
            return ""
        return str(data.get("release", "")) if isinstance(data, dict) else ""


# --------------------------------------------------------------------------- backend


def _task_row(task: Mapping[str, Any]) -> tuple[str, str]:
    data = task.get("data") or {}
    return str(data.get("item_id", "")), str(data.get("digest", ""))


class LabelStudioBackend:
    """:class:`~pipeline.annotation.base.AnnotationBackend` for a Label Studio server."""

    name = BACKEND

    def __init__(self, params: LabelStudioParams, token: str, paths: Paths | None = None,
                 client: LabelStudioClient | None = None) -> None:
        self.params = params
        self.paths = paths or Paths()
        self.client = client or LabelStudioClient(params.url, token, params.token_env, params.timeout_s,
                                                  params.max_retries, params.backoff_s)

    # ---- project
    def find_project(self) -> dict[str, Any] | None:
        projects = self.client.paged("/api/projects", {"title": self.params.project_title}, "results",
                                     self.params.page_size)
        matches = sorted((p for p in projects if p.get("title") == self.params.project_title), key=lambda p: p["id"])
        if len(matches) > 1:
            log.warning("%d Label Studio projects are titled %r; using the oldest (id %s)", len(matches),
                        self.params.project_title, matches[0]["id"])
        return matches[0] if matches else None

    def ensure_project(self) -> dict[str, Any]:
        config = label_config(self.params)
        project = self.find_project()
        if project is None:
            try:
                project = self.client.request("POST", "/api/projects", json={
                    "title": self.params.project_title, "label_config": config,
                    "description": "maskloop pre-annotations (tasks ordered by uncertainty, highest first)",
                    "maximum_annotations": 1, "show_collab_predictions": True,
                })
            except AmbiguousRequest as exc:  # created or not? read back instead of creating a second one
                log.warning("Label Studio: %s; looking the project up instead of creating it again", exc)
                project = self.find_project()
                if project is None:
                    raise self._unsettled(exc) from None
            log.info("created Label Studio project %r (id %s)", self.params.project_title, project["id"])
        elif project.get("label_config", "").strip() != config.strip():
            project = self.client.request("PATCH", f"/api/projects/{project['id']}", json={"label_config": config})
        if self.params.assist.enabled:
            from pipeline.annotation.labelstudio_ml import connect_backend

            connect_backend(self.client, int(project["id"]), self.params.assist)
        return dict(project)

    def tasks(self, project_id: int, fields: str = "all") -> list[dict[str, Any]]:
        return self.client.paged("/api/tasks", {"project": project_id, "fields": fields}, "tasks",
                                 self.params.page_size)

    # ---- images
    def _document_root(self) -> Path:
        root = self.params.document_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "")
        if not root:
            raise ConfigError(
                "annotation.labelstudio.document_root is empty and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT is not "
                "set: image_mode 'local' needs the server's local-files document root (or use image_mode: data-uri)"
            )
        return Path(root).resolve()

    def _upload(self, project_id: int, items: Sequence[PushItem]) -> dict[str, str]:
        """Upload the images of ``items`` (``<item_id><ext>``) without creating tasks; item_id -> served URL."""
        refs: dict[str, str] = {}
        for start in range(0, len(items), self.params.chunk_size):
            chunk = items[start : start + self.params.chunk_size]
            files: list[tuple[str, tuple[str, bytes, str]]] = []
            for it in chunk:
                src = Path(it.image_path)
                mime = mimetypes.guess_type(str(src))[0] or "application/octet-stream"
                files.append((f"file{len(files)}", (f"{it.item_id}{src.suffix.lower()}", src.read_bytes(), mime)))
            resp = self.client.request("POST", f"/api/projects/{project_id}/import",
                                       params={"commit_to_project": "false"}, files=files)
            ids = [int(i) for i in resp.get("file_upload_ids") or []]
            uploads = self.client.request("GET", f"/api/projects/{project_id}/file-uploads",
                                          params={"ids": json.dumps(ids)}) or []
            by_name = {}
            for up in uploads:
                if int(up.get("id", -1)) in ids:
                    name = str(up["file"])
                    by_name[Path(name).name.split("-", 1)[-1]] = "/data/" + name.lstrip("/")
            for it in chunk:
                key = f"{it.item_id}{Path(it.image_path).suffix.lower()}"
                if key not in by_name:
                    raise UserError(f"item {it.item_id}: Label Studio did not report the upload of {it.image_path}")
                refs[it.item_id] = by_name[key]
        return refs

    def _image_refs(self, project_id: int, items: Sequence[PushItem]) -> dict[str, str]:
        """item_id -> the URL Label Studio loads the image from (creating Local Storages / uploading as needed)."""
        if self.params.image_mode == "upload":
            return self._upload(project_id, items)
        if self.params.image_mode == "data-uri":
            out = {}
            for it in items:
                mime = mimetypes.guess_type(str(it.image_path))[0] or "image/png"
                out[it.item_id] = f"data:{mime};base64,{base64.b64encode(Path(it.image_path).read_bytes()).decode()}"
            return out
        root = self._document_root()
        refs: dict[str, str] = {}
        dirs: set[Path] = set()
        for it in items:
            src = Path(it.image_path).resolve()
            if not src.is_relative_to(root):
                dest = root / self.params.link_dir / f"{it.item_id}{src.suffix.lower()}"
                if not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(src, dest)
                    except OSError:
                        io.write_bytes(dest, src.read_bytes())
                src = dest
            dirs.add(src.parent)
            refs[it.item_id] = f"/data/local-files/?d={src.relative_to(root).as_posix()}"
        if dirs:
            storages = self.client.request("GET", "/api/storages/localfiles", params={"project": project_id}) or []
            have = {str(Path(s.get("path", ""))) for s in storages}
            for d in sorted(dirs):
                if str(d) not in have:
                    self.client.request("POST", "/api/storages/localfiles", json={
                        "project": project_id, "path": str(d), "title": f"maskloop {d.name}",
                        "use_blob_urls": False, "regex_filter": "",
                    })
        return refs

    # ---- predictions
    def _prediction(self, item: PushItem) -> dict[str, Any] | None:
        from pipeline.annotation.brush import mask_to_rle

        if item.mask_path is None:
            return None
        mask = io.read_mask(Path(item.mask_path))
        if mask.shape != (item.height, item.width):
            raise UserError(f"item {item.item_id}: pre-annotation {item.mask_path} is {mask.shape[1]}x{mask.shape[0]}, "
                            f"the image is {item.width}x{item.height}")
        return {
            "model_version": item.model_version,
            "score": float(item.score),
            "result": [{
                "id": item.item_id[:10], "from_name": FROM_NAME, "to_name": TO_NAME, "type": "brushlabels",
                "origin": "prediction", "original_width": item.width, "original_height": item.height,
                "image_rotation": 0,
                "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [self.params.label]},
            }],
        }

    def _task_data(self, item: PushItem, image: str) -> dict[str, Any]:
        return {"image": image, "item_id": item.item_id, "uncertainty": round(float(item.uncertainty), 6),
                "review_note": item.review_note, "digest": item.digest()}

    def _unsettled(self, exc: AmbiguousRequest) -> UserError:
        return UserError(
            f"Label Studio at {self.client.shown_url}: {exc.method} {exc.path} failed after it may have reached the "
            f"server ({exc.why}); it is never repeated blindly. Re-run `maskloop push` when the server is healthy: "
            "it reads back what exists and sends only what is missing"
        )

    def _import_once(self, pid: int, chunk: Sequence[PushItem], payload: list[dict[str, Any]]) -> dict[str, int]:
        """Create one task per item of ``chunk`` (bulk import), exactly once: after an ambiguous failure (the server
        may have created the tasks, the answer was lost) the project's tasks are read back by ``data.item_id``
        and only the missing items are sent again. Returns item_id -> task id."""
        entries = {it.item_id: entry for it, entry in zip(chunk, payload, strict=True)}
        todo = [it.item_id for it in chunk]
        found: dict[str, int] = {}
        for attempt in range(self.params.max_retries + 1):
            try:
                resp = self.client.request("POST", f"/api/projects/{pid}/import",
                                           params={"return_task_ids": "true"}, json=[entries[i] for i in todo])
            except AmbiguousRequest as exc:
                if attempt == self.params.max_retries:
                    raise self._unsettled(exc) from None
                log.warning("Label Studio: %s; reading back the project's tasks before sending anything again", exc)
                time.sleep(self.params.backoff_s * 2**attempt)
                on_server = {item_id: int(t["id"]) for t in self.tasks(pid, fields="task_only")
                             for item_id, _ in [_task_row(t)] if item_id in entries}
                found.update({i: on_server[i] for i in todo if i in on_server})
                todo = [i for i in todo if i not in on_server]
                if not todo:
                    break
                log.warning("Label Studio: %d of %d tasks of this chunk were created; sending the %d missing",
                            len(entries) - len(todo), len(entries), len(todo))
                continue
            ids = resp.get("task_ids") or []
            if len(ids) != len(todo):
                raise UserError(f"Label Studio import into project {pid} returned {len(ids)} task ids for "
                                f"{len(todo)} tasks")
            found.update({i: int(t) for i, t in zip(todo, ids, strict=True)})
            break
        return found

    # ---- interface
    def push(self, items: Sequence[PushItem], receipt: Sequence[ReceiptRow]) -> PushOutcome:
        try:
            return self._push(items, receipt)
        except AmbiguousRequest as exc:  # any other creating request: never repeated blindly
            raise self._unsettled(exc) from None

    def _push(self, items: Sequence[PushItem], receipt: Sequence[ReceiptRow]) -> PushOutcome:
        project = self.ensure_project()
        pid = int(project["id"])
        existing: dict[str, tuple[int, str]] = {}
        images: dict[str, str] = {}
        task_data: dict[str, dict[str, Any]] = {}
        for task in sorted(self.tasks(pid, fields="task_only"), key=lambda t: t["id"]):
            item_id, digest = _task_row(task)
            if item_id and item_id not in existing:
                existing[item_id] = (int(task["id"]), digest)
                task_data[item_id] = dict(task.get("data") or {})
                images[item_id] = str(task_data[item_id].get("image", ""))
        order = sorted(items, key=lambda it: (-it.uncertainty, it.item_id))
        new = [it for it in order if it.item_id not in existing]
        changed = [it for it in order if it.item_id in existing and existing[it.item_id][1] != it.digest()]
        task_ids = {k: v[0] for k, v in existing.items()}
        refs = {**images, **(self._image_refs(pid, new) if new else {})}

        for start in range(0, len(new), self.params.chunk_size):
            chunk = new[start : start + self.params.chunk_size]
            payload = []
            for it in chunk:
                entry: dict[str, Any] = {"data": self._task_data(it, refs[it.item_id])}
                pred = self._prediction(it)
                if pred is not None:
                    entry["predictions"] = [pred]
                payload.append(entry)
            task_ids.update(self._import_once(pid, chunk, payload))
            log.info("pushed %d/%d new tasks", min(start + len(chunk), len(new)), len(new))

        if changed:
            for start in range(0, len(changed), self.params.chunk_size):
                chunk = changed[start : start + self.params.chunk_size]
                ids = [task_ids[it.item_id] for it in chunk]
                self.client.request("POST", "/api/dm/actions", params={"id": "delete_tasks_predictions",
                                                                      "project": pid},
                                    json={"selectedItems": {"all": False, "included": ids}, "project": pid})
                preds = []
                for it in chunk:
                    pred = self._prediction(it)
                    if pred is not None:
                        preds.append({**pred, "task": task_ids[it.item_id]})
                if preds:
                    self.client.request("POST", f"/api/projects/{pid}/import/predictions", json=preds)
                # the digest in the task data is written last: a push cut short here is redone next time
                for it in chunk:
                    self.client.request("PATCH", f"/api/tasks/{task_ids[it.item_id]}",
                                        json={"data": self._task_data(it, refs[it.item_id])})
            log.info("replaced the predictions of %d changed tasks", len(changed))

        current = {it.item_id: it for it in items}
        rows = []
        for it in sorted(items, key=lambda i: i.item_id):
            rows.append(ReceiptRow(item_id=it.item_id, backend=BACKEND, project_id=str(pid),
                                   task_id=str(task_ids[it.item_id]), frame=-1, prediction_digest=it.digest(),
                                   model_version=it.model_version, status="active"))
        removed = sorted({r.item_id for r in receipt if r.item_id not in current})
        old = {r.item_id: r for r in receipt}
        for item_id in removed:
            r = old[item_id]
            rows.append(ReceiptRow(item_id=r.item_id, backend=r.backend, project_id=r.project_id, task_id=r.task_id,
                                   frame=r.frame, prediction_digest=r.prediction_digest, model_version=r.model_version,
                                   pushed_digest=r.pushed_digest, status="removed"))
        if self.params.archive_removed:
            archived = 0
            for item_id in sorted(set(existing) - set(current)):
                if not task_data[item_id].get("removed"):
                    self.client.request("PATCH", f"/api/tasks/{existing[item_id][0]}",
                                        json={"data": {**task_data[item_id], "removed": True}})
                    archived += 1
            if archived:
                log.info("marked %d tasks of removed items with data.removed = true", archived)
        rows.sort(key=lambda r: r.item_id)
        return PushOutcome(receipt=tuple(rows), created=len(new), updated=len(changed),
                           unchanged=len(items) - len(new) - len(changed), removed=tuple(removed),
                           server_version=self.client.version())

    def users(self) -> dict[int, str]:
        try:
            rows = self.client.request("GET", "/api/users") or []
        except UserError:
            return {}
        return {int(u["id"]): str(u.get("email") or u.get("username") or u["id"]) for u in rows}

    def pull(self, receipt: Sequence[ReceiptRow]) -> PullOutcome:
        from pipeline.annotation.files import ReadOptions, server_pull_outcome
        from pipeline.annotation.formats_labelstudio import annotations_from_task

        project = self.find_project()
        if project is None:
            raise UserError(f"Label Studio at {self.client.shown_url} has no project titled {self.params.project_title!r}; "
                            "run `maskloop push` first")
        pid = int(project["id"])
        tasks = self.tasks(pid)
        users = self.users()
        options = ReadOptions(labels=(self.params.label,), alpha_threshold=self.params.alpha_threshold)
        anns = []
        skipped: dict[str, int] = {}
        problems = []
        on_server = set()
        for task in sorted(tasks, key=lambda t: t["id"]):
            on_server.add(str(task["id"]))
            found, task_problems, task_skipped = annotations_from_task(task, options, f"{BACKEND}:{pid}", users)
            anns.extend(found)
            problems.extend(task_problems)
            for k, v in task_skipped.items():
                skipped[k] = skipped.get(k, 0) + v
        active = [r for r in receipt if r.backend == BACKEND and r.project_id == str(pid)]
        return server_pull_outcome(anns, receipt, active, on_server, problems, skipped, "Label Studio")

    def status(self) -> Mapping[str, Any]:
        project = self.find_project()
        if project is None:
            return {"backend": BACKEND, "url": self.client.shown_url, "project": None}
        tasks = self.tasks(int(project["id"]), fields="task_only")
        return {"backend": BACKEND, "url": self.client.shown_url, "project": project["id"], "tasks": len(tasks),
                "annotated": sum(1 for t in tasks if int(t.get("total_annotations") or 0) > 0)}


def make_backend(settings: Mapping[str, Any], paths: Paths, where: str = "params.yaml:annotation.labelstudio"
                 ) -> LabelStudioBackend:
    """Factory registered in ``BACKENDS``: params from ``settings``, token from the environment / ``.env``."""
    from pipeline.core.secrets import get_secret

    params = from_mapping(LabelStudioParams, dict(settings), where)
    token = get_secret(params.token_env, what=f"the Label Studio API token for {params.url}")
    return LabelStudioBackend(params, token, paths)
