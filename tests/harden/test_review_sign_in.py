"""Item 12 of issue 15: reviewer sign-in for a shared review dashboard, in real Chromium.

Before: the app had no login, bound to 127.0.0.1 only, and the reviewer was whatever name someone typed. Now
``maskloop review-users add NAME`` prints a token (its SHA-256 goes to a git-ignored file); with reviewers the app
shows nothing but a sign-in form until a valid token is given and records decisions under the signed-in name;
without reviewers ``maskloop review`` refuses any non-loopback ``--host``.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from qa import reviewers as auth
from qa.decision_store import DecisionStore
from tests.conftest import CHROMIUM_ARGS, VENV_BIN, free_port, maskloop, require_chromium, wait_for_streamlit
from tests.dashboard.synth import make_project


def _add(root: Path, name: str) -> str:
    proc = maskloop("review-users", "add", name, cwd=root)
    return proc.stdout.strip().splitlines()[-1]


def test_review_users_command_and_file(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", n=4)
    root = project.root
    rita = _add(root, "rita")
    sam = _add(root, "sam")
    path = root / ".maskloop" / "review_users.json"
    text = path.read_text()
    assert rita not in text and sam not in text  # hashes only
    assert json.loads(text)["users"]["rita"]["token_sha256"] == auth.hash_token(rita)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert maskloop("review-users", "list", cwd=root).stdout.split() == ["rita", "sam"]
    assert auth.authenticate(auth.read_users(path), sam) == "sam"
    assert auth.authenticate(auth.read_users(path), sam + "x") is None
    rita2 = _add(root, "rita")  # a new token replaces the old one
    assert auth.authenticate(auth.read_users(path), rita) is None
    assert auth.authenticate(auth.read_users(path), rita2) == "rita"
    maskloop("review-users", "remove", "sam", cwd=root)
    assert maskloop("review-users", "list", cwd=root).stdout.split() == ["rita"]
    proc = maskloop("review-users", "remove", "nobody", cwd=root, check=False)
    assert proc.returncode == 1 and "no reviewer named 'nobody'" in proc.stderr
    proc = maskloop("review-users", "add", "<b>x</b>", cwd=root, check=False)
    assert proc.returncode == 1 and "must be 1-64 characters" in proc.stderr


def test_no_binding_beyond_loopback_without_sign_in(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", n=2)
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        proc = maskloop("review", "--host", host, "--port", str(free_port()), cwd=project.root, check=False,
                        timeout=60)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"refusing to serve the review dashboard on {host} without reviewer sign-in" in proc.stderr
    assert auth.is_loopback("127.0.0.1") and auth.is_loopback("::1") and auth.is_loopback("localhost")
    assert not auth.is_loopback("0.0.0.0")


def _serve(root: Path, host: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    env.pop(auth.ENV_USERS_FILE, None)
    proc = subprocess.Popen([str(VENV_BIN / "maskloop"), "review", "--host", host, "--port", str(port),
                             "--reviewer", "typed-name"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return wait_for_streamlit(proc, port)


@pytest.mark.browser
def test_sign_in_in_chromium_no_token_no_page_and_decisions_carry_the_names(tmp_path: Path) -> None:
    chromium = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    project = make_project(tmp_path / "proj", n=6, flag_every=1)
    root = project.root
    tokens = {"rita": _add(root, "rita"), "sam": _add(root, "sam")}
    first, second = project.flagged[0], project.flagged[1]
    port = free_port()
    server = _serve(root, "0.0.0.0", port)  # allowed: sign-in is on
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            # no token, no page
            anon = browser.new_page()
            anon.goto(url, wait_until="domcontentloaded")
            expect(anon.get_by_role("heading", name="Sign in to maskloop review")).to_be_visible(timeout=60_000)
            anon.wait_for_timeout(1000)
            assert anon.get_by_role("heading", name="Review queue").count() == 0
            assert first not in anon.content() and second not in anon.content()
            anon.locator("input[aria-label='Reviewer token']").fill("not-a-token")
            anon.get_by_role("button", name="Sign in").click()
            expect(anon.get_by_text("Unknown token.")).to_be_visible(timeout=30_000)
            assert anon.get_by_role("heading", name="Review queue").count() == 0
            # two reviewers, each in their own browser context, each decides one item
            for name, item, decision in (("rita", first, "accept"), ("sam", second, "reject")):
                page = browser.new_context().new_page()
                page.goto(url, wait_until="domcontentloaded")
                expect(page.get_by_role("heading", name="Sign in to maskloop review")).to_be_visible(timeout=60_000)
                page.locator("input[aria-label='Reviewer token']").fill(tokens[name])
                page.get_by_role("button", name="Sign in").click()
                expect(page.get_by_role("heading", name="Review queue")).to_be_visible(timeout=60_000)
                expect(page.get_by_text(f"Signed in as {name}")).to_be_visible(timeout=30_000)
                page.locator(f".st-key-open_{item}").get_by_role("button").click()
                expect(page.get_by_role("heading").filter(has_text=item)).to_be_visible(timeout=30_000)
                if decision == "reject":
                    reason = page.get_by_label("…or describe the problem (sent to the annotator)")
                    reason.fill(f"{name} says the edge is off")
                    reason.press("Enter")
                    page.wait_for_timeout(500)
                    page.locator(".st-key-reject").get_by_role("button").click()
                    expect(page.get_by_text(f"{item} rejected")).to_be_visible(timeout=30_000)
                else:
                    page.locator(".st-key-accept").get_by_role("button").click()
                    expect(page.get_by_text(f"{item} accepted")).to_be_visible(timeout=30_000)
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    latest = DecisionStore(root / "data/review/db/decisions.sqlite").latest()
    assert (latest[first].decision, latest[first].reviewer) == ("accept", "rita")
    assert (latest[second].decision, latest[second].reviewer) == ("reject", "sam")
    assert latest[second].reason == "sam says the edge is off"
