"""The ``maskloop`` command line: every command listed with help, and start-up that imports only what the
invoked command needs (``pull`` runs on every ``dvc repro``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline import cli
from tests.conftest import REPO, VENV_BIN, maskloop


def test_help_lists_every_command_with_its_help() -> None:
    out = maskloop("--help", cwd=REPO).stdout
    for name in [*cli.STAGES, *cli.COMMANDS]:
        assert name in out, name
    assert cli.STAGES["curate"][1][:30] in " ".join(out.split())


def test_commands_table_names_exactly_what_the_modules_register() -> None:
    app = cli.register_commands()
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}  # groups: `models`
    assert names == set(cli.STAGES) | set(cli.COMMANDS)


@pytest.mark.parametrize(
    ("argv", "modules"),
    [
        (["ingest"], ()),
        (["-v", "curate", "--retry-failed"], ()),
        (["pull"], ("pipeline.stages.pull",)),
        (["--verbose", "pull", "--params", "p.yaml"], ("pipeline.stages.pull",)),
        (["review-export", "--help"], ("pipeline.stages.decisions",)),
        (["--help"], cli.COMMAND_MODULES),
        ([], cli.COMMAND_MODULES),
        (["no-such-command"], cli.COMMAND_MODULES),
    ],
)
def test_only_the_invoked_commands_module_is_registered(argv: list[str], modules: tuple[str, ...]) -> None:
    assert cli.modules_for(argv) == modules


def test_subcommand_help_and_unknown_command() -> None:
    assert "--params" in maskloop("pull", "--help", cwd=REPO).stdout
    assert "--reviewer" in maskloop("review", "--help", cwd=REPO).stdout
    proc = maskloop("pul", cwd=REPO, check=False)
    assert proc.returncode != 0 and "No such command" in proc.stderr


def test_pull_with_nothing_to_pull_does_not_import_pandas(project: Path) -> None:
    """`dvc repro` runs pull every time: with nothing new it must not pay for pandas (or the other commands)."""
    maskloop("pull", cwd=project)  # the first pull writes the (empty) corrections table
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('loaded:', sorted(m for m in ('pandas', 'pipeline.commands.qa_check', 'pipeline.commands.status',"
        " 'pipeline.commands.review', 'pipeline.commands.promote') if m in sys.modules)))\n"
        "sys.argv = ['maskloop', 'pull']\n"
        "from pipeline.cli import run\n"
        "run()\n"
    )
    proc = subprocess.run([str(VENV_BIN / "python"), "-c", probe], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "loaded: []" in proc.stdout, proc.stdout
