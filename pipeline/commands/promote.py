"""``maskloop promote``: make a trained checkpoint the ``trained`` pre-annotator.

Steps (:func:`promote`):

1. Validate the checkpoint (:func:`pipeline.learning.segmenter.load_segmenter`; optional expected architecture /
   resolution from ``train`` params) so a broken or foreign file is never promoted.
2. Copy it to ``paths.promoted/model.pt`` (atomic) and, inside a DVC repository, ``dvc add`` it so the
   weights are versioned by DVC (``model.pt.dvc`` is the git-tracked pointer).
3. Write ``paths.promoted/lineage.json`` (git-tracked): checkpoint SHA-256, architecture, resolution, the
   dataset version and train params it was trained with, and ``verified_items``: the sorted ids of items a
   human had verified at promote time (pulled corrections and curated ``verified``). The preannotate stage
   re-pre-annotates only items **not** in that list.
4. Set ``preannotate.model: trained`` in params.yaml with a comment-preserving edit (ruamel.yaml), so the
   next ``dvc repro`` re-runs preannotate with the promoted model and the next push orders tasks by the new
   model's uncertainty.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths, read_params_file

log = logging.getLogger(__name__)

LINEAGE_NAME = "lineage.json"
MODEL_NAME = "model.pt"


@dataclass(frozen=True)
class PromoteResult:
    model_path: Path
    lineage_path: Path
    checkpoint_sha256: str
    dvc_tracked: bool
    params_changed: bool
    verified_items: tuple[str, ...]


def verified_items(paths: Paths) -> list[str]:
    """Sorted ids of items verified by a human: pulled corrections and curated rows with ``verified``."""
    ids: set[str] = set()
    corrections = Path(paths.corrections) / "corrections.parquet"
    if corrections.is_file():
        df = io.read_parquet(corrections, columns=["item_id"])
        ids.update(str(i) for i in df["item_id"])
    curated = Path(paths.curated) / "curated.parquet"
    if curated.is_file():
        df = io.read_parquet(curated)
        if {"item_id", "verified"} <= set(df.columns):
            ids.update(str(i) for i in df.loc[df["verified"].astype(bool), "item_id"])
    return sorted(ids)


def set_preannotate_model(params_path: Path, model: str) -> bool:
    """Set ``preannotate.model`` in ``params_path`` keeping comments and layout; True when the file changed."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    yaml = YAML()
    yaml.preserve_quotes = True
    text = Path(params_path).read_text(encoding="utf-8")
    doc = yaml.load(text)
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, dict):
        raise UserError(f"{params_path}: top level must be a mapping of sections")
    section = doc.get("preannotate")
    if section is None:
        section = CommentedMap()
        doc["preannotate"] = section
    if not isinstance(section, dict):
        raise UserError(f"{params_path}: section preannotate must be a mapping")
    if section.get("model") == model:
        return False
    section["model"] = model
    import io as _bio

    buf = _bio.StringIO()
    yaml.dump(doc, buf)
    io.write_text(Path(params_path), buf.getvalue())
    return True


def _in_dvc_repo(root: Path) -> bool:
    root = root.resolve()
    return any((p / ".dvc").is_dir() for p in (root, *root.parents))


def dvc_add(path: Path) -> None:
    """``dvc add path`` (version the weights with DVC). Raises :class:`UserError` with DVC's message on failure."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    proc = subprocess.run([dvc, "add", "-q", str(path)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise UserError(f"`dvc add {path}` failed: {msg[-1] if msg else proc.returncode}")


def promote(params_path: Path = DEFAULT_PARAMS, checkpoint: Path | None = None, use_dvc: bool | None = None,
            check_params: bool = True) -> PromoteResult:
    """Promote ``checkpoint`` (default ``paths.train/model.pt``); see the module docstring.

    ``use_dvc``: None = ``dvc add`` when inside a DVC repository. ``check_params``: refuse a checkpoint whose
    architecture/resolution differ from the ``train`` section of params.yaml.
    """
    from pipeline.learning.segmenter import load_segmenter

    paths = load_paths(params_path)
    src = Path(checkpoint) if checkpoint is not None else Path(paths.train) / MODEL_NAME
    expected_arch = expected_res = None
    if check_params:
        train_raw = read_params_file(params_path).get("train") or {}
        expected_arch = train_raw.get("arch")
        expected_res = train_raw.get("resolution")
    _model, meta = load_segmenter(src, "cpu", expected_arch=expected_arch, expected_resolution=expected_res)
    dest_dir = Path(paths.promoted)
    dest = dest_dir / MODEL_NAME
    data = src.read_bytes()
    io.write_bytes(dest, data)
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    tracked = False
    if use_dvc or (use_dvc is None and _in_dvc_repo(Path.cwd())):
        dvc_add(dest)
        tracked = True
    lineage = meta.lineage
    verified = verified_items(paths)
    doc: dict[str, Any] = {
        "promoted": True,
        "checkpoint_sha256": sha,
        "source": src.as_posix(),
        "arch": meta.arch,
        "resolution": meta.resolution,
        "dataset_version": lineage.get("dataset_version", ""),
        "train_params": lineage.get("train_params", {}),
        "n_train": lineage.get("n_train"),
        "verified_items": verified,
    }
    lineage_path = dest_dir / LINEAGE_NAME
    io.write_json(lineage_path, doc)
    changed = set_preannotate_model(Path(params_path), "trained")
    log.info("promoted %s -> %s (sha256 %s, %d verified items)%s", src, dest, sha[:12], len(verified),
             "; preannotate.model set to trained" if changed else "")
    return PromoteResult(dest, lineage_path, sha, tracked, changed, tuple(verified))


def register(app: typer.Typer) -> None:
    """Add ``maskloop promote`` to the CLI."""

    @app.command("promote")
    def promote_cmd(
        checkpoint: Annotated[
            Path | None, typer.Option("--checkpoint", "-c", help="checkpoint to promote (default: paths.train/model.pt).")
        ] = None,
        params: Annotated[Path, typer.Option("--params", "-p", help="params file.")] = DEFAULT_PARAMS,
        no_dvc: Annotated[bool, typer.Option("--no-dvc", help="do not `dvc add` the promoted weights.")] = False,
        force: Annotated[
            bool, typer.Option("--force", help="promote even if arch/resolution differ from the train params.")
        ] = False,
    ) -> None:
        """Make a trained checkpoint the `trained` pre-annotator (DVC-tracked, with lineage) and switch
        preannotate.model to trained, so the next `dvc repro` re-pre-annotates unverified items with it."""
        from pipeline.cli import run_guarded

        result = run_guarded(promote, params, checkpoint, False if no_dvc else None, not force)
        if isinstance(result, PromoteResult):
            typer.echo(
                f"promoted {result.model_path} (sha256 {result.checkpoint_sha256[:12]}, "
                f"{'DVC-tracked' if result.dvc_tracked else 'not DVC-tracked'}); lineage in {result.lineage_path}; "
                f"{len(result.verified_items)} verified items kept; "
                + ("preannotate.model set to trained" if result.params_changed else "preannotate.model already trained")
            )


def status_lines(paths: Paths) -> list[str]:
    """``maskloop status`` section: dataset version, last training, evaluation and the promoted model."""
    lines: list[str] = []
    ds = Path(paths.export) / "dataset.json"
    if ds.is_file():
        d = io.read_json(ds)
        sizes = ", ".join(f"{s} {v.get('items', 0)}" for s, v in d.get("splits", {}).items())
        lines.append(f"dataset {d.get('version')}: {d.get('items')} items ({d.get('verified', '?')} verified), "
                     f"{d.get('composites')} composites; {sizes}")
    else:
        lines.append("no export yet: `dvc repro export`")
    tr = Path(paths.metrics) / "train.json"
    if tr.is_file():
        m = io.read_json(tr)
        lines.append(f"trained: {m.get('epochs')} epochs on {m.get('n_train')} items; val IoU {m.get('val_iou')}")
    ev = Path(paths.metrics) / "evaluate.json"
    if ev.is_file():
        m = io.read_json(ev)
        t = m.get("test", {})
        lines.append(f"test: {t.get('items')} items, IoU {t.get('iou')}, boundary F {t.get('boundary_f')}")
        for version, e in m.get("effort", {}).items():
            lines.append(f"    effort {version}: {e['items']} items, {e['accepted_unchanged']:.0%} accepted unchanged, "
                         f"mean IoU {e['mean_iou']:.3f}, {e['mean_pixels_changed']:.0f} px changed"
                         + (f", simulated NoC@90 {e['mean_noc90']:.1f} clicks" if e.get("mean_noc90") is not None else ""))
    lin = Path(paths.promoted) / LINEAGE_NAME
    if lin.is_file():
        doc = io.read_json(lin)
        if doc.get("promoted"):
            lines.append(f"promoted: {doc.get('arch')} @ {doc.get('resolution')} px, sha256 "
                         f"{str(doc.get('checkpoint_sha256'))[:12]}, dataset {doc.get('dataset_version')}, "
                         f"{len(doc.get('verified_items', []))} verified items kept")
        else:
            lines.append("promoted: none yet (`maskloop promote` after training)")
    return lines
