"""``maskloop status``: what is pending, verified, flagged, failed, and why.

Reads only files the stages wrote (manifest, ``reports/<stage>.{json,parquet}``, and the tables that
later stages register in :data:`SECTIONS`), so it is instant and needs no server.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core import io
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths

STAGE_ORDER = (
    "ingest", "preannotate", "push", "pull", "curate", "trimap", "matte", "composite", "export", "train", "evaluate",
)

# Extra sections: (title, function(paths) -> list of lines). Stages register theirs here.
SECTIONS: list[tuple[str, Callable[[Paths], list[str]]]] = [
    ("preannotate", lambda paths: __import__("pipeline.stages.preannotate", fromlist=["status_lines"]).status_lines(paths)),
    ("qa", lambda paths: __import__("pipeline.commands.qa_check", fromlist=["status_lines"]).status_lines(paths)),
    ("review", lambda paths: __import__("pipeline.commands.review", fromlist=["status_lines"]).status_lines(paths)),
    ("matting", lambda paths: __import__("pipeline.stages.matte", fromlist=["status_lines"]).status_lines(paths)),
    ("loop", lambda paths: __import__("pipeline.commands.promote", fromlist=["status_lines"]).status_lines(paths)),
]


def stage_lines(paths: Paths, max_reasons: int = 5) -> list[str]:
    """One line per stage report found, plus the most common failure reasons."""
    lines: list[str] = []
    reports = Path(paths.reports)
    names = [n for n in STAGE_ORDER if (reports / f"{n}.json").is_file()]
    names += sorted(p.stem for p in reports.glob("*.json") if p.stem not in STAGE_ORDER)
    for name in names:
        summary = io.read_json(reports / f"{name}.json")
        lines.append(
            f"{name:<12} {summary.get('items', 0):>7} items  {summary.get('ok', 0):>7} ok  "
            f"{summary.get('failed', 0):>5} failed"
        )
        table = reports / f"{name}.parquet"
        if summary.get("failed") and table.is_file():
            df = io.read_parquet(table)
            failed = df[df["status"] == "failed"]
            for reason, count in failed["error"].value_counts().head(max_reasons).items():
                lines.append(f"    {count:>5} x {reason}")
    return lines


def ingest_lines(paths: Paths) -> list[str]:
    if not Path(paths.manifest).is_file():
        return ["no manifest yet: run `dvc repro` (or `maskloop ingest`)"]
    df = io.read_parquet(paths.manifest)
    ok = df[df["status"] == "ok"]
    q = df[df["status"] != "ok"]
    lines = [f"{len(ok)} items from {sum(len(p) for p in ok['source_paths'])} files; {len(q)} quarantined"]
    report = Path(paths.ingest) / "quarantine.parquet"
    if len(q) and report.is_file() and "reason" in io.table_columns(report):
        reasons = io.read_parquet(report, columns=["reason"])["reason"].value_counts()
        lines[0] += " (" + ", ".join(f"{n} {str(k).replace('_', ' ')}" for k, n in sorted(reasons.items())) + ")"
    for row in q.head(10).itertuples(index=False):
        lines.append(f"    quarantined {row.source_path}: {row.error}")
    if len(q) > 10:
        lines.append(f"    ... {len(q) - 10} more in {Path(paths.ingest) / 'quarantine.parquet'}")
    return lines


def render(paths: Paths) -> str:
    out = ["[items]", *ingest_lines(paths), "", "[stages]", *(stage_lines(paths) or ["no stage has run yet"])]
    for title, fn in SECTIONS:
        try:
            body = fn(paths)
        except Exception as exc:  # one unreadable table must not hide the rest of the status
            body = [f"unreadable ({type(exc).__name__}: {exc}); re-run the stage that writes it"]
        if body:
            out += ["", f"[{title}]", *body]
    return "\n".join(out)


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(
        params: Annotated[Path, typer.Option("--params", "-p", help="params file.")] = DEFAULT_PARAMS,
    ) -> None:
        """Summarise items per stage: pending, verified, flagged, failed and why."""
        typer.echo(render(load_paths(params)))
