"""``maskloop sam-prompt ITEM --box/--point``: prompt SAM on one item, answering from the embedding cache.

The image embedding comes from ``paths.sam_cache`` (written by the ``preannotate`` stage with ``model: sam``),
so a prompt costs only SAM's decoder (milliseconds); on a cache miss the encoder runs once and the entry is
stored for next time. Uses the ``preannotate.sam`` settings (arch, checkpoint, multimask) whatever
``preannotate.model`` is. Writes the mask (uint8 {0, 255}, full resolution) and prints the predicted IoU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths, load_section

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptAnswer:
    """What one prompt produced."""

    item_id: str
    mask: np.ndarray
    sam_iou: float
    cached: bool
    seconds: float


def parse_box(text: str) -> np.ndarray:
    """``"x0,y0,x1,y1"`` (pixels, XYXY) -> float32 ``(4,)``; UserError on a malformed or empty box."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4:
        raise UserError(f"--box {text!r}: expected four numbers x0,y0,x1,y1 (pixels)")
    if vals[2] <= vals[0] or vals[3] <= vals[1]:
        raise UserError(f"--box {text!r}: x1 must be > x0 and y1 > y0")
    return np.array(vals, np.float32)


def parse_point(text: str) -> tuple[float, float, int]:
    """``"x,y"`` (foreground) or ``"x,y,label"`` with label 1 (foreground) / 0 (background)."""
    parts = text.split(",")
    try:
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except (ValueError, IndexError):
        raise UserError(f"--point {text!r}: expected x,y or x,y,label (label 1 = foreground, 0 = background)") from None
    if len(parts) > 3 or label not in (0, 1):
        raise UserError(f"--point {text!r}: expected x,y or x,y,label with label 0 or 1")
    return x, y, label


def resolve_item(paths: Paths, item: str) -> tuple[str, Path]:
    """Item id (or a unique prefix of one) -> (item id, source image path); UserError otherwise."""
    from pipeline.core.items import ok_items

    items = ok_items(paths.manifest)
    matches = [i for i in items if i.item_id.startswith(item.lower())] if item else []
    if len(matches) != 1:
        why = "no item" if not matches else f"{len(matches)} items"
        raise UserError(f"{why} in {paths.manifest} match {item!r}; give a full item id (see the manifest)")
    return matches[0].item_id, Path(matches[0].source_path)


def sam_prompt(
    params_path: Path, item: str, box: np.ndarray | None, points: list[tuple[float, float, int]]
) -> PromptAnswer:
    """Prompt SAM on ``item`` with a box and/or points (original image pixels)."""
    from pipeline.learning.torch_utils import select_device, set_threads
    from pipeline.preannotators.base import PreannotateParams
    from pipeline.preannotators.sam import CachedSam, load_sam
    from pipeline.preannotators.sam_cache import SamEmbeddingCache

    if box is None and not points:
        raise UserError("give a prompt: --box x0,y0,x1,y1 and/or one or more --point x,y[,label]")
    paths = load_paths(params_path)
    params = load_section(params_path, "preannotate", PreannotateParams)
    item_id, image_path = resolve_item(paths, item)
    image = io.read_image(image_path)
    h, w = image.shape[:2]
    for x, y, _ in points:
        if not (0 <= x < w and 0 <= y < h):
            raise UserError(f"--point {x:g},{y:g} is outside the {w}x{h} image of item {item_id}")
    set_threads(params.threads)
    device = select_device(params.device)
    model, sha = load_sam(params.sam, device)
    sam = CachedSam(model, sha, device, SamEmbeddingCache(paths.sam_cache, sha))
    t0 = time.perf_counter()
    cached = sam.set_image(image, item_id)
    coords = labels = None
    if points:
        coords = np.array([(x, y) for x, y, _ in points], np.float32)
        labels = np.array([lab for _, _, lab in points], np.int32)
    logits, iou = sam.prompt(box, coords, labels, params.sam.multimask)
    mask = np.where(logits >= 0.0, 255, 0).astype(np.uint8)
    return PromptAnswer(item_id, mask, iou, cached, time.perf_counter() - t0)


def register(app: typer.Typer) -> None:
    """Add ``maskloop sam-prompt`` to the CLI."""

    @app.command("sam-prompt")
    def sam_prompt_cmd(
        item: Annotated[str, typer.Argument(help="item id (or a unique prefix of one) from the manifest.")],
        box: Annotated[
            str | None, typer.Option("--box", help="box prompt x0,y0,x1,y1 in image pixels (XYXY).")
        ] = None,
        point: Annotated[
            list[str] | None,
            typer.Option("--point", "--points", help="point prompt x,y[,label] (label 1 foreground, 0 background); repeatable."),
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="mask PNG to write (default: sam-prompt-<item>.png).")
        ] = None,
        params: Annotated[Path, typer.Option("--params", "-p", help="params file.")] = DEFAULT_PARAMS,
    ) -> None:
        """Prompt SAM on one item with a box and/or points, answering from the embedding cache (no encoder run
        when the item's embedding is cached), and write the mask."""
        from pipeline.cli import run_guarded

        def go() -> PromptAnswer:
            b = parse_box(box) if box else None
            pts = [parse_point(p) for p in point or []]
            return sam_prompt(params, item, b, pts)

        answer = run_guarded(go)
        if not isinstance(answer, PromptAnswer):
            raise typer.Exit(1)
        dest = out or Path(f"sam-prompt-{answer.item_id}.png")
        io.write_png(dest, answer.mask)
        typer.echo(
            f"{dest}: item {answer.item_id}, {int((answer.mask > 0).sum())} foreground pixels, predicted IoU "
            f"{answer.sam_iou:.3f}, embedding {'from cache' if answer.cached else 'computed and cached'}, "
            f"{answer.seconds * 1000:.0f} ms"
        )
