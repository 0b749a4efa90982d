"""Item 7 of issue 15: params typos and absurd values are refused with one sentence naming ``file:section.key``.

Before: an unknown section (``trimapp:``), a repeated key, NaN/inf or negative numerical settings and absurd sizes
were accepted silently (a NaN ``matte.epsilon`` surfaced much later as "Factor is exactly singular").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core.params import KNOWN_SECTIONS, ParamsError, load_section, read_params_file
from tests.conftest import REPO, maskloop, write_params

BASE = (REPO / "params.yaml").read_text(encoding="utf-8")


def _edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (params text, stage command that reads it, expected "file:section.key" + reason)
CASES = {
    "unknown section": (BASE + "\ntrimapp:\n  band_px: 3\n", "trimap", "params.yaml:trimapp: unknown section; did you mean 'trimap'?"),
    "duplicate key": (_edit("  epsilon: 1.0e-7\n", "  epsilon: 1.0e-7\n  epsilon: 1.0e-3\n"), "matte",
                      "params.yaml:matte.epsilon: duplicate key"),
    "NaN epsilon": (_edit("  epsilon: 1.0e-7\n", "  epsilon: .nan\n"), "matte",
                    "params.yaml:matte.epsilon: nan is not a finite number"),
    "negative epsilon": (_edit("  epsilon: 1.0e-7\n", "  epsilon: -1.0e-7\n"), "matte",
                         "params.yaml:matte.epsilon: -1e-07 is out of range: must be > 0"),
    "inf regularization": (_edit("foreground_regularization: 1.0e-5", "foreground_regularization: .inf"), "matte",
                           "params.yaml:matte.foreground_regularization: inf is not a finite number"),
    "negative regularization": (_edit("foreground_regularization: 1.0e-5", "foreground_regularization: -1"),
                                "matte", "params.yaml:matte.foreground_regularization: -1.0 is out of range"),
    "negative texture threshold": (_edit("    threshold: 0.08", "    threshold: -0.08"), "trimap",
                                   "params.yaml:trimap.texture.threshold: -0.08 is out of range: must be >= 0"),
    "NaN texture threshold": (_edit("    threshold: 0.08", "    threshold: .NaN"), "trimap",
                              "params.yaml:trimap.texture.threshold: nan is not a finite number"),
    "negative lr": (_edit("  lr: 0.003", "  lr: -0.003"), "train", "params.yaml:train.lr: -0.003 is out of range"),
    "inf lr": (_edit("  lr: 0.003", "  lr: .inf"), "train", "params.yaml:train.lr: inf is not a finite number"),
    "absurd procedural size": (_edit("procedural_size: [1024, 768]", "procedural_size: [100000, 100000]"),
                               "composite", "params.yaml:composite.procedural_size[0]: 100000 is out of range"),
    "absurd band": (_edit("  band_px: 10 ", "  band_px: 10000000 "), "trimap",
                    "params.yaml:trimap.band_px: 10000000 is absurdly large for a size"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_stage_command_refuses_with_one_sentence(tmp_path: Path, case: str) -> None:
    text, command, expected = CASES[case]
    write_params(tmp_path, text)
    proc = maskloop(command, cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr  # one sentence, no traceback
    assert lines[0].startswith("error: "), lines
    assert expected in lines[0], lines[0]


def test_the_repo_params_file_is_accepted_whole() -> None:
    """Every section of the shipped params.yaml is known and no shipped value trips a bound."""
    data = read_params_file(REPO / "params.yaml")
    assert set(data) <= KNOWN_SECTIONS, sorted(set(data) - KNOWN_SECTIONS)
    for stage in ("ingest", "trimap", "matte", "composite", "train", "export", "evaluate"):
        proc = maskloop(stage, "--help", cwd=REPO, timeout=120)
        assert proc.returncode == 0


@dataclass(frozen=True)
class _Nested:
    side_px: int = 3
    crop_size: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class _Section:
    ratio: float = 0.5
    nested: _Nested = _Nested()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("runner: {}\nrunner: {}\n", r"x\.yaml:runner: duplicate key \(lines 1 and 2\)"),
        ("paths:\n  raw: a\n  raw: b\n", r"x\.yaml:paths\.raw: duplicate key \(lines 2 and 3\)"),
        ("ingest:\n  a:\n    - {k: 1, k: 2}\n", r"x\.yaml:ingest\.a\[0\]\.k: duplicate key"),
        ("runnr: {}\n", r"x\.yaml:runnr: unknown section; did you mean 'runner'\?"),
        ("zzzzzz: {}\n", r"x\.yaml:zzzzzz: unknown section; known sections: "),
        ("ingest:\n  ratio: -.inf\n", r"x\.yaml:ingest\.ratio: -inf is not a finite number"),
        ("ingest:\n  nested: {side_px: 70000}\n", r"x\.yaml:ingest\.nested\.side_px: 70000 is absurdly large"),
        ("ingest:\n  nested: {crop_size: [1, 99999]}\n", r"x\.yaml:ingest\.nested\.crop_size\[1\]: 99999 is absurdly large"),
    ],
)
def test_generic_rules(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParamsError, match=message):
        load_section(path, "ingest", _Section)


def test_good_values_pass(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("ingest:\n  ratio: 0.0\n  nested: {side_px: 65536, crop_size: [4, 5]}\nrunner: {}\n", encoding="utf-8")
    assert load_section(path, "ingest", _Section) == _Section(0.0, _Nested(65536, (4, 5)))
