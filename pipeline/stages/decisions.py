"""The ``decisions`` stage (``maskloop review-export``): review decisions -> the tracked decisions table.

Copies every decision from the review dashboard's SQLite database ``paths.review_db`` (untracked: several
reviewers write it at once) to ``paths.decisions`` (Parquet, schema :mod:`qa.decisions`), the file DVC tracks
and ``curate`` / ``push`` read. Without a database it keeps an existing export (e.g. one restored by
``dvc pull`` on a fresh clone) or writes an empty table. ``maskloop review`` (:mod:`pipeline.commands.review`)
seeds a missing database from that export.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths

log = logging.getLogger(__name__)


def resolve(paths: Paths, params_path: Path) -> tuple[Path, Path]:
    """(review_db, decisions) resolved against the folder of the params file (the project root)."""
    root = Path(params_path).resolve().parent
    db = Path(paths.review_db)
    out = Path(paths.decisions)
    return (db if db.is_absolute() else root / db), (out if out.is_absolute() else root / out)


def export(params_path: Path = DEFAULT_PARAMS, db: Path | None = None, out: Path | None = None) -> int:
    """The ``decisions`` stage: export the review database to the decisions table; returns the row count."""
    from qa.decision_store import export_decisions

    paths = load_paths(params_path)
    default_db, default_out = resolve(paths, params_path)
    db = db or default_db
    out = out or default_out
    if not db.is_file() and out.is_file():
        log.info("no review database at %s: keeping the existing decisions table %s", db, out)
        from pipeline.core import io

        return len(io.read_parquet(out))
    n = export_decisions(db, out)
    if db.is_file():
        log.info("exported %d review decision(s) from %s to %s", n, db, out)
    else:
        log.info("no review database at %s yet: wrote an empty decisions table %s", db, out)
    return n


def seed_from_export(db: Path, decisions: Path) -> int:
    """Create ``db`` from an existing decisions export (fresh clone + ``dvc pull``), keeping ids and times.

    Does nothing when the database already exists or there is no export; returns the rows imported."""
    from qa.decision_store import DecisionStore
    from qa.decisions import read_decisions

    if db.exists() or not decisions.is_file():
        return 0
    rows = read_decisions(decisions)
    store = DecisionStore(db)
    store.import_rows(rows)
    log.info("created %s from %d decision(s) in %s", db, len(rows), decisions)
    return len(rows)


def register(app: typer.Typer) -> None:
    from pipeline.cli import run_guarded

    @app.command("review-export")
    def review_export(
        params: Annotated[Path, typer.Option("--params", "-p", help="params file.")] = DEFAULT_PARAMS,
        db: Annotated[Path | None, typer.Option("--db", help="review database (default paths.review_db).")] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="decisions table to write (default paths.decisions).")
        ] = None,
    ) -> None:
        """Export review decisions from the dashboard's database to paths.decisions (the `decisions` stage)."""
        n = run_guarded(export, params, db, out)
        typer.echo(f"{n} review decision(s) in the decisions table")
