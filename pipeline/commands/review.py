"""``maskloop review``: start the review dashboard (the ``decisions`` stage, ``maskloop review-export``, is
:mod:`pipeline.stages.decisions`).

``maskloop review`` runs the Streamlit app :mod:`dashboards.review` bound to 127.0.0.1 by default. With reviewers
added by ``maskloop review-users add NAME`` (token hashes in a git-ignored file, :mod:`qa.reviewers`) the app
shows nothing until a reviewer signs in with their token, records decisions under that name, and may be bound
to other interfaces; without reviewers it refuses any non-loopback ``--host``. Decisions go to the SQLite
database ``paths.review_db``.

"""

from __future__ import annotations

import getpass
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths
from pipeline.stages.decisions import resolve, seed_from_export

log = logging.getLogger(__name__)

APP_FILE = Path(__file__).resolve().parents[2] / "dashboards" / "review.py"

# environment variables the Streamlit app reads (Streamlit passes no typed arguments to a script)
ENV_PARAMS = "MASKLOOP_PARAMS"
ENV_REVIEWER = "MASKLOOP_REVIEWER"


def users_path(params_path: Path, given: Path | None = None) -> Path:
    """The reviewer users file: ``given``, else ``$MASKLOOP_REVIEW_USERS``, else ``.maskloop/review_users.json``
    next to the params file (git-ignored)."""
    from qa.reviewers import DEFAULT_USERS_FILE, ENV_USERS_FILE

    if given is not None:
        return Path(given).resolve()
    env = os.environ.get(ENV_USERS_FILE, "").strip()
    if env:
        return Path(env).resolve()
    return Path(params_path).resolve().parent / DEFAULT_USERS_FILE


def default_reviewer() -> str:
    """``$MASKLOOP_REVIEWER``, else the login name."""
    name = os.environ.get(ENV_REVIEWER, "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"


def status_lines(paths: Paths) -> list[str]:
    """The ``[review]`` section of ``maskloop status``: decisions recorded, and whether the export is behind."""
    from qa.decision_store import DecisionStore
    from qa.decisions import latest_per_item, read_decisions

    db, out = Path(paths.review_db), Path(paths.decisions)
    if not db.is_file():
        if out.is_file():
            return [f"no review database; {len(read_decisions(out))} decision(s) in {out}"]
        return []
    decisions = DecisionStore(db).all()
    latest = latest_per_item(decisions)
    kinds = {k: sum(1 for d in latest.values() if d.decision == k) for k in ("accept", "fix", "reject")}
    reviewers = len({d.reviewer for d in decisions})
    lines = [f"{len(latest)} item(s) decided by {reviewers} reviewer(s): {kinds['accept']} accepted, "
             f"{kinds['fix']} fixed, {kinds['reject']} rejected (sent back on the next push)"]
    exported = read_decisions(out) if out.is_file() else []
    if len(exported) != len(decisions):
        lines.append(f"{len(decisions) - len(exported)} decision(s) not exported yet: run `dvc repro` "
                     "(or `maskloop review-export`)")
    return lines


def streamlit_command(host: str, port: int, browser: bool) -> list[str]:
    """The ``streamlit run`` command line for the review app."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_FILE),
        "--server.address", host, "--server.port", str(port),
        "--server.headless", "false" if browser else "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--theme.base", "light",
        "--client.toolbarMode", "viewer",
    ]


def register(app: typer.Typer) -> None:
    from pipeline.cli import run_guarded

    @app.command("review")
    def review(
        params: Annotated[Path, typer.Option("--params", "-p", help="params file.")] = DEFAULT_PARAMS,
        host: Annotated[
            str, typer.Option("--host", help="interface to bind; beyond loopback only with reviewer sign-in "
                                             "(`maskloop review-users add NAME`).")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="port to listen on.")] = 8501,
        reviewer: Annotated[
            str, typer.Option("--reviewer", help="your name in the decision log (default $MASKLOOP_REVIEWER or login).")
        ] = "",
        browser: Annotated[bool, typer.Option("--browser/--no-browser", help="open a browser tab.")] = False,
        users_file: Annotated[
            Path | None, typer.Option("--users-file", help="reviewer token hashes (default "
                                      "$MASKLOOP_REVIEW_USERS or .maskloop/review_users.json next to params.yaml).")
        ] = None,
    ) -> None:
        """Open the QA review dashboard: work through flagged items, accept / fix / reject with a reason."""

        def start() -> None:
            from qa import reviewers as auth

            params_path = Path(params).resolve()
            paths = load_paths(params_path)
            db, decisions = resolve(paths, params_path)
            if not 0 < port < 65536:
                raise UserError(f"--port must be in 1..65535, got {port}")
            ufile = users_path(params_path, users_file)
            try:
                users = auth.read_users(ufile)
            except auth.UsersFileError as exc:
                raise UserError(str(exc)) from None
            if not users and not auth.is_loopback(host):
                raise UserError(f"refusing to serve the review dashboard on {host} without reviewer sign-in: add "
                                f"reviewers with `maskloop review-users add NAME` (tokens hashed in {ufile}), or "
                                "keep the default --host 127.0.0.1")
            seed_from_export(db, decisions)
            env = {**os.environ, ENV_PARAMS: str(params_path), ENV_REVIEWER: reviewer or default_reviewer()}
            env.pop(auth.ENV_USERS_FILE, None)
            if users:
                env[auth.ENV_USERS_FILE] = str(ufile)
                typer.echo(f"reviewer sign-in required ({len(users)} reviewer(s) in {ufile})")
            typer.echo(f"review dashboard on http://{host}:{port}  (decisions -> {db}; Ctrl+C to stop)")
            try:
                proc = subprocess.run(streamlit_command(host, port, browser), env=env, check=False)
            except KeyboardInterrupt:
                return
            if proc.returncode not in (0, -2, 130):
                raise UserError(f"the review dashboard exited with code {proc.returncode} (see the messages above)")

        run_guarded(start)

