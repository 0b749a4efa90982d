"""``maskloop models list`` / ``maskloop models fetch NAME``: the official weights, fetched on request only.

``fetch`` downloads one registry entry (:data:`pipeline.core.weights.WEIGHTS`) to every params setting that
points at it (``preannotate.sam.checkpoint`` when ``preannotate.sam.arch`` is that SAM, ``train.pretrained_backbone``,
...), or to ``paths.models/<official file name>`` when none does (and says which setting to add). The download
is resumable, shows a progress bar, is verified against the published SHA-256 and renamed into place only
when it matches (:func:`pipeline.core.weights.fetch_weights`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.params import DEFAULT_PARAMS

log = logging.getLogger(__name__)


def _params_and_models_dir(params: Path) -> tuple[dict[str, object], Path]:
    from pipeline.core.params import read_params_file

    data = read_params_file(params) if Path(params).is_file() else {}
    paths = data.get("paths") if isinstance(data.get("paths"), dict) else {}
    models = Path(str(paths.get("models", "models"))) if isinstance(paths, dict) else Path("models")
    return data, models


def list_lines(params: Path) -> list[str]:
    """One line per registry entry: name, size, where it goes (and whether it is there), what uses it."""
    from pipeline.core.weights import WEIGHTS, destinations

    data, models = _params_and_models_dir(params)
    lines = []
    for name in sorted(WEIGHTS):
        spec = WEIGHTS[name]
        where = []
        for d in destinations(spec, data, models):
            state = "present" if d.path.is_file() and d.path.stat().st_size == spec.size else (
                "partial" if d.path.with_name(d.path.name + ".part").is_file() else "missing")
            where.append(f"{d.path} [{state}]" + (f" ({d.setting})" if d.setting else ""))
        lines.append(f"{name:30s} {spec.size / 1e6:8.1f} MB  {'; '.join(where)}\n{'':30s} {spec.description}")
    return lines


def fetch(name: str, params: Path, to: Path | None = None, mirror: str = "", force: bool = False,
          progress: bool = True) -> list[str]:
    """Fetch ``name`` to its destinations; returns one line per destination."""
    from pipeline.core.weights import destinations, fetch_weights, install_copy, weight_spec

    spec = weight_spec(name)
    data, models = _params_and_models_dir(params)
    targets = [to] if to is not None else [d.path for d in destinations(spec, data, models)]
    settings = {d.path: d.setting for d in destinations(spec, data, models)}
    first = fetch_weights(spec, targets[0], mirror=mirror, force=force, progress=progress)
    outcomes = [first] + [install_copy(first.path, t, spec, force=force) for t in targets[1:]]
    lines = []
    for o in outcomes:
        verb = "already present" if o.status == "present" else "fetched"
        lines.append(f"{spec.name}: {verb} {o.path} (sha256 {o.sha256[:12]}…, {o.bytes} bytes"
                     + (f", resumed at byte {o.resumed_from}" if o.resumed_from else "") + ")")
    if to is None and not any(settings.get(t) for t in targets):
        keys = sorted({s for s, _, _ in spec.settings})
        lines.append(f"no params setting points at it yet: set {' or '.join(keys)}: {targets[0]} in {params}"
                     + (" (and the matching arch)" if any(c for _, c, _ in spec.settings) else ""))
    return lines


def register(app: typer.Typer) -> None:
    """Add ``maskloop models list|fetch`` to the CLI."""
    models_app = typer.Typer(name="models", help="Official model weights: list them, fetch one (verified, resumable).",
                             no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def list_cmd(
        params: Annotated[Path, typer.Option("--params", "-p", help="params file.")] = DEFAULT_PARAMS,
    ) -> None:
        """Every known weights file: size, destination (from params) and whether it is there."""
        from pipeline.cli import run_guarded

        lines = run_guarded(list_lines, params)
        typer.echo("\n".join(lines if isinstance(lines, list) else []))

    @models_app.command("fetch")
    def fetch_cmd(
        name: Annotated[str, typer.Argument(help="registry name (see `maskloop models list`).")],
        params: Annotated[Path, typer.Option("--params", "-p", help="params file.")] = DEFAULT_PARAMS,
        to: Annotated[Path | None, typer.Option("--to", help="write here instead of the params paths.")] = None,
        mirror: Annotated[str, typer.Option("--mirror", envvar="MASKLOOP_WEIGHTS_MIRROR",
                                            help="base URL of a mirror serving the same file names.")] = "",
        force: Annotated[bool, typer.Option("--force", help="replace a destination file with other bytes.")] = False,
        no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar.")] = False,
    ) -> None:
        """Download NAME from its published URL to the params path(s): resumable (HTTP Range), verified
        against the published SHA-256, renamed into place only when it matches."""
        from pipeline.cli import run_guarded

        lines = run_guarded(fetch, name, params, to, mirror, force, not no_progress)
        typer.echo("\n".join(lines if isinstance(lines, list) else []))
