"""What every pre-annotator shares: params, the frozen spec, the result, checkpoint handling, measures.

A pre-annotator is a small class built from :class:`PreannotateParams` (weights load in its constructor,
never at import) with a frozen :attr:`spec` and one method::

    predict(image: np.ndarray, context: PredictContext) -> PreannotationResult

``image`` is RGB ``uint8`` ``(H, W, 3)`` (as :func:`pipeline.core.io.read_image` returns it). The result holds a
binary mask and a per-pixel foreground probability **at the image's full resolution**, plus scalar confidence
measures. :class:`PreannotationResult` validates all of that in ``__post_init__``, so a buggy model can never
write a mask of the wrong size or values.

Resolution policy (:func:`pipeline.core.images.shrink_longest`): models run on a copy whose longer side is
at most their ``max_side`` (never upscaled); probabilities are resized back to full resolution with bilinear interpolation
and thresholded at 0.5 (GrabCut additionally refines the edge with a guided filter on the full-size image).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.hashing import sha256_file
from pipeline.core.registry import check_device

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- errors


class CheckpointError(UserError):
    """A model checkpoint cannot be used (missing, wrong architecture or corrupt)."""


class CheckpointMissing(CheckpointError):
    """The checkpoint file named in params.yaml does not exist."""


class CheckpointArchitectureError(CheckpointError):
    """The checkpoint loads but holds weights for another architecture than the one configured."""


class CheckpointCorrupt(CheckpointError):
    """The checkpoint file exists but cannot be deserialised (truncated, not a torch file...)."""


OFFICIAL_WEIGHTS: dict[str, str] = {
    "sam/vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "sam/vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "sam/vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "sam/vit_tiny": "there are no official weights for vit_tiny (a test architecture; create random weights)",
    "deeplabv3/resnet50": "https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth",
    "deeplabv3/mobilenet_v3_large": "https://download.pytorch.org/models/deeplabv3_mobilenet_v3_large-fc3c493d.pth",
    "trained": "no public weights: produced by `dvc repro train` and `maskloop promote` (models/promoted/model.pt)",
}
"""Where official weights are published, for error messages (`maskloop models fetch` downloads them on request;
nothing is ever downloaded at run time)."""


def require_checkpoint(path: Path, what: str, setting: str) -> Path:
    """Return ``path`` when it is a file; else raise :class:`CheckpointMissing` naming the path, the expected
    architecture ``what`` (a key of :data:`OFFICIAL_WEIGHTS`) and where official weights are published."""
    path = Path(path)
    if path.is_file():
        return path
    from pipeline.core.weights import WEIGHTS

    where = OFFICIAL_WEIGHTS.get(what, "")
    name = what.replace("/", "_")
    if name in WEIGHTS:
        hint = f"get the official weights with `maskloop models fetch {name}` (from {where}, SHA-256 verified)"
    else:
        hint = where
    reason = "is a folder, not a file" if path.is_dir() else "not found"
    raise CheckpointMissing(f"{path}: {what} checkpoint {reason}; {hint}, or set {setting} in params.yaml")


def load_torch_file(path: Path, what: str) -> Any:
    """``torch.load`` of a checkpoint on CPU (weights only); :class:`CheckpointCorrupt` when unreadable."""
    import torch

    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt files (KeyError, EOFError, ...)
        raise CheckpointCorrupt(
            f"{path}: cannot read the {what} checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "the file is truncated, corrupt or not a PyTorch checkpoint: download or export it again"
        ) from exc


def state_dict_of(obj: Any, path: Path, what: str) -> dict[str, Any]:
    """The state dict inside a loaded checkpoint (a bare state dict, or under ``state_dict``/``model``)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
        if obj and all(isinstance(k, str) for k in obj):
            return dict(obj)
    raise CheckpointArchitectureError(
        f"{path}: does not hold a {what} state dict (got {type(obj).__name__}); expected a mapping of parameter "
        "names to tensors"
    )


def load_state_strict(model: Any, state: Mapping[str, Any], path: Path, what: str) -> None:
    """``model.load_state_dict(state, strict=True)``; :class:`CheckpointArchitectureError` on any mismatch,
    naming a few missing/unexpected keys or the first shape mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]})")
        raise CheckpointArchitectureError(
            f"{path}: not a {what} checkpoint: {'; '.join(parts)}; check the architecture setting in params.yaml"
        )
    model.load_state_dict(state, strict=True)


file_sha256 = sha256_file
"""SHA-256 hex digest of a file (checkpoints are hashed once per worker): :func:`pipeline.core.hashing.sha256_file`."""


# --------------------------------------------------------------------------- params


@dataclass(frozen=True)
class GrabCutParams:
    """Section ``preannotate.grabcut``: the weight-free default (see :mod:`pipeline.preannotators.grabcut`)."""

    work_side: int = 200
    iterations: int = 4
    border_frac: float = 0.05
    refine_radius: int = 2
    refine_side: int = 1024
    refine_eps: float = 1e-3
    min_island_frac: float = 0.1
    hypotheses: tuple[str, ...] = ("border", "rect")

    def __post_init__(self) -> None:
        allowed = ("border", "salient", "rect")
        if not self.hypotheses or len(set(self.hypotheses)) != len(self.hypotheses) or not set(self.hypotheses) <= set(allowed):
            raise ValueError(f"grabcut.hypotheses must be distinct names from {list(allowed)}, got {list(self.hypotheses)}")
        if not 32 <= self.work_side <= 2048:
            raise ValueError(f"grabcut.work_side must be in [32, 2048], got {self.work_side}")
        if not 1 <= self.iterations <= 20:
            raise ValueError(f"grabcut.iterations must be in [1, 20], got {self.iterations}")
        if not 0.0 < self.border_frac < 0.25:
            raise ValueError(f"grabcut.border_frac must be in (0, 0.25), got {self.border_frac}")
        if self.refine_side < self.work_side:
            raise ValueError(f"grabcut.refine_side ({self.refine_side}) must be >= work_side ({self.work_side})")
        if self.refine_radius < 0 or self.refine_eps <= 0:
            raise ValueError("grabcut.refine_radius must be >= 0 and grabcut.refine_eps > 0")
        if not 0.0 <= self.min_island_frac < 1.0:
            raise ValueError(f"grabcut.min_island_frac must be in [0, 1), got {self.min_island_frac}")


@dataclass(frozen=True)
class TrainedParams:
    """Section ``preannotate.trained`` (see :mod:`pipeline.preannotators.trained`): ``refine: grabcut`` seeds
    GrabCut with ``prior_weight`` x the model's probability + the rest x the ``grabcut`` pre-annotator's
    (``>= sure_fg`` definite foreground, ``< sure_bg`` definite background) and upsamples edge-aware like ``grabcut``; ``refine: none`` thresholds the probability.
    ``candidates``: the masks the model chooses from (``model`` = that model-seeded GrabCut; ``border``, ``rect``,
    ``salient`` = the ``grabcut`` pre-annotator's hypotheses); the one agreeing best with the model's
    probability (soft IoU) wins."""

    refine: Literal["grabcut", "none"] = "grabcut"
    sure_fg: float = 0.9
    sure_bg: float = 0.1
    iterations: int = 8
    prior_weight: float = 0.5
    candidates: tuple[str, ...] = ("model",)

    def __post_init__(self) -> None:
        if self.refine not in ("grabcut", "none"):
            raise ValueError(f"trained.refine must be grabcut or none, got {self.refine!r}")
        if not 0.0 <= self.sure_bg < self.sure_fg <= 1.0:
            raise ValueError(f"trained needs 0 <= sure_bg < sure_fg <= 1, got {self.sure_bg} and {self.sure_fg}")
        if not 1 <= self.iterations <= 20:
            raise ValueError(f"trained.iterations must be in [1, 20], got {self.iterations}")
        if not 0.0 <= self.prior_weight <= 1.0:
            raise ValueError(f"trained.prior_weight must be in [0, 1], got {self.prior_weight}")
        allowed = ("model", "border", "rect", "salient")
        if not self.candidates or not set(self.candidates) <= set(allowed) or len(set(self.candidates)) != len(
                self.candidates):
            raise ValueError(f"trained.candidates must be distinct names from {list(allowed)}, got "
                             f"{list(self.candidates)}")


VOC_FOREGROUND = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
"""Every non-background class of the 21 Pascal VOC classes torchvision's DeepLabV3 weights predict."""


@dataclass(frozen=True)
class DeepLabParams:
    """Section ``preannotate.deeplabv3``.

    ``head: voc`` uses the 21-class VOC head and maps ``classes`` to foreground; ``head: binary`` expects a
    checkpoint with a 1-channel head (foreground logit) trained by maskloop.
    """

    arch: Literal["resnet50", "mobilenet_v3_large"] = "resnet50"
    checkpoint: Path = Path("models/deeplabv3_resnet50_coco-cd0a2569.pth")
    head: Literal["voc", "binary"] = "voc"
    classes: tuple[str, ...] = VOC_FOREGROUND
    max_side: int = 520

    def __post_init__(self) -> None:
        unknown = sorted(set(self.classes) - set(VOC_FOREGROUND))
        if unknown:
            raise ValueError(f"deeplabv3.classes: unknown VOC classes {unknown}; allowed: {list(VOC_FOREGROUND)}")
        if self.head == "voc" and not self.classes:
            raise ValueError("deeplabv3.classes must name at least one class with head: voc")
        if not 64 <= self.max_side <= 4096:
            raise ValueError(f"deeplabv3.max_side must be in [64, 4096], got {self.max_side}")


@dataclass(frozen=True)
class SamParams:
    """Section ``preannotate.sam``.

    ``prompt_from`` names the pre-annotator whose mask yields the prompts (``auto``: no prompt, SAM's most
    salient mask from a point grid). ``prompt``: ``box`` (the mask's bounding box), ``points`` (positive points
    inside the mask, negative ones outside) or ``box+points``.
    """

    arch: Literal["vit_b", "vit_l", "vit_h", "vit_tiny"] = "vit_b"
    checkpoint: Path = Path("models/sam_vit_b_01ec64.pth")
    prompt_from: Literal["grabcut", "deeplabv3", "trained", "auto"] = "grabcut"
    prompt: Literal["box", "points", "box+points"] = "box"
    n_positive: int = 3
    n_negative: int = 2
    multimask: bool = True
    auto_grid: int = 8
    cache: bool = True

    def __post_init__(self) -> None:
        if self.n_positive < 1 or self.n_negative < 0:
            raise ValueError("sam.n_positive must be >= 1 and sam.n_negative >= 0")
        if not 2 <= self.auto_grid <= 32:
            raise ValueError(f"sam.auto_grid must be in [2, 32], got {self.auto_grid}")


@dataclass(frozen=True)
class PreannotateParams:
    """Section ``preannotate`` of params.yaml."""

    model: str = "grabcut"
    device: str = "auto"
    threads: int = 0
    grabcut: GrabCutParams = field(default_factory=GrabCutParams)
    deeplabv3: DeepLabParams = field(default_factory=DeepLabParams)
    sam: SamParams = field(default_factory=SamParams)
    trained: TrainedParams = field(default_factory=TrainedParams)

    def __post_init__(self) -> None:
        from pipeline.preannotators import PREANNOTATORS

        if self.model not in PREANNOTATORS:
            raise ValueError(f"model {self.model!r} is not a pre-annotator; choose one of {sorted(PREANNOTATORS)}")
        check_device(self.device)
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = torch default), got {self.threads}")
        if self.model == "sam" and self.sam.prompt_from not in ("auto", *PREANNOTATORS):
            raise ValueError(f"sam.prompt_from {self.sam.prompt_from!r} is not a pre-annotator")


# --------------------------------------------------------------------------- spec / context / result


@dataclass(frozen=True)
class PreannotatorSpec:
    """What a pre-annotator is: registry name, version string (recorded as ``model_version``; it changes
    whenever its weights or settings do) and the checkpoint's SHA-256 ('' without weights)."""

    name: str
    version: str
    checkpoint_sha256: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.version:
            raise ValueError("a pre-annotator spec needs a name and a version")
        if self.checkpoint_sha256 and len(self.checkpoint_sha256) != 64:
            raise ValueError(f"checkpoint_sha256 must be 64 hex digits, got {self.checkpoint_sha256!r}")


@dataclass(frozen=True)
class PredictContext:
    """Per-call, read-only settings: the item being predicted (SAM's embedding cache is keyed by it)."""

    item_id: str = ""
    source: str = ""


@dataclass(frozen=True)
class PreannotationResult:
    """One prediction at full resolution.

    ``mask``: ``(H, W)`` uint8 exactly {0, 255}; ``probability``: ``(H, W)`` float32 in [0, 1] (foreground);
    ``confidence`` in [0, 1] (higher = surer); ``sam_iou``: SAM's predicted IoU of the chosen mask (NaN for
    other models); ``encoder_cached``: whether SAM's embedding came from the cache; ``note``: what the item's
record should say about how the mask was made (e.g. a fallback to another hypothesis), ``""`` when nothing.
    """

    mask: np.ndarray
    probability: np.ndarray
    confidence: float
    sam_iou: float = math.nan
    encoder_cached: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        m, p = self.mask, self.probability
        if m.ndim != 2 or m.dtype != np.uint8:
            raise ValueError(f"mask must be (H, W) uint8, got {m.shape} {m.dtype}")
        if p.shape != m.shape or p.dtype != np.float32:
            raise ValueError(f"probability must be float32 of the mask's shape {m.shape}, got {p.shape} {p.dtype}")
        if np.any((m != 0) & (m != 255)):
            raise ValueError("mask values must be exactly {0, 255}")
        if p.size and (float(p.min()) < 0.0 or float(p.max()) > 1.0 or not np.isfinite(p).all()):
            raise ValueError("probability values must be finite and in [0, 1]")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")

    def check_shape(self, shape: tuple[int, int], model: str) -> None:
        """Raise when the prediction is not at the image's resolution ``(H, W)``."""
        if self.mask.shape != tuple(shape):
            raise ValueError(f"pre-annotator {model} returned a {self.mask.shape} mask for a {tuple(shape)} image")


class Preannotator(Protocol):
    """The protocol every registry entry implements (constructor: ``cls(params, paths)``)."""

    spec: PreannotatorSpec

    def predict(self, image: np.ndarray, context: PredictContext) -> PreannotationResult: ...


# --------------------------------------------------------------------------- measures & resizing


def resize_probability(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 ``(h, w)`` map in [0, 1] to ``shape`` ``(H, W)`` (clipped to [0, 1])."""
    import cv2

    if prob.shape == tuple(shape):
        return prob.astype(np.float32, copy=False)
    out = cv2.resize(prob.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def mask_from_probability(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary mask uint8 {0, 255} of ``prob >= threshold``."""
    return np.where(prob >= threshold, 255, 0).astype(np.uint8)


def mean_entropy_bits(prob: np.ndarray) -> float:
    """Mean binary entropy (bits, in [0, 1]) of a float probability map."""
    p = np.clip(prob.astype(np.float64), 1e-6, 1.0 - 1e-6)
    h = -(p * np.log2(p) + (1.0 - p) * np.log2(1.0 - p))
    return float(h.mean()) if h.size else 0.0


def boundary_entropy_bits(prob: np.ndarray, mask: np.ndarray, band: int = 3) -> float:
    """Mean binary entropy (bits) inside a ``band``-pixel band around the mask's edge (0 when no edge).

    Whole-image entropy is dominated by easy interior pixels; the band is where a human would correct.
    """
    import cv2

    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    edge = cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)
    if not edge.any():
        return 0.0
    return mean_entropy_bits(prob[edge])


def shape_plausibility(mask: np.ndarray) -> float:
    """1.0 for a mask a product photo plausibly has; lower for empty/full masks or a mask hugging every border.

    Area fractions under 1% or over 95% and masks touching all four borders are implausible foregrounds.
    """
    if mask.size == 0:
        return 0.0
    fg = mask > 0
    area = float(fg.mean())
    score = 1.0
    if area < 0.01 or area > 0.95:
        score *= 0.2
    touches = int(fg[0].any()) + int(fg[-1].any()) + int(fg[:, 0].any()) + int(fg[:, -1].any())
    if touches == 4:
        score *= 0.5
    return score


def confidence_from(prob: np.ndarray, mask: np.ndarray, sam_iou: float = math.nan) -> float:
    """Scalar confidence in [0, 1]: (1 - boundary entropy) x shape plausibility (x SAM's IoU when given)."""
    c = (1.0 - boundary_entropy_bits(prob, mask)) * shape_plausibility(mask)
    if not math.isnan(sam_iou):
        c *= float(np.clip(sam_iou, 0.0, 1.0))
    return float(np.clip(c, 0.0, 1.0))


def uncertainty_from(confidence: float, entropy_bits: float) -> float:
    """Queue order key in [0, 1] (higher = a human should look first): mostly 1 - confidence, ties broken
    by whole-image entropy."""
    return float(np.clip(0.9 * (1.0 - confidence) + 0.1 * entropy_bits, 0.0, 1.0))


def probability_to_u8(prob: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 0..255 (rounded), the on-disk form of ``prob/<id>.png``."""
    return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)
