"""``maskloop materialize``: the export's complete folder layout, for consumers that need every file.

The export stage writes only the matting folders in ``export.materialize`` (default ``image`` and ``mask``) and
lists every matting file of the dataset, written or not, in ``paths.export/matting.parquet`` with its SHA-256
(:mod:`pipeline.stages.export`). The others (trimap, alpha, foreground, cutout) are pure functions of upstream
stage outputs that DVC already versions, so a second stored copy of them costs files, disk and DVC hashing for
nothing. :func:`materialize` writes them on demand:

1. copies the export's documents (``coco/``, ``splits/``, ``splits.parquet``, ``dataset.json``, ``README.md``,
   ``matting.parquet``) and its written matting files into ``out``;
2. recomputes each image's files with the export's own per-item function (same inputs, same code), writes the
   requested folders and checks every file against the SHA-256 in ``matting.parquet``, so the result is
   byte-identical to an export with ``export.materialize`` set to all six folders.

A mismatch means the workspace's upstream outputs are not the ones the export was built from (run
``dvc checkout`` or ``dvc repro export`` first); it is an error naming the file, never a silent difference.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS, load_paths, load_section

log = logging.getLogger(__name__)

DOCUMENTS = ("coco", "splits", "splits.parquet", "dataset.json", "README.md")


@dataclass(frozen=True)
class MaterializeResult:
    """What :func:`materialize` wrote: files per matting folder (copied or recomputed) and the output folder."""

    out: Path
    files: dict[str, int]
    recomputed: int


def materialize(params_path: Path = DEFAULT_PARAMS, out: Path | None = None,
                folders: Sequence[str] | None = None) -> MaterializeResult:
    """Write the export's full layout (or the matting ``folders`` asked for) under ``out`` (see the module
    docstring). Raises :class:`UserError` when the export is missing, ``out`` is inside it, a folder name is
    unknown, or a recomputed file differs from its recorded SHA-256."""
    from pipeline.stages.export import FOLDERS, MATTING_TABLE, ExportParams, export_works, process

    paths = load_paths(params_path)
    params = load_section(params_path, "export", ExportParams)
    root = Path(paths.export)
    table_path = root / MATTING_TABLE
    if not table_path.is_file():
        raise UserError(f"{table_path}: not found; run `dvc repro export` (an export older than this maskloop "
                        "writes every folder itself and needs no materialize)")
    if out is None:
        raise UserError("materialize: give the output folder (--out DIR); it must be outside the export folder")
    out = Path(out)
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise UserError(f"materialize: {out} is inside the export folder {root} (a DVC output); choose another folder")
    wanted = tuple(folders) if folders else FOLDERS
    unknown = sorted(set(wanted) - set(FOLDERS))
    if unknown:
        raise UserError(f"materialize: unknown folder(s) {unknown}; known: {list(FOLDERS)}")
    listing = io.read_parquet(table_path)
    listing = listing[listing["folder"].isin(wanted)]

    for name in (*DOCUMENTS, MATTING_TABLE):
        src = root / name
        if src.is_dir():
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    io.write_bytes(out / f.relative_to(root), f.read_bytes())
        elif src.is_file():
            io.write_bytes(out / name, src.read_bytes())

    counts: dict[str, int] = {}
    expected: dict[str, tuple[str, str]] = {}  # path -> (name, sha256) of files to recompute
    for r in listing.itertuples(index=False):
        path, sha = str(r.path), str(r.sha256)
        if bool(r.written) and (root / path).is_file():
            data = (root / path).read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                raise UserError(f"{root / path}: differs from its SHA-256 in {table_path}; run `dvc checkout`")
            io.write_bytes(out / path, data)
            counts[str(r.folder)] = counts.get(str(r.folder), 0) + 1
        else:
            expected[path] = (str(r.name), sha)
    names = {name for name, _sha in expected.values()}
    recomputed = 0
    if names:
        full = replace(params, materialize=FOLDERS)
        _inputs, _ids, works = export_works(paths, params, params_path)
        by_name = {str(w.data["name"]): w for w in works if str(w.data["name"]) in names}
        missing = sorted(names - set(by_name))
        if missing:
            raise UserError(f"materialize: {len(missing)} exported images have no inputs in this workspace (first: "
                            f"{missing[0]}); run `dvc checkout` (or `dvc repro export`) first")
        for name in sorted(by_name):
            result = process(by_name[name], full, None)
            recomputed += 1
            for path, data in result.files.items():
                if path not in expected:
                    continue
                if hashlib.sha256(data).hexdigest() != expected[path][1]:
                    raise UserError(f"materialize: {path} recomputed from the workspace differs from the exported "
                                    f"version (SHA-256 in {table_path}); run `dvc checkout` or `dvc repro export`")
                io.write_bytes(out / path, data)
                folder = path.split("/")[1]
                counts[folder] = counts.get(folder, 0) + 1
                del expected[path]
        if expected:
            raise UserError(f"materialize: {len(expected)} listed files were not produced (first: {min(expected)}); "
                            "run `dvc repro export`")
    log.info("materialize: %s under %s (%d images recomputed)",
             ", ".join(f"{counts.get(f, 0)} {f}" for f in FOLDERS if f in wanted), out, recomputed)
    return MaterializeResult(out, counts, recomputed)


def register(app: typer.Typer) -> None:
    """Add ``maskloop materialize`` to the CLI."""

    @app.command("materialize")
    def materialize_cmd(
        out: Annotated[Path, typer.Option("--out", "-o", help="folder to write the dataset layout into.")],
        folder: Annotated[
            list[str] | None,
            typer.Option("--folder", "-f", help="matting folder to write (repeatable; default: all six)."),
        ] = None,
        params: Annotated[Path, typer.Option("--params", "-p", help="params file.")] = DEFAULT_PARAMS,
    ) -> None:
        """Write the export's complete folder layout (matting files the export lists by reference included),
        byte-identical to the exported version and checked against matting.parquet."""
        from pipeline.cli import run_guarded

        result = run_guarded(materialize, params, out, folder)
        if isinstance(result, MaterializeResult):
            typer.echo(f"wrote {sum(result.files.values())} matting files under {result.out} "
                       f"({result.recomputed} images recomputed)")

