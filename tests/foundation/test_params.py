"""params.yaml reading: parsed once per file version, every caller gets its own copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.params import ParamsError, read_params_file
from tests.conftest import write_params


def test_a_changed_file_is_read_again_and_copies_are_independent(tmp_path: Path) -> None:
    path = write_params(tmp_path, "trimap:\n  band_px: 10\n")
    first = read_params_file(path)
    first["trimap"]["band_px"] = 99  # a caller mutating its copy must not leak into the next read
    assert read_params_file(path) == {"trimap": {"band_px": 10}}
    write_params(tmp_path, "trimap:\n  band_px: 12\n  erode: 3\n")
    assert read_params_file(path) == {"trimap": {"band_px": 12, "erode": 3}}


@pytest.mark.parametrize(("text", "message"), [("a: [1, 2\n", "not valid YAML"), ("- 1\n- 2\n", "top level must be")])
def test_bad_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = write_params(tmp_path, text)
    with pytest.raises(ParamsError, match=message):
        read_params_file(path)
    with pytest.raises(ParamsError, match="params file not found"):
        read_params_file(tmp_path / "nope.yaml")
