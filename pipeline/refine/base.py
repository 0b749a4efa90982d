"""What every refinement engine shares: clicks, the item, the result, params and the protocol.

A refinement engine turns a current mask plus a few annotator clicks into a better mask. Engines are small
classes built from :class:`RefineParams` and :class:`~pipeline.core.params.Paths` (weights load in the
constructor, never at import; registry in :mod:`pipeline.refine`) with a frozen :attr:`spec` and one method::

    refine(item: RefineItem, current_mask: np.ndarray | None, clicks: Sequence[Click], box: Box | None = None)
        -> RefineResult

- ``item``: the pipeline's item (:class:`RefineItem`: id, image path, and where the pipeline's cached outputs
  are — pre-annotation, SAM embeddings, promoted model). Engines cache per-item work (downscaled copies, SAM
  embeddings) keyed by ``item_id``, so the second click on an item is cheaper than the first.
- ``current_mask``: ``(H, W)`` uint8 (nonzero = foreground) at the image's full size, or ``None`` for an
  empty canvas (same as an all-zero mask).
- ``clicks``: every click so far, oldest first (:class:`Click`: pixel coordinates in the full image). When
  two clicks disagree about one pixel, the later click wins.
- ``box``: optional :class:`Box` (XYXY pixels, ``x1``/``y1`` exclusive): the object lies inside.

Contract every engine keeps (checked by :class:`RefineResult` and :func:`check_result`): the result is at the
image's full size; ``mask`` is uint8 exactly {0, 1}; ``probability`` float32 in [0, 1] with
``mask == (probability >= 0.5)``; every clicked pixel is on its click's side (positive: foreground), unless a
later click hit the very same pixel (engines paint a small disc around each click, oldest first, then the
clicked pixels themselves: :func:`force_clicks`).
Bad input raises :class:`RefineInputError` (a :class:`~pipeline.core.errors.UserError`) naming the item and the
bad value: a click outside the image, a mask of the wrong size, an empty box.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.registry import check_device

if TYPE_CHECKING:
    from pipeline.core.params import Paths

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- errors


class RefineInputError(UserError):
    """A refinement request that cannot be answered: click outside the image, wrong mask size, bad box."""


class UnknownItem(RefineInputError):
    """The item id is not an ok item of the manifest."""


# --------------------------------------------------------------------------- clicks, box


@dataclass(frozen=True)
class Click:
    """One annotator click: pixel ``(x, y)`` in the full image (column, row; origin top-left) and its sign
    (``positive``: "this is foreground", else "this is background")."""

    x: int
    y: int
    positive: bool

    def __post_init__(self) -> None:
        if isinstance(self.x, bool) or isinstance(self.y, bool):
            raise TypeError(f"click coordinates must be ints, got ({self.x!r}, {self.y!r})")
        object.__setattr__(self, "x", int(self.x))
        object.__setattr__(self, "y", int(self.y))
        object.__setattr__(self, "positive", bool(self.positive))


@dataclass(frozen=True)
class Box:
    """An object box XYXY in full-image pixels; ``x1``/``y1`` exclusive (``x0 < x1``, ``y0 < y1``)."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise ValueError(f"box ({self.x0}, {self.y0}, {self.x1}, {self.y1}) is empty (need x0 < x1, y0 < y1)")

    def clipped(self, shape: tuple[int, int]) -> Box:
        """The box clipped to an image of ``shape`` ``(H, W)``; :class:`RefineInputError` when nothing is left."""
        h, w = shape
        x0, y0 = max(0, self.x0), max(0, self.y0)
        x1, y1 = min(w, self.x1), min(h, self.y1)
        if not (x0 < x1 and y0 < y1):
            raise RefineInputError(f"box {self.as_tuple()} lies outside the {w}x{h} image")
        return Box(x0, y0, x1, y1)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)


def check_clicks(clicks: Sequence[Click], shape: tuple[int, int], item_id: str = "") -> None:
    """Raise :class:`RefineInputError` naming the item and the click when a click lies outside an image of
    ``shape`` ``(H, W)`` (or is not a :class:`Click`)."""
    h, w = shape
    for i, c in enumerate(clicks):
        if not isinstance(c, Click):
            raise RefineInputError(f"item {item_id}: click {i} is a {type(c).__name__}, not a Click")
        if not (0 <= c.x < w and 0 <= c.y < h):
            raise RefineInputError(
                f"item {item_id}: click {i} at (x={c.x}, y={c.y}) lies outside the {w}x{h} image"
            )


def check_mask(mask: np.ndarray | None, shape: tuple[int, int], item_id: str = "") -> np.ndarray:
    """The current mask as bool ``(H, W)`` (``None`` -> all background); :class:`RefineInputError` when it is
    not a 2-D array of the image's size."""
    if mask is None:
        return np.zeros(shape, bool)
    m = np.asarray(mask)
    if m.ndim != 2 or m.shape != tuple(shape):
        raise RefineInputError(
            f"item {item_id}: current mask is {m.shape}, the image is {tuple(shape)} (H, W); send a mask of "
            "the image's size"
        )
    return m > 0


# --------------------------------------------------------------------------- item


@dataclass(frozen=True, eq=False)
class RefineItem:
    """The item being refined: its id, its image and where the pipeline's cached outputs are.

    ``paths`` (optional) locates the pipeline's outputs for this item: the pre-annotation
    (``paths.preannotate/masks|prob/<item_id>.png``), the SAM embedding cache (``paths.sam_cache``) and the
    promoted model (``paths.promoted``). ``pixels`` (optional) is the image itself, RGB uint8 ``(H, W, 3)``,
    for callers that already hold it (benchmarks, tests); otherwise the image is read from ``image_path``.
    """

    item_id: str
    image_path: Path
    paths: Paths | None = None
    pixels: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.item_id:
            raise ValueError("a refine item needs an item_id")
        if self.pixels is not None and (
            self.pixels.ndim != 3 or self.pixels.shape[2] != 3 or self.pixels.dtype != np.uint8
        ):
            raise ValueError(f"item {self.item_id}: pixels must be RGB uint8 (H, W, 3), got "
                             f"{self.pixels.shape} {self.pixels.dtype}")

    def load_image(self) -> np.ndarray:
        """RGB uint8 ``(H, W, 3)`` (EXIF orientation applied, as everywhere in the pipeline)."""
        if self.pixels is not None:
            return self.pixels
        from pipeline.core import io

        try:
            return io.read_image(Path(self.image_path))
        except (OSError, ValueError) as exc:  # io.ImageError (a ValueError) names the file and the problem
            raise RefineInputError(f"item {self.item_id}: image {exc}") from exc

    def preannotation_paths(self) -> tuple[Path, Path] | None:
        """``(mask, probability)`` PNG paths of the item's pre-annotation, or None without ``paths``."""
        if self.paths is None:
            return None
        root = Path(self.paths.preannotate)
        return root / "masks" / f"{self.item_id}.png", root / "prob" / f"{self.item_id}.png"

    def preannotation(self) -> np.ndarray | None:
        """The pipeline's pre-annotation mask, uint8 {0, 1} ``(H, W)``, or None when there is none on disk."""
        found = self.preannotation_paths()
        if found is None or not found[0].is_file():
            return None
        from pipeline.core import io

        return (io.read_mask(found[0]) > 0).astype(np.uint8)


def item_from_manifest(paths: Paths, item_id: str) -> RefineItem:
    """The ok manifest item ``item_id`` as a :class:`RefineItem` (paths from the manifest, never from a
    request); :class:`UnknownItem` when the manifest has no such ok item."""
    from pipeline.core.items import ok_items

    manifest = Path(paths.manifest)
    if not manifest.is_file():
        raise UnknownItem(f"item {item_id}: no manifest at {manifest} (run `dvc repro ingest` first)")
    for it in ok_items(manifest):
        if it.item_id == item_id:
            return RefineItem(item_id=it.item_id, image_path=Path(it.source_path), paths=paths)
    raise UnknownItem(f"item {item_id!r} is not an ok item of {manifest}")


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class RefineResult:
    """A refined mask at the image's full size.

    ``mask``: ``(H, W)`` uint8 exactly {0, 1}; ``probability``: ``(H, W)`` float32 in [0, 1] (foreground),
    ``mask == (probability >= 0.5)``. ``cached``: whether the engine's per-item state (SAM embedding,
    downscaled copies) was already there.
    """

    mask: np.ndarray
    probability: np.ndarray
    cached: bool = False

    def __post_init__(self) -> None:
        m, p = self.mask, self.probability
        if m.ndim != 2 or m.dtype != np.uint8:
            raise ValueError(f"mask must be (H, W) uint8, got {m.shape} {m.dtype}")
        if p.shape != m.shape or p.dtype != np.float32:
            raise ValueError(f"probability must be float32 of the mask's shape {m.shape}, got {p.shape} {p.dtype}")
        if m.size and int(m.max()) > 1:
            raise ValueError("mask values must be exactly {0, 1}")
        if p.size and (float(p.min()) < 0.0 or float(p.max()) > 1.0 or not np.isfinite(p).all()):
            raise ValueError("probability values must be finite and in [0, 1]")


def check_result(result: RefineResult, shape: tuple[int, int], clicks: Sequence[Click], engine: str) -> None:
    """Raise ValueError when ``result`` breaks the contract: wrong size, or a clicked pixel (its latest
    click) on the wrong side."""
    if result.mask.shape != tuple(shape):
        raise ValueError(f"refine engine {engine} returned a {result.mask.shape} mask for a {tuple(shape)} image")
    latest = {(c.x, c.y): c.positive for c in clicks}
    for (x, y), want in latest.items():
        if bool(result.mask[y, x]) != want:
            raise ValueError(f"refine engine {engine} ignored the {'positive' if want else 'negative'} click "
                             f"at ({x}, {y})")


def force_clicks(
    mask: np.ndarray, probability: np.ndarray, clicks: Sequence[Click], radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paint a disc of ``radius`` px around each click into ``mask`` (uint8 {0,1}) and ``probability``
    (float32), oldest first, so later clicks win; then every clicked pixel itself (oldest first), so a click's
    own pixel is on its side unless a later click hit the very same pixel. In place; returned."""
    import cv2

    if radius > 0:
        for c in clicks:
            value = 1 if c.positive else 0
            cv2.circle(mask, (c.x, c.y), radius, value, -1)
            cv2.circle(probability, (c.x, c.y), radius, float(value), -1)
    for c in clicks:
        mask[c.y, c.x] = 1 if c.positive else 0
        probability[c.y, c.x] = 1.0 if c.positive else 0.0
    return mask, probability


# --------------------------------------------------------------------------- params


@dataclass(frozen=True)
class GrabCutRefineParams:
    """Section ``refine.grabcut``: clicks as hard seeds, the current mask as the prior (see
    :mod:`pipeline.refine.grabcut`)."""

    work_side: int = 240          # GrabCut runs on a copy this long (px)
    iterations: int = 3
    click_radius: float = 0.012   # seed disc radius, fraction of the work copy's longer side
    band: float = 0.04            # GrabCut may move the prior's edge this far (fraction of the longer side)
    release: float = 1.0          # a click frees a disc of release x its distance to the prior's edge
    max_release: float = 0.15     # ... at most this fraction of the longer side (+ band)
    empty_radius: float = 0.15    # empty canvas: probable foreground this far around positive clicks
    wand: float = 16.0            # a disagreeing click's magic wand: Lab tolerance per channel (0 = off)
    near: float = 0.5             # ... whose part within near x the click's edge distance is a hard label
    far: float = 0.1              # a positive click this far from the prior (fraction of the longer side) is
    #                               seeded like on an empty canvas (probable foreground disc of empty_radius)
    deep: float = 0.1             # a disagreeing click at >= deep x sqrt(area of its prior part) from the
    #                               prior's edge releases that whole part (0 = off) ...
    deep_keep: float = 0.2        # ... unless less than this fraction of the part keeps its side (then local)
    deep_near: float = 0.9        # a deep negative click makes a disc of deep_near x its edge distance
    #                               probable background, whatever the colours (0 = the wand's region only)
    whole_parts: bool = True      # negative click on a separate part: drop it; positive in a hole: may fill it
    min_island_frac: float = 0.1
    refine_radius: int = 2        # guided filter (edge-aware upsampling) at work size; 0 = bilinear
    refine_side: int = 1024
    refine_eps: float = 1e-3

    def __post_init__(self) -> None:
        if not 32 <= self.work_side <= 2048:
            raise ValueError(f"refine.grabcut.work_side must be in [32, 2048], got {self.work_side}")
        if not 1 <= self.iterations <= 20:
            raise ValueError(f"refine.grabcut.iterations must be in [1, 20], got {self.iterations}")
        for name in ("click_radius", "band", "empty_radius", "max_release", "far", "deep_keep"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"refine.grabcut.{name} must be in [0, 1], got {v}")
        if self.release < 0 or self.wand < 0 or self.near < 0 or self.deep < 0 or self.deep_near < 0:
            raise ValueError("refine.grabcut.release, wand, near, deep and deep_near must be >= 0")
        if self.release < 0:
            raise ValueError(f"refine.grabcut.release must be >= 0, got {self.release}")
        if not 0.0 <= self.min_island_frac < 1.0:
            raise ValueError(f"refine.grabcut.min_island_frac must be in [0, 1), got {self.min_island_frac}")
        if self.refine_side < self.work_side or self.refine_radius < 0 or self.refine_eps <= 0:
            raise ValueError("refine.grabcut needs refine_side >= work_side, refine_radius >= 0, refine_eps > 0")


@dataclass(frozen=True)
class SamRefineParams:
    """Section ``refine.sam``: segment-anything prompted by the clicks (+ box, + the current mask as its
    low-res mask input), on the pipeline's cached image embedding (see :mod:`pipeline.refine.sam`)."""

    arch: Literal["vit_b", "vit_l", "vit_h", "vit_tiny"] = "vit_b"
    checkpoint: Path = Path("models/sam_vit_b_01ec64.pth")
    mask_input: bool = True       # feed the current mask as SAM's low-res mask prompt
    multimask: str = "auto"       # auto (multimask for a single click, else one mask) | always | never
    cache: bool = True            # read/write image embeddings in paths.sam_cache

    def __post_init__(self) -> None:
        if self.multimask not in ("auto", "always", "never"):
            raise ValueError(f"refine.sam.multimask must be auto, always or never, got {self.multimask!r}")


@dataclass(frozen=True)
class TrainedRefineParams:
    """Section ``refine.trained``: the promoted model's probability as the prior, refined like ``grabcut``
    (``prior_weight`` x model probability + the rest x the current mask)."""

    prior_weight: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.prior_weight <= 1.0:
            raise ValueError(f"refine.trained.prior_weight must be in [0, 1], got {self.prior_weight}")


@dataclass(frozen=True)
class RefineParams:
    """Section ``refine`` of params.yaml: the default ``engine`` and each engine's settings."""

    engine: str = "grabcut"
    device: str = "auto"
    threads: int = 0
    cache_items: int = 16         # per-engine LRU of per-item state (images, embeddings)
    grabcut: GrabCutRefineParams = field(default_factory=GrabCutRefineParams)
    sam: SamRefineParams = field(default_factory=SamRefineParams)
    trained: TrainedRefineParams = field(default_factory=TrainedRefineParams)

    def __post_init__(self) -> None:
        from pipeline.refine import REFINERS

        if self.engine not in REFINERS:
            raise ValueError(f"refine.engine {self.engine!r} is not an engine; choose one of {sorted(REFINERS)}")
        check_device(self.device, "refine.device")
        if self.threads < 0 or self.cache_items < 1:
            raise ValueError("refine.threads must be >= 0 and refine.cache_items >= 1")


def load_refine_params(params_path: Path) -> RefineParams:
    """The ``refine`` section of ``params_path`` (defaults when absent)."""
    from pipeline.core.params import load_section

    return load_section(params_path, "refine", RefineParams)


# --------------------------------------------------------------------------- spec / protocol


@dataclass(frozen=True)
class RefinerSpec:
    """What an engine is: registry name, a version that changes with its settings or weights, and the
    checkpoint's SHA-256 ('' without weights)."""

    name: str
    version: str
    checkpoint_sha256: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.version:
            raise ValueError("a refine engine spec needs a name and a version")


class Refiner(Protocol):
    """The protocol every registry entry implements (constructor: ``cls(params: RefineParams, paths: Paths)``).

    Implementations must be safe to call from several threads at once (the assist server serves several
    annotators); they serialise internally where they must."""

    spec: RefinerSpec

    def refine(
        self, item: RefineItem, current_mask: np.ndarray | None, clicks: Sequence[Click], box: Box | None = None
    ) -> RefineResult: ...
