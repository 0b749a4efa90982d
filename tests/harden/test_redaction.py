"""Item 9 of issue 15: tokens, passwords and URL credentials never reach anything printed or written.

Before: a Label Studio 4xx printed 500 characters of the body (a proxy echoing ``Authorization: Token ...``), a
failed CVAT login printed a body holding the password, and a URL with ``user:password@`` was printed whole.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cvat_sdk.api_client.exceptions import ApiException

from pipeline.annotation.cvat import with_retries
from pipeline.core.errors import UserError
from pipeline.core.params import RunnerParams
from pipeline.core.runner import FileInput, ItemResult, Stage, WorkItem, run_stage
from pipeline.core.secrets import RedactingFilter, redact, register_secret, safe_url


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        ("GET http://alice:s3cr3t-pw@cvat.example:8080/api failed", "s3cr3t-pw"),
        ("Authorization: Token 0123456789abcdef0123456789abcdef01234567", "0123456789abcdef"),
        ("headers {'Authorization': 'Bearer eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl9'}", "eyJhbGciOi"),
        ('{"username": "bob", "password": "hunter2-long"}', "hunter2-long"),
        ("user=bob&password=pa%24%24word9&next=/", "pa%24%24word9"),
        ('{"refresh": "eyJ0eXAi.abc.def1234"}', "eyJ0eXAi"),
        ("api_key=AKIAQWERTY1234 sent", "AKIAQWERTY1234"),
        ("x-api-key: abcdEF123456", "abcdEF123456"),
    ],
)
def test_redact_patterns(raw: str, secret: str) -> None:
    out = redact(raw)
    assert secret not in out and "***" in out, out


def test_registered_secrets_and_plain_text() -> None:
    register_secret("plain-value-9f3e")
    assert redact("the body said plain-value-9f3e twice: plain-value-9f3e") == "the body said *** twice: ***"
    for text in ("stage ingest: 4/22 items failed", "params.yaml:matte.epsilon: nan is not a finite number",
                 "the API token (HTTP 401 on /api/projects)", "http://127.0.0.1:8080/api"):
        assert redact(text) == text  # ordinary messages are untouched
    assert safe_url("https://u:p@host:9/x?y=1") == "https://***@host:9/x?y=1"
    assert safe_url("http://host/x") == "http://host/x"


def test_logging_filter() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "login to %s with %s", ("http://a:b1c2d3@h", "k"),
                               None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "login to http://***@h with k"


def test_cvat_login_refusal_and_bodies_never_show_the_password() -> None:
    password = "correct-horse-battery-77"

    def login_400() -> None:  # CVAT 2.23 answers a wrong password with HTTP 400 and echoes the form
        raise ApiException(status=400, reason="Bad Request")

    with pytest.raises(UserError, match=r"CVAT at http://\*\*\*@cvat:8080 refused login \(HTTP 400\): check the "
                                        r"credentials") as info:
        with_retries(login_400, "login", url=safe_url("http://bob:pw@cvat:8080"), max_retries=0, backoff_s=0)
    assert "pw@" not in str(info.value)

    def echo() -> None:
        exc = ApiException(status=422, reason="Unprocessable")
        exc.body = f'{{"username": "bob", "password": "{password}"}}'.encode()
        raise exc

    with pytest.raises(UserError) as info:
        with_retries(echo, "task creation", url="http://cvat", max_retries=0, backoff_s=0, idempotent=False)
    assert password not in str(info.value) and '"password": "***"' in str(info.value), str(info.value)


def _secret_process(work: WorkItem, params: Any, resource: Any) -> ItemResult:
    raise ValueError("upstream said: Authorization: Token 0123456789abcdef0123456789abcdef01234567")


def test_item_errors_in_reports_are_redacted(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    stage: Stage[Any] = Stage(name="s", version="1", params=RunnerParams(), root=tmp_path / "out",
                              process=_secret_process, state_root=tmp_path / "state")
    works = [WorkItem(key="a", inputs={"f": FileInput(tmp_path / "a.txt")}, data={})]
    run_stage(stage, works, RunnerParams(workers=1, max_failure_fraction=1.0, progress=False),
              reports_dir=tmp_path / "reports")
    report = pd.read_parquet(tmp_path / "reports" / "s.parquet")
    error = str(report.loc[0, "error"])
    assert "0123456789abcdef" not in error and "Authorization: ***" in error, error


# The Label Studio cases (a 400 echoing the token, URL credentials) run against the real server in
# tests/labelstudio/test_import_once.py, next to the session's server fixture.
