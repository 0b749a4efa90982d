"""Composite stage: for each matted item, ``composite.per_item`` seeded composites over the background
pool, plus ``lineage.parquet``. The recipe is in :mod:`pipeline.matting.composite`. Files per matted item: two
strips, ``image_strips/<item>.png`` (RGB) and ``alpha_strips/<item>.png``, the item's composites stacked top to
bottom in order (one composite = one tile, read back with :func:`pipeline.matting.composite.read_composite`).
A composite's mask (``a >= 128``) and trimap (``trimap_from_alpha(a, composite.trimap_px)``) are functions of
its alpha, so they are not stored here (export writes them into the dataset:
:func:`pipeline.stages.export.composite_mask_trimap`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths, load_runner, load_section
from pipeline.core.runner import INDEX_NAME, FileInput, ItemResult, Stage, WorkItem, run_stage
from pipeline.matting.composite import (
    ALPHA_STRIPS,
    IMAGE_STRIPS,
    LINEAGE_COLUMNS,
    PROCEDURAL_PREFIX,
    CompositeParams,
    background_pool,
    compose,
    draw_transform,
    item_rng,
    load_background,
    strip_paths,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- stage


def process(work: WorkItem, params: CompositeParams, _resource: Any) -> ItemResult:
    fg = io.read_image(work.input("foreground"))
    alpha = io.read_gray(work.input("alpha"))
    if fg.shape[:2] != alpha.shape:
        raise ValueError(f"foreground is {fg.shape[1]}x{fg.shape[0]} but alpha is {alpha.shape[1]}x{alpha.shape[0]}")
    pool: list[str] = list(work.data["pool"])
    folder = Path(work.data["folder"])
    h, w = alpha.shape
    # every composite has the canvas size (the item's photo size): tile k of the strips is rows k*h .. (k+1)*h - 1
    image_strip = np.empty((params.per_item * h, w, 3), np.uint8)
    alpha_strip = np.empty((params.per_item * h, w), np.uint8)
    rows = []
    for k in range(params.per_item):
        rng = item_rng(params.seed, work.key, k)
        name = pool[int(rng.integers(len(pool)))]
        t = draw_transform(rng, alpha.shape, params)
        bg = load_background(name, folder, params)
        comp, harm, shadow = compose(fg, alpha, bg, t, params, rng)
        cid = f"{work.key}_{k:02d}"
        if comp.image.shape[:2] != (h, w) or comp.alpha.shape != (h, w):
            raise ValueError(f"composite {cid} is {comp.alpha.shape[1]}x{comp.alpha.shape[0]}, the canvas {w}x{h}")
        image_strip[k * h:(k + 1) * h] = comp.image
        alpha_strip[k * h:(k + 1) * h] = comp.alpha
        # masks (a >= 128) and trimaps are pure functions of the alpha: export derives them
        # (pipeline.stages.export.composite_mask_trimap), half the files per composite for DVC and the disk
        rows.append({"composite_id": cid, "item_id": work.key, "tile": k, "background": name, "scale": t.scale,
                     "dx": t.dx, "dy": t.dy, "flip": t.flip, "seed": params.seed, "harmonize": harm,
                     "shadow": shadow})
    image_rel, alpha_rel = (p.as_posix() for p in strip_paths(Path(), work.key))  # relative to paths.composite
    files = {image_rel: io.encode_png(image_strip), alpha_rel: io.encode_png(alpha_strip)}
    return ItemResult(files=files, record={"item_id": work.key, "composites": rows,
                                           "megapixels": round(alpha.size * params.per_item / 1e6, 6)})


def run(params_path: Path = DEFAULT_PARAMS, retry_failed: bool = False) -> pd.DataFrame:
    """The composite stage: returns the lineage table it wrote."""
    import time

    paths: Paths = load_paths(params_path)
    params = load_section(params_path, "composite", CompositeParams)
    runner = load_runner(params_path)
    table = Path(paths.matte) / "matte.parquet"
    if not table.is_file():
        raise UserError(f"{table}: matte table not found; run the matte stage first (`dvc repro matte`)")
    ids = sorted(str(i) for i in io.read_parquet(table, columns=["item_id"])["item_id"])
    pool = background_pool(paths.backgrounds, params)
    bg_inputs = {f"bg:{n}": FileInput(Path(paths.backgrounds) / n) for n in pool
                 if not n.startswith(PROCEDURAL_PREFIX)}
    works = [
        WorkItem(
            key=i,
            inputs={"foreground": FileInput(Path(paths.matte) / "foreground" / f"{i}.png"),
                    "alpha": FileInput(Path(paths.matte) / "alpha" / f"{i}.png"), **bg_inputs},
            data={"pool": pool, "folder": Path(paths.backgrounds).as_posix()},
        )
        for i in ids
    ]
    stage: Stage[CompositeParams] = Stage(
        name="composite", params=params, root=paths.composite, process=process,
        # images/, alpha/ (one file per composite, before strips), masks/ and trimaps/ (derived from alpha) are no
        # longer written; listed so an upgrade sweeps their files
        state_root=paths.state, output_dirs=(IMAGE_STRIPS, ALPHA_STRIPS, "images", "alpha", "masks", "trimaps"),
    )
    t0 = time.perf_counter()
    upstream = (table, Path(paths.matte) / INDEX_NAME, *(f.path for f in bg_inputs.values()))
    result = run_stage(stage, works, runner, reports_dir=paths.reports, retry_failed=retry_failed, upstream=upstream)
    seconds = time.perf_counter() - t0
    rows = [row for _key, rec in result.records for row in rec.get("composites", [])]
    df = pd.DataFrame(rows, columns=list(LINEAGE_COLUMNS))
    io.write_parquet(Path(paths.composite) / "lineage.parquet", df)
    computed = {o.key for o in result.outcomes if o.computed and o.status == "ok"}
    mp = sum(float(rec.get("megapixels", 0.0)) for key, rec in result.records if key in computed)
    if computed and seconds > 0:
        log.info("composite: %d composites of %d items; computed %.2f MP in %.1f s (%.2f MP/s)",
                 len(df), len(result.records), mp, seconds, mp / seconds)
    else:
        log.info("composite: %d composites of %d items (all up to date)", len(df), len(result.records))
    return df
