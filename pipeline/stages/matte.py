"""Matte stage: alpha mattes solved only in the trimap's unknown band, then foreground colours.

For every trimap written by the trimap stage (``paths.trimap/trimaps.parquet``):

1. the trimap is validated (size equal to the photo's, values exactly {0, 128, 255}, some unknown and
   some foreground pixels) — a bad trimap fails that item with a reason, the others proceed;
2. alpha is solved by the solver named in ``matte.solver`` (:data:`SOLVERS`): ``cf`` (closed-form,
   default) builds the matting Laplacian only for the band (:mod:`pipeline.matting.solve`), split into
   independent regions, each solved as a whole by Schwarz-preconditioned conjugate gradients (default); ``knn``, ``lkm``, ``rw``, ``sm`` and
   ``lbdm`` run pymatting's solver on each band region's crop (plus ``region_margin`` pixels). Known
   pixels come straight from the trimap;
3. foreground colours are estimated with pymatting's multilevel method (``estimate_foreground_ml``), so
   composites carry no background colour bleed.

Outputs: ``paths.matte/alpha/<id>.png`` (8-bit, or 16-bit with ``alpha_bits: 16``),
``paths.matte/foreground/<id>.png`` (RGB) and ``paths.matte/matte.parquet``
(``item_id, solver, unknown_px, regions``). Timings go to ``reports/matte.parquet`` (never into outputs).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.params import (
    DEFAULT_PARAMS,
    Paths,
    load_paths,
    load_runner,
    load_section,
    params_digest,
    to_jsonable,
)
from pipeline.core.runner import INDEX_NAME, FileInput, ItemResult, Stage, WorkItem, run_stage
from pipeline.matting.solve import FG, UNKNOWN, SolverError, solve_band_cf, split_regions

log = logging.getLogger(__name__)

MATTE_COLUMNS = ("item_id", "solver", "unknown_px", "regions")


class TrimapInvalid(ValueError):
    """A trimap that cannot be matted (wrong size, bad values, no unknown or no foreground pixels)."""


@dataclass(frozen=True)
class MatteParams:
    """Section ``matte`` of params.yaml."""

    solver: Literal["cf", "knn", "lkm", "rw", "sm", "lbdm"] = "cf"
    epsilon: float = 1e-7           # closed-form regularisation (pymatting's default)
    radius: int = 1                 # closed-form window radius
    # cf: Schwarz-preconditioned CG (exact system, fast) / auto / sparse LU / incomplete Cholesky + CG
    linear_solver: Literal["schwarz", "auto", "direct", "cg"] = "schwarz"
    rtol: float = 1e-7              # conjugate-gradient relative tolerance (cg solvers)
    maxiter: int = 10000            # conjugate-gradient iterations before "did not converge" (cg solvers)
    schwarz_tile_px: int = 256      # Schwarz subdomain size (pixels)
    schwarz_overlap_px: int = 16    # Schwarz subdomain overlap (pixels)
    schwarz_rtol: float = 3e-7      # Schwarz CG relative residual tolerance
    schwarz_memory_mb: float = 0.0  # > 0: exact float32 tile factors up to this size (MB); 0: incomplete Cholesky
    schwarz_coarse_px: int = 32     # coarse level: constant + colour functions per tile of this size (pixels)
    tile_px: int = 0                # cut band regions into independent tiles (0 = never; > 0 approximates)
    tile_margin: int = 32           # context around each independent tile (pixels)
    region_margin: int = 16         # context around each region crop for the non-cf solvers
    threads: int = 1                # regions solved concurrently inside one item
    alpha_bits: Literal[8, 16] = 8
    foreground: bool = True
    foreground_regularization: float = 1e-5

    def __post_init__(self) -> None:
        if self.epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")
        if self.radius < 1:
            raise ValueError(f"radius must be >= 1, got {self.radius}")
        if not 0 < self.rtol < 1:
            raise ValueError(f"rtol must be in (0, 1), got {self.rtol}")
        if self.maxiter < 1:
            raise ValueError(f"maxiter must be >= 1, got {self.maxiter}")
        if self.tile_px < 0 or (0 < self.tile_px < 32):
            raise ValueError(f"tile_px must be 0 (no tiling) or >= 32, got {self.tile_px}")
        if self.schwarz_tile_px < 16 or self.schwarz_overlap_px < 2 * self.radius:
            raise ValueError(f"schwarz_tile_px must be >= 16 and schwarz_overlap_px >= 2 * radius, got "
                             f"{self.schwarz_tile_px} and {self.schwarz_overlap_px}")
        if self.schwarz_coarse_px < 4:
            raise ValueError(f"schwarz_coarse_px must be >= 4, got {self.schwarz_coarse_px}")
        if self.schwarz_memory_mb < 0:
            raise ValueError(f"schwarz_memory_mb must be >= 0, got {self.schwarz_memory_mb}")
        if not 0 < self.schwarz_rtol < 1:
            raise ValueError(f"schwarz_rtol must be in (0, 1), got {self.schwarz_rtol}")
        if self.tile_margin < 2 * self.radius:
            raise ValueError(f"tile_margin must be >= 2 * radius, got {self.tile_margin}")
        if self.region_margin < 0 or self.threads < 1:
            raise ValueError("region_margin must be >= 0 and threads >= 1")


def validate_trimap(trimap: np.ndarray, shape: tuple[int, int]) -> None:
    """Raise :class:`TrimapInvalid` unless ``trimap`` (uint8 ``(H, W)``) can be matted at ``shape``."""
    if trimap.shape != tuple(shape):
        raise TrimapInvalid(
            f"trimap is {trimap.shape[1]}x{trimap.shape[0]} but the image is {shape[1]}x{shape[0]}"
        )
    bad = (trimap != 0) & (trimap != UNKNOWN) & (trimap != FG)
    if bad.any():
        vals = sorted({int(v) for v in np.unique(trimap[bad])[:5]})
        raise TrimapInvalid(f"trimap has {int(bad.sum())} pixels outside {{0, 128, 255}} (e.g. {vals})")
    if not (trimap == UNKNOWN).any():
        raise TrimapInvalid("trimap has no unknown (128) pixels: nothing to solve")
    if not (trimap == FG).any():
        raise TrimapInvalid("trimap has no foreground (255) pixels: the solve has no foreground constraint")


# --------------------------------------------------------------------------- solvers

SolverFn = Callable[[np.ndarray, np.ndarray, MatteParams], np.ndarray]


def _solve_cf(image: np.ndarray, trimap: np.ndarray, p: MatteParams) -> np.ndarray:
    return solve_band_cf(
        image, trimap, epsilon=p.epsilon, radius=p.radius, rtol=p.rtol, maxiter=p.maxiter,
        tile_px=p.tile_px, tile_margin=p.tile_margin, threads=p.threads, linear_solver=p.linear_solver,
        schwarz_tile_px=p.schwarz_tile_px, schwarz_overlap_px=p.schwarz_overlap_px, schwarz_rtol=p.schwarz_rtol,
        schwarz_memory_mb=p.schwarz_memory_mb, schwarz_coarse_px=p.schwarz_coarse_px,
    )


def _pymatting_by_region(name: str) -> SolverFn:
    def solve(image: np.ndarray, trimap: np.ndarray, p: MatteParams) -> np.ndarray:
        import pymatting

        fn = getattr(pymatting, f"estimate_alpha_{name}")
        img = image.astype(np.float64) / 255.0
        alpha = (trimap == FG).astype(np.float64)
        whole: list[np.ndarray] = []
        for reg in split_regions(trimap == UNKNOWN, margin=max(p.region_margin, 2 * p.radius)):
            sub = trimap[reg.y0 : reg.y1, reg.x0 : reg.x1].astype(np.float64) / 255.0
            sub = np.where(reg.solve_mask, 0.5, np.where(sub > 0.9, 1.0, 0.0))
            if not (sub == 1.0).any() or not (sub == 0.0).any():
                # pymatting needs both constraints in its input: fall back to the whole frame (once)
                if not whole:
                    whole.append(_call(fn, name, img, trimap.astype(np.float64) / 255.0, p, "whole frame"))
                part = whole[0][reg.y0 : reg.y1, reg.x0 : reg.x1]
            else:
                where = f"region x={reg.x0}..{reg.x1}, y={reg.y0}..{reg.y1}"
                part = _call(fn, name, img[reg.y0 : reg.y1, reg.x0 : reg.x1], sub, p, where)
            view = alpha[reg.y0 : reg.y1, reg.x0 : reg.x1]
            view[reg.keep] = part[reg.keep]
        return np.clip(alpha, 0.0, 1.0)

    return solve


def _call(fn: Callable[..., Any], name: str, img: np.ndarray, tri: np.ndarray, p: MatteParams, where: str) -> np.ndarray:
    try:
        return np.asarray(fn(img, tri, **_cg(name, p)), dtype=np.float64)
    except ValueError as exc:  # pymatting raises ValueError for non-convergence
        raise SolverError(f"{name} solver failed on {where}: {exc}") from exc


def _cg(name: str, p: MatteParams) -> dict[str, Any]:
    """Solver keyword arguments (the sampling matting solver has no linear solve)."""
    return {} if name == "sm" else {"cg_kwargs": {"rtol": p.rtol, "maxiter": p.maxiter}}


# name -> function(image uint8 (H, W, 3), trimap uint8 (H, W), params) -> alpha float64 (H, W) in [0, 1]
SOLVERS: dict[str, SolverFn] = {
    "cf": _solve_cf,
    "knn": _pymatting_by_region("knn"),
    "lkm": _pymatting_by_region("lkm"),
    "rw": _pymatting_by_region("rw"),
    "sm": _pymatting_by_region("sm"),
    "lbdm": _pymatting_by_region("lbdm"),
}


@dataclass(frozen=True)
class Matte:
    """Alpha float64 ``(H, W)`` in ``[0, 1]`` and foreground RGB uint8 ``(H, W, 3)`` (or None)."""

    alpha: np.ndarray
    foreground: np.ndarray | None
    regions: int
    seconds_solve: float


def estimate_foreground(image: np.ndarray, alpha: np.ndarray, regularization: float = 1e-5) -> np.ndarray:
    """Foreground colours (RGB uint8 ``(H, W, 3)``) of ``image`` given ``alpha`` (pymatting multilevel)."""
    from pymatting import estimate_foreground_ml

    fg = estimate_foreground_ml(image.astype(np.float64) / 255.0, alpha, regularization=regularization)
    return np.clip(np.rint(np.asarray(fg) * 255.0), 0, 255).astype(np.uint8)


def matte(image: np.ndarray, trimap: np.ndarray, params: MatteParams) -> Matte:
    """Validate ``trimap`` against ``image`` (RGB uint8 ``(H, W, 3)``), solve alpha, estimate foreground."""
    validate_trimap(trimap, image.shape[:2])
    t0 = time.perf_counter()
    alpha = SOLVERS[params.solver](image, trimap, params)
    seconds = time.perf_counter() - t0
    regions = len(split_regions(trimap == UNKNOWN, margin=2 * params.radius))
    fg = estimate_foreground(image, alpha, params.foreground_regularization) if params.foreground else None
    return Matte(alpha=alpha, foreground=fg, regions=regions, seconds_solve=seconds)


def encode_alpha(alpha: np.ndarray, bits: int) -> np.ndarray:
    """Quantise alpha (float ``[0, 1]``) to uint8 (``bits=8``) or uint16 (``bits=16``)."""
    if bits == 16:
        return np.rint(np.clip(alpha, 0, 1) * 65535.0).astype(np.uint16)
    return np.rint(np.clip(alpha, 0, 1) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------- stage


def process(work: WorkItem, params: MatteParams, _resource: Any) -> ItemResult:
    image = io.read_image(work.input("image"))
    trimap = io.read_gray(work.input("trimap"))
    result = matte(image, trimap, params)
    files = {f"alpha/{work.key}.png": io.encode_png(encode_alpha(result.alpha, params.alpha_bits))}
    if result.foreground is not None:
        files[f"foreground/{work.key}.png"] = io.encode_png(result.foreground)
    return ItemResult(
        files=files,
        record={"item_id": work.key, "solver": params.solver,
                "unknown_px": int(np.count_nonzero(trimap == UNKNOWN)), "regions": result.regions},
    )


def status_lines(paths: Paths) -> list[str]:
    """``maskloop status`` section: trimaps, mattes and composites written so far."""
    lines = []
    for label, table in (("trimaps", Path(paths.trimap) / "trimaps.parquet"),
                         ("alpha mattes", Path(paths.matte) / "matte.parquet"),
                         ("composites", Path(paths.composite) / "lineage.parquet")):
        if table.is_file():
            lines.append(f"{len(io.read_parquet(table)):>7} {label}")
    return lines


def numba_cache_dir(paths: Paths) -> Path:
    """A persistent numba cache next to the runner state, so workers do not recompile pymatting."""
    return (Path(paths.state).parent / "numba").resolve()


def warm_numba_cache(params: MatteParams) -> None:
    """Compile every numba kernel the stage uses by matting a tiny synthetic image (fills NUMBA_CACHE_DIR)."""
    h, w = 24, 32
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.dstack([xx * 7 % 256, yy * 9 % 256, (xx + yy) * 5 % 256]).astype(np.uint8)
    trimap = np.zeros((h, w), np.uint8)
    trimap[6:18, 8:24] = UNKNOWN
    trimap[9:15, 12:20] = FG
    matte(image, trimap, params)


def _warmup(params: MatteParams) -> None:
    """Driver-side, before workers start: fill the numba cache once in a child process, so N workers load
    compiled kernels instead of each compiling them (~30 s each in a fresh environment). A child process,
    not the driver itself, so no numba thread pool exists before the workers are forked."""
    import subprocess
    import sys

    cache = Path(os.environ["NUMBA_CACHE_DIR"])
    marker = cache / f"warm-{params_digest(params)[:16]}"
    if marker.is_file():
        return
    log.info("matte: compiling the numba kernels once (cached in %s)", cache)
    code = (
        "import json, sys\n"
        "from pipeline.stages.matte import MatteParams, warm_numba_cache\n"
        "from pipeline.core.params import from_mapping\n"
        "warm_numba_cache(from_mapping(MatteParams, json.loads(sys.argv[1]), 'matte'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(to_jsonable(params))],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # not fatal: workers will compile for themselves
        log.warning("matte: numba warm-up failed (%s); workers compile on their own", proc.stderr.strip()[-300:])
        return
    cache.mkdir(parents=True, exist_ok=True)
    marker.write_text("ok\n")


def run(params_path: Path = DEFAULT_PARAMS, retry_failed: bool = False) -> pd.DataFrame:
    """The matte stage: returns the table it wrote."""
    paths: Paths = load_paths(params_path)
    params = load_section(params_path, "matte", MatteParams)
    runner = load_runner(params_path)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir(paths)))
    from pipeline.core.items import ok_items

    table = Path(paths.trimap) / "trimaps.parquet"
    if not table.is_file():
        raise UserError(f"{table}: trimap table not found; run the trimap stage first (`dvc repro trimap`)")
    ids = sorted(str(i) for i in io.read_parquet(table, columns=["item_id"])["item_id"])
    images = {i.item_id: i for i in ok_items(paths.manifest)}
    works = [
        WorkItem(key=i, inputs={"image": images[i].image_input(),
                                "trimap": FileInput(Path(paths.trimap) / "trimaps" / f"{i}.png")})
        for i in ids
        if i in images
    ]
    stage: Stage[MatteParams] = Stage(
        name="matte", params=params, root=paths.matte, process=process,
        state_root=paths.state, output_dirs=("alpha", "foreground"), warmup=_warmup,
    )
    upstream = (paths.manifest, table, Path(paths.trimap) / INDEX_NAME)
    result = run_stage(stage, works, runner, reports_dir=paths.reports, retry_failed=retry_failed, upstream=upstream)
    df = result.frame(MATTE_COLUMNS)
    io.write_parquet(Path(paths.matte) / "matte.parquet", df)
    log.info("matte: %d mattes (%d computed, %d failed)", len(df), result.n_computed, result.n_failed)
    return df
