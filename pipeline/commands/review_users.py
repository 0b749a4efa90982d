"""``maskloop review-users add|list|remove``: the reviewers who may sign in to the review dashboard.

Tokens are printed once by ``add`` and stored only as SHA-256 hashes in the users file (see
:mod:`qa.reviewers`; default ``.maskloop/review_users.json`` next to ``params.yaml``, outside git).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file (the users file sits next to it).")]
UsersOpt = Annotated[Path | None, typer.Option("--users-file", help="users file (default "
                                               "$MASKLOOP_REVIEW_USERS or .maskloop/review_users.json).")]


def register(app: typer.Typer) -> None:
    from pipeline.cli import run_guarded

    users_app = typer.Typer(help="Reviewers who may sign in to the review dashboard (tokens stored hashed).",
                            no_args_is_help=True)
    app.add_typer(users_app, name="review-users")

    def _path(params: Path, users_file: Path | None) -> Path:
        from pipeline.commands.review import users_path

        return users_path(params, users_file)

    @users_app.command("add")
    def add(name: str, params: ParamsOpt = DEFAULT_PARAMS, users_file: UsersOpt = None) -> None:
        """Add a reviewer (or give them a new token); prints the token once."""
        from qa import reviewers as auth

        def go() -> str:
            try:
                return auth.add_user(_path(params, users_file), name)
            except (ValueError, auth.UsersFileError) as exc:
                raise UserError(str(exc)) from None

        token = run_guarded(go)
        typer.echo(f"reviewer {name.strip()} added; their sign-in token (shown once, give it to them privately):")
        typer.echo(str(token))

    @users_app.command("list")
    def list_(params: ParamsOpt = DEFAULT_PARAMS, users_file: UsersOpt = None) -> None:
        """List the reviewers who may sign in."""
        from qa import reviewers as auth

        path = _path(params, users_file)

        def go() -> dict[str, auth.Reviewer]:
            try:
                return auth.read_users(path)
            except auth.UsersFileError as exc:
                raise UserError(str(exc)) from None

        users = run_guarded(go)
        if not users:
            typer.echo(f"no reviewers in {path}: the dashboard runs without sign-in, on loopback only")
        for user in users:  # type: ignore[attr-defined]
            typer.echo(user)

    @users_app.command("remove")
    def remove(name: str, params: ParamsOpt = DEFAULT_PARAMS, users_file: UsersOpt = None) -> None:
        """Remove a reviewer: their token stops working at their next click."""
        from qa import reviewers as auth

        path = _path(params, users_file)

        def go() -> bool:
            try:
                return auth.remove_user(path, name)
            except auth.UsersFileError as exc:
                raise UserError(str(exc)) from None

        if not run_guarded(go):
            typer.secho(f"error: no reviewer named {name!r} in {path}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        typer.echo(f"reviewer {name} removed")
