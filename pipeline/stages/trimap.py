"""Trimap stage: reads each included curated mask (and its photo), writes ``trimaps/<id>.png`` and
``trimaps.parquet``. The algorithm and the output format are in :mod:`pipeline.matting.trimap`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.items import ok_items
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths, load_runner, load_section
from pipeline.core.runner import INDEX_NAME, FileInput, ItemResult, Stage, WorkItem, run_stage
from pipeline.matting.trimap import TRIMAP_COLUMNS, TrimapParams, make_trimap

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------- stage


def process(work: WorkItem, params: TrimapParams, _resource: Any) -> ItemResult:
    """One item: read the curated mask (and the photo for texture), write its trimap."""
    image = io.read_image(work.input("image")) if params.texture.enabled else None
    shape = image.shape[:2] if image is not None else None
    mask = io.read_mask(work.input("mask"), shape=shape)
    res = make_trimap(mask, params, image)
    return ItemResult(
        files={f"trimaps/{work.key}.png": io.encode_png(res.trimap)},
        record={
            "item_id": work.key,
            "band_px": res.band_px,
            "extra_px": res.extra_px,
            "unknown_fraction": round(res.unknown_fraction, 6),
            "textured_fraction": round(res.textured_fraction, 6),
        },
    )


def included_items(curated: Path) -> list[str]:
    """Item ids with ``included == True`` in ``curated/curated.parquet``, sorted."""
    table = Path(curated) / "curated.parquet"
    if not table.is_file():
        raise UserError(f"{table}: curated table not found; run the curate stage first (`dvc repro curate`)")
    df = io.read_parquet(table)
    for col in ("item_id", "included"):
        if col not in df.columns:
            raise UserError(f"{table}: column {col!r} missing (has {sorted(df.columns)})")
    return sorted(str(i) for i in df.loc[df["included"].astype(bool), "item_id"])


def run(params_path: Path = DEFAULT_PARAMS, retry_failed: bool = False) -> pd.DataFrame:
    """The trimap stage: returns the table it wrote."""
    paths: Paths = load_paths(params_path)
    params = load_section(params_path, "trimap", TrimapParams)
    runner = load_runner(params_path)
    included = included_items(paths.curated)
    images = {i.item_id: i for i in ok_items(paths.manifest)}
    works = []
    for item_id in included:
        if item_id not in images:
            log.warning("trimap: curated item %s is not an ok item of the manifest; skipped", item_id)
            continue
        works.append(
            WorkItem(
                key=item_id,
                inputs={"image": images[item_id].image_input(),
                        "mask": FileInput(Path(paths.curated) / "masks" / f"{item_id}.png")},
            )
        )
    stage: Stage[TrimapParams] = Stage(
        name="trimap", params=params, root=paths.trimap, process=process,
        state_root=paths.state, output_dirs=("trimaps",),
    )
    upstream = (paths.manifest, Path(paths.curated) / "curated.parquet", Path(paths.curated) / INDEX_NAME)
    result = run_stage(stage, works, runner, reports_dir=paths.reports, retry_failed=retry_failed, upstream=upstream)
    df = result.frame(TRIMAP_COLUMNS)
    io.write_parquet(Path(paths.trimap) / "trimaps.parquet", df)
    log.info("trimap: %d trimaps (%d computed, %d failed)", len(df), result.n_computed, result.n_failed)
    return df
