"""``maskloop qa-check MASK [--image PHOTO] [--pre PRE_MASK]``: run the QA checks on any mask file.

Useful to try thresholds on a few files before changing ``params.yaml``, or to inspect a mask outside the
pipeline. Reads the ``qa`` section of the params file (defaults when absent); prints one line per check and
exits 1 when a check at or above ``--fail-on`` failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS, Paths


def status_lines(paths: Paths) -> list[str]:
    """The ``[qa]`` section of ``maskloop status`` (from the curate stage's ``metrics/qa.json`` and review
    queue): included/verified counts, findings by check, queue."""
    from pipeline.core import io

    metrics_path = Path(paths.metrics) / "qa.json"
    if not metrics_path.is_file():
        return ["curate has not run yet (`dvc repro` or `maskloop curate`)"]
    m = io.read_json(metrics_path)
    lines = [
        f"{m.get('included', 0)} of {m.get('items', 0)} items in ground truth "
        f"({m.get('included_verified', 0)} verified by a human, {m.get('included_unverified', 0)} unverified); "
        f"{m.get('excluded', 0)} excluded, {m.get('rejected', 0)} rejected",
    ]
    if m.get("included_unverified"):
        lines.append("    WARNING: unverified masks are included (curate.include_unverified: true)")
    checks = m.get("checks", {})
    flagged = [(c, v) for c, v in checks.items() if v.get("failed")]
    if flagged:
        lines.append("findings by check (failed / fixed automatically):")
        for c, v in flagged:
            lines.append(f"    {c:<16}{v['failed']:>6} failed {v['fixed']:>6} fixed")
    else:
        lines.append("no QA findings")
    lines.append(f"{m.get('review_queue', 0)} items waiting for review (`maskloop review`)"
                 + (f"; {m['stale_decisions']} stale decisions re-queued" if m.get("stale_decisions") else ""))
    queue_path = Path(paths.curated) / "review_queue.parquet"
    if m.get("review_queue") and queue_path.is_file():
        q = io.read_parquet(queue_path)
        for r in q.head(5).itertuples(index=False):
            lines.append(f"    {r.item_id} [{r.max_severity}] {r.checks}")
    return lines


def check_files(mask: Path, image: Path | None, pre: Path | None, params_path: Path) -> list[str]:
    """Lines describing every finding for ``mask`` (raises :class:`UserError` for unusable files)."""
    from pipeline.core import io
    from pipeline.core.params import load_section
    from qa.checks import QAParams, run_checks

    qa_params = load_section(params_path, "qa", QAParams) if Path(params_path).is_file() else QAParams()
    try:
        grey = io.read_gray(mask)
        img = io.read_image(image) if image is not None else None
        pre_mask = io.read_gray(pre) if pre is not None else None
    except io.ImageError as exc:
        raise UserError(str(exc)) from None
    rep = run_checks(grey, qa_params, image=img, pre=pre_mask)
    lines = []
    for f in rep.findings:
        status = "ok" if f.passed else f.severity.upper()
        fix = f" [fix: {f.fix}]" if (not f.passed and f.fix) else ""
        region = f" at {f.region_str()}" if f.region else ""
        lines.append(f"{status:<7} {f.check:<15} value={f.value:.4g} threshold={f.threshold:.4g}{region}{fix}"
                     + (f"  {f.detail}" if f.detail else ""))
    return lines


def register(app: typer.Typer) -> None:
    @app.command("qa-check")
    def qa_check(
        mask: Annotated[Path, typer.Argument(help="mask file (PNG; any 8/16-bit single-channel image).")],
        image: Annotated[Path | None, typer.Option("--image", help="the photo (enables edge alignment).")] = None,
        pre: Annotated[Path | None, typer.Option("--pre", help="a pre-annotation to compare with.")] = None,
        fail_on: Annotated[str, typer.Option("--fail-on", help="exit 1 when a check of this severity or "
                                                                "worse fails: info, warning or error.")] = "error",
        params: Annotated[Path, typer.Option("--params", "-p", help="params file (its qa section).")] = DEFAULT_PARAMS,
    ) -> None:
        """Run every QA check on one mask file and print the findings."""
        from pipeline.cli import run_guarded
        from qa.checks import SEVERITIES, severity_rank

        if fail_on not in SEVERITIES[1:]:
            typer.secho(f"error: --fail-on must be one of {list(SEVERITIES[1:])}, got {fail_on!r}",
                        fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        lines = cast(list[str], run_guarded(check_files, mask, image, pre, params))
        for line in lines:
            typer.echo(line)
        worst = max((severity_rank(ln.split()[0].lower()) for ln in lines if not ln.startswith("ok")), default=0)
        if worst >= severity_rank(fail_on):
            raise typer.Exit(1)
