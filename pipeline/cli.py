"""The ``maskloop`` command line: every stage plus status and the human-facing commands.

Stage commands (``maskloop ingest``, ``maskloop curate``...) are what ``dvc.yaml`` runs; each reads
its section of ``params.yaml`` and runs on the per-item runner. Implementation modules are imported only
when their command runs, and the other commands' modules are registered only when the invocation needs them
(``maskloop pull`` imports the annotation module alone, ``maskloop --help`` all of them): ``dvc repro`` runs
``pull`` every time, so its start-up time is part of every no-op ``dvc repro``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.errors import UserError, describe_os_error
from pipeline.core.params import DEFAULT_PARAMS, ParamsError

log = logging.getLogger("pipeline")


def user_message(exc: BaseException) -> str:
    """The one-sentence message the CLI prints for an expected error (secrets removed). Lives here, not in
    pipeline.core.errors: secrets imports errors, so errors must not import secrets (no cycle)."""
    from pipeline.core.secrets import redact

    return redact(describe_os_error(exc) if isinstance(exc, OSError) else str(exc))

class _App(typer.Typer):
    """Typer app whose expected errors (in any command) print as one sentence instead of a traceback."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        from pipeline.core.runner import SetupFailed, StageFailed

        try:
            return super().__call__(*args, **kwargs)
        except (UserError, ParamsError, StageFailed, SetupFailed, OSError) as exc:
            typer.secho(f"error: {user_message(exc)}", fg=typer.colors.RED, err=True)
            sys.exit(1)


app = _App(
    name="maskloop",
    help="Ground-truth factory for background removal and matting: pre-annotate, correct in CVAT or "
    "Label Studio, QA, trimaps/alpha/composites, export, train, repeat. Run `dvc repro` for the whole chain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOption = Annotated[
    Path, typer.Option("--params", "-p", help="params file (paths and every stage's settings).")
]
RetryOption = Annotated[
    bool, typer.Option("--retry-failed", help="recompute items that failed last time even if unchanged.")
]

# name -> (module exposing run(params_path, retry_failed), one-line help). Keep in data-flow order.
STAGES: dict[str, tuple[str, str]] = {
    "ingest": ("pipeline.stages.ingest", "Scan the raw image folder: validate, hash, deduplicate, write the manifest."),
    "preannotate": ("pipeline.stages.preannotate", "Pre-annotate every item (grabcut, deeplabv3, sam or the trained model)."),
    "curate": ("pipeline.stages.curate", "QA checks, safe fixes and review decisions -> final masks, QA report, review queue."),
    "trimap": ("pipeline.stages.trimap", "Trimaps: an unknown band around each curated mask (widened on textured edges)."),
    "matte": ("pipeline.stages.matte", "Alpha mattes solved only in the trimap's unknown band, plus foreground colours."),
    "composite": ("pipeline.stages.composite", "Seeded Deep-Image-Matting composites over the background pool, with lineage."),
    "export": ("pipeline.stages.export", "Versioned dataset: COCO RLE, matting folders, leak-free stratified splits, card."),
    "train": ("pipeline.stages.train", "Train the binary segmenter (LR-ASPP/DeepLabV3 MobileNetV3) on the export."),
    "evaluate": ("pipeline.stages.evaluate", "Test-split IoU/F/boundary F/MAE and correction effort per model version."),
}

# Commands that are not plain stages -> the module whose register(app) adds them (and its sibling commands).
COMMANDS: dict[str, str] = {
    "status": "pipeline.commands.status",
    "push": "pipeline.stages.push",
    "pull": "pipeline.stages.pull",
    "review": "pipeline.commands.review",
    "review-export": "pipeline.stages.decisions",
    "review-users": "pipeline.commands.review_users",
    "qa-check": "pipeline.commands.qa_check",
    "sam-prompt": "pipeline.commands.sam_prompt",
    "evaluate-matting": "pipeline.commands.evaluate_matting",
    "promote": "pipeline.commands.promote",
    "materialize": "pipeline.commands.materialize",
    "models": "pipeline.commands.models",
    "assist": "pipeline.commands.assist",
}
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMANDS.values()))


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.INFO
    from pipeline.core.secrets import RedactingFilter

    handler = RichHandler(show_time=False, show_path=False, markup=False, rich_tracebacks=False)
    handler.addFilter(RedactingFilter())  # no token, password or URL credential reaches the terminal
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    for name in ("pipeline", "qa", "dashboards"):
        logging.getLogger(name).setLevel(level)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # retries are logged by annotation.http


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging.")] = False,
) -> None:
    """maskloop: turn raw photos into a versioned, human-verified matting dataset."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    _setup_logging(verbose)


def run_guarded(fn: object, *args: object, **kwargs: object) -> object:
    """Call ``fn``; print expected errors as one clear sentence and exit 1 (no traceback)."""
    from pipeline.core.runner import SetupFailed, StageFailed

    try:
        return fn(*args, **kwargs)  # type: ignore[operator]
    except (UserError, ParamsError, StageFailed, SetupFailed, OSError) as exc:
        typer.secho(f"error: {user_message(exc)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def _make_stage_command(name: str, module: str, help_text: str) -> None:
    def command(params: ParamsOption = DEFAULT_PARAMS, retry_failed: RetryOption = False) -> None:
        mod = importlib.import_module(module)
        run_guarded(mod.run, params, retry_failed=retry_failed)

    command.__doc__ = help_text
    app.command(name, help=help_text)(command)


for _name, (_module, _help) in STAGES.items():
    _make_stage_command(_name, _module, _help)

_registered: set[str] = set()


def modules_for(argv: list[str]) -> tuple[str, ...]:
    """Command modules an invocation needs: the invoked command's own module, none for a stage, and all of them
    for ``--help``, a bare ``maskloop`` or anything unrecognised (so typer can list or suggest every command)."""
    words = [a for a in argv if not a.startswith("-")]
    if words and words[0] in STAGES:
        return ()
    if words and words[0] in COMMANDS:
        return (COMMANDS[words[0]],)
    return COMMAND_MODULES


def register_commands(argv: list[str] | None = None) -> typer.Typer:
    """Add the non-stage commands ``argv`` needs (all when ``argv`` is None) to ``app`` and return it."""
    for module in COMMAND_MODULES if argv is None else modules_for(argv):
        if module not in _registered:
            importlib.import_module(module).register(app)
            _registered.add(module)
    return app


def run() -> None:
    """Console-script entry point (``maskloop``)."""
    register_commands(sys.argv[1:])
    app()
