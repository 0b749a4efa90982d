"""Items 8 and 9 of issue 15 against the real Label Studio server.

Item 8: a request that creates something is never blindly repeated.

A loopback proxy forwards ``maskloop push``'s requests to the real server and loses the answer of the first bulk
import (the server created the tasks). Before: ``_send`` retried every method, so the retry created the tasks
twice. Now the import is not repeated: push reads the project's tasks back by item id and sends only the missing
ones, so the project ends with exactly one task per item. Idempotent requests (GET) are still retried.

Item 9: an error body echoing the ``Authorization`` header, or a URL with ``user:password@``, never prints a secret.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from typing import Any

import pytest

from tests.conftest import free_port
from tests.harden.faultproxy import Fault, FaultProxy
from tests.labelstudio.conftest import TOKEN, LSProject, Server

pytestmark = pytest.mark.labelstudio


def _push_through(proj: LSProject, server: Server, faults: list[Fault],
                  check: bool = True) -> tuple[FaultProxy, subprocess.CompletedProcess[str], str]:
    """``maskloop push`` with the project's Label Studio URL pointed at a :class:`FaultProxy` in front of
    ``server`` injecting ``faults``; returns the (closed) proxy, the process and its output on one line."""
    proxy = FaultProxy(server.url, faults)
    try:
        params = proj.params.read_text(encoding="utf-8")
        assert f"url: {server.url}" in params
        proj.params.write_text(params.replace(f"url: {server.url}", f"url: {proxy.url}", 1), encoding="utf-8")
        proc = proj.run("push", check=check)
    finally:
        proxy.close()
    return proxy, proc, " ".join((proc.stdout + proc.stderr).split())


def _one_task_per_item(server: Server, proj: LSProject) -> list[dict[str, Any]]:
    tasks = server.tasks(server.project(proj.title)["id"])
    counts = Counter(t["data"]["item_id"] for t in tasks)
    assert counts == Counter({i: 1 for i in proj.gt}), counts  # every item exactly once
    assert all(len(t["predictions"]) == 1 for t in tasks)
    return tasks


@pytest.mark.parametrize("kind", ["drop", "502"])
def test_lost_import_answer_creates_each_task_once(ls_server: Server, ls_project_factory: Any, kind: str) -> None:
    proj = ls_project_factory(f"import-once-{kind}", chunk_size=4, backoff_s=0.1)
    proxy, proc, log = _push_through(proj, ls_server, [Fault("POST", "/import?return_task_ids", kind)])
    assert proxy.faults[0].hits == 1, proxy.log  # the fault really happened
    assert "reading back the project's tasks before sending anything again" in log, log
    _one_task_per_item(ls_server, proj)
    # and a second push, straight to the server, changes nothing
    proj.params.write_text(proj.params.read_text().replace(proxy.url, ls_server.url), encoding="utf-8")
    proc = proj.run("push")
    assert f"push: 0 new, 0 updated, {len(proj.gt)} unchanged" in " ".join((proc.stdout + proc.stderr).split())
    _one_task_per_item(ls_server, proj)


def test_a_lost_answer_to_a_read_is_retried(ls_server: Server, ls_project_factory: Any) -> None:
    proj = ls_project_factory("get-retried", names=("0001", "0002"), backoff_s=0.1)
    proxy, _proc, log = _push_through(proj, ls_server, [Fault("GET", "/api/tasks", "drop", times=2)])
    assert proxy.faults[0].hits == 2
    assert "Label Studio GET /api/tasks failed" in log and "retry 2/4" in log, log
    _one_task_per_item(ls_server, proj)


def test_project_creation_is_not_repeated(ls_server: Server, ls_project_factory: Any) -> None:
    proj = ls_project_factory("create-once", names=("0001",), backoff_s=0.1)
    proxy, _proc, _log = _push_through(proj, ls_server, [Fault("POST", "/api/projects", "drop")])
    assert proxy.faults[0].hits == 1
    ls_server.project(proj.title)  # asserts exactly one project with that title
    _one_task_per_item(ls_server, proj)


# ------------------------------------------------------------------ item 9: no secret in what is printed


def test_label_studio_error_body_echoing_the_token(ls_server: Server, ls_project_factory: Any) -> None:
    proj = ls_project_factory("echo-token", names=("0001",), backoff_s=0.1)
    proxy, proc, _log = _push_through(proj, ls_server, [Fault("GET", "/api/projects", "echo400")], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and proxy.faults[0].hits == 1, out
    assert "failed with HTTP 400" in out and "Authorization: ***" in out, out
    assert TOKEN not in out


def test_url_credentials_are_never_printed(ls_server: Server, ls_project_factory: Any) -> None:
    proj = ls_project_factory("url-creds", names=("0001",), max_retries=1, backoff_s=0.1)
    port = free_port()  # nothing listens there
    params = proj.params.read_text()
    proj.params.write_text(params.replace(f"url: {ls_server.url}", f"url: http://alice:s3cr3t-pw@127.0.0.1:{port}", 1))
    proc = proj.run("-v", "push", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "is unreachable" in out, out
    assert f"http://***@127.0.0.1:{port}" in out, out
    assert "s3cr3t-pw" not in out and "alice" not in out
