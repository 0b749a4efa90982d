"""Training a binary foreground segmenter on the exported train split (torchvision, CPU or GPU).

Reads the export (``paths.export``: ``splits.parquet``, ``coco/train.json`` for the composites,
``matting/image`` + ``matting/mask`` of the items; the composites, listed by reference, from the composite stage's
strips under ``paths.composite``), trains :func:`pipeline.learning.segmenter.build_segmenter` with

- loss = ``bce`` x BCE + ``dice`` x soft Dice + ``boundary`` x BCE restricted to a band of
  ``boundary_px`` pixels around the true edge (weights in ``train.loss``);
- AdamW with a cosine learning-rate schedule over all steps;
- augmentations from ``train.augment``: horizontal/vertical flips, random scale (zoom in by cropping, zoom
  out by reflect padding), colour jitter, and **background swaps**: with probability ``background_swap`` an
  item is replaced by one of its composites (same object on another background);
- a seed for everything (data order, augmentations, weight init).

Writes ``paths.train/model.pt`` (checkpoint with lineage: dataset version and train params),
``paths.train/lineage.json``, ``paths.metrics/train.json`` (DVC metrics) and
``paths.metrics/train_curve.json`` (DVC plots: one row per epoch).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.registry import check_device
from pipeline.dataset.exported import ExportReader
from pipeline.learning.segmenter import (
    ARCHS,
    MIN_RESOLUTION,
    SegmenterMeta,
    build_segmenter,
    network_input,
    resize_to,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BN_SAMPLES = 256
"""Training images (unaugmented) used to re-estimate BatchNorm statistics after each epoch."""


@dataclass(frozen=True)
class LossParams:
    """Weights of the loss terms; ``boundary_px``: half-width of the edge band of the boundary term."""

    bce: float = 1.0
    dice: float = 1.0
    boundary: float = 0.5
    boundary_px: int = 3

    def __post_init__(self) -> None:
        if min(self.bce, self.dice, self.boundary) < 0 or self.bce + self.dice + self.boundary <= 0:
            raise ValueError("loss weights must be >= 0 and not all 0")
        if self.boundary_px < 1:
            raise ValueError(f"boundary_px must be >= 1, got {self.boundary_px}")


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities / ranges of the training augmentations (all off = no augmentation)."""

    hflip: float = 0.5
    vflip: float = 0.0
    scale_min: float = 0.75
    scale_max: float = 1.25
    color_jitter: float = 0.2
    background_swap: float = 0.3

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "background_swap"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {v}")
        if not 0.1 <= self.scale_min <= self.scale_max <= 4.0:
            raise ValueError(f"need 0.1 <= scale_min <= scale_max <= 4, got {self.scale_min}, {self.scale_max}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter}")


@dataclass(frozen=True)
class TrainParams:
    """Section ``train`` of params.yaml (see docs/loop.md)."""

    arch: Literal["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "unet_small"] = (
        "lraspp_mobilenet_v3_large")
    pretrained_backbone: Path | None = None
    resolution: int = 320
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    loss: LossParams = field(default_factory=LossParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    priors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {self.arch!r}")
        if self.resolution < MIN_RESOLUTION or self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8 and >= {MIN_RESOLUTION}, got {self.resolution}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        check_device(self.device)
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        from pipeline.preannotators.saliency import PRIORS

        if not set(self.priors) <= set(PRIORS) or len(set(self.priors)) != len(self.priors):
            raise ValueError(f"priors must be distinct names from {sorted(PRIORS)}, got {list(self.priors)}")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Sample:
    """One training image at the network resolution: RGB uint8 ``(R, R, 3)`` and mask float32 ``(R, R)`` {0,1};
    ``composites``: the same object on other backgrounds (same shapes)."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    composites: tuple[tuple[np.ndarray, np.ndarray], ...] = ()


def load_sample(image_path: Path, mask_path: Path, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its mask, resized to ``(R, R)``: RGB uint8 and float32 {0, 1}."""
    image = io.read_image(image_path)
    return resize_sample(image, io.read_mask(mask_path, shape=image.shape[:2]), resolution)


def resize_sample(image: np.ndarray, mask: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """An image and its ``{0, 255}`` mask resized to ``(R, R)``: RGB uint8 and float32 {0, 1}."""
    img = resize_to(image, resolution, resolution)
    m = (resize_to(mask, resolution, resolution) >= 128).astype(np.float32)
    return img, m


def load_split(export_root: Path, split: str, resolution: int, with_composites: bool = True,
               composite_root: Path | None = None) -> list[Sample]:
    """Items of ``split`` (sorted by id) with their composites, read from an export folder; composites the
    export lists by reference are read from the composite stage's strips under ``composite_root``
    (``paths.composite``) through :class:`pipeline.dataset.exported.ExportReader` (the same arrays as the files).

    Raises :class:`UserError` when the export is missing or incomplete, or a composite's strip is missing or changed.
    """
    splits_path = export_root / "splits.parquet"
    if not splits_path.is_file():
        raise UserError(f"{splits_path}: export not found; run `dvc repro export` first")
    table = io.read_parquet(splits_path)
    ids = sorted(str(i) for i in table.loc[table["split"] == split, "item_id"])
    comps: dict[str, list[str]] = {}
    coco_path = export_root / "coco" / f"{split}.json"
    if with_composites and coco_path.is_file():
        for img in io.read_json(coco_path)["images"]:
            if img.get("composite"):
                comps.setdefault(str(img["item_id"]), []).append(Path(img["file_name"]).stem)
    out: list[Sample] = []
    folder = export_root / "matting"
    reader = ExportReader(export_root, composite_root)
    for item_id in ids:
        ipath, mpath = folder / "image" / f"{item_id}.png", folder / "mask" / f"{item_id}.png"
        if not ipath.is_file() or not mpath.is_file():
            raise UserError(f"item {item_id}: {ipath} or {mpath} missing from the export; re-run `dvc repro export`")
        img, m = load_sample(ipath, mpath, resolution)
        extra = tuple(resize_sample(*reader.image_mask(c), resolution) for c in sorted(comps.get(item_id, [])))
        out.append(Sample(item_id, img, m, extra))
    return out


def augment(image: np.ndarray, mask: np.ndarray, params: AugmentParams,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random flips, scale and colour jitter of an ``(R, R, 3)`` uint8 image and its ``(R, R)`` float mask."""
    import cv2

    r = image.shape[0]
    if rng.random() < params.hflip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < params.vflip:
        image, mask = image[::-1], mask[::-1]
    scale = float(rng.uniform(params.scale_min, params.scale_max))
    if scale > 1.0:
        side = max(8, round(r / scale))
        y, x = (int(rng.integers(0, r - side + 1)) for _ in range(2))
        image = cv2.resize(np.ascontiguousarray(image[y:y + side, x:x + side]), (r, r), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(np.ascontiguousarray(mask[y:y + side, x:x + side]), (r, r), interpolation=cv2.INTER_LINEAR)
    elif scale < 1.0:
        side = max(8, round(r * scale))
        small_i = cv2.resize(np.ascontiguousarray(image), (side, side), interpolation=cv2.INTER_AREA)
        small_m = cv2.resize(np.ascontiguousarray(mask), (side, side), interpolation=cv2.INTER_AREA)
        top = int(rng.integers(0, r - side + 1))
        left = int(rng.integers(0, r - side + 1))
        pads = (top, r - side - top, left, r - side - left)
        image = cv2.copyMakeBorder(small_i, *pads, borderType=cv2.BORDER_REFLECT)
        mask = cv2.copyMakeBorder(small_m, *pads, borderType=cv2.BORDER_REFLECT)
    if params.color_jitter > 0:
        j = params.color_jitter
        pix = image.astype(np.float32) * float(rng.uniform(1 - j, 1 + j))  # brightness
        mean = float(pix.mean())
        pix = (pix - mean) * float(rng.uniform(1 - j, 1 + j)) + mean  # contrast
        grey = pix.mean(axis=2, keepdims=True)
        pix = (pix - grey) * float(rng.uniform(1 - j, 1 + j)) + grey  # saturation
        image = np.clip(pix, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image), (np.ascontiguousarray(mask) >= 0.5).astype(np.float32)


def make_batch(samples: list[Sample], order: np.ndarray, meta: SegmenterMeta, params: AugmentParams,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Augmented network inputs float32 ``(N, 3, R, R)`` and targets float32 ``(N, 1, R, R)``."""
    xs, ys = [], []
    for idx in order:
        s = samples[int(idx)]
        image, mask = s.image, s.mask
        if s.composites and rng.random() < params.background_swap:
            image, mask = s.composites[int(rng.integers(0, len(s.composites)))]
        image, mask = augment(image, mask, params, rng)
        xs.append(network_input(image, meta))
        ys.append(mask[None])
    return np.stack(xs), np.stack(ys)


# --------------------------------------------------------------------------- loss


def edge_band(target: torch.Tensor, px: int) -> torch.Tensor:
    """1 on pixels within ``px`` of the boundary of a ``(N, 1, H, W)`` {0,1} target, else 0."""
    import torch.nn.functional as F

    k = 2 * px + 1
    dil = F.max_pool2d(target, k, stride=1, padding=px)
    ero = -F.max_pool2d(-target, k, stride=1, padding=px)
    return (dil - ero).clamp(0, 1)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, params: LossParams) -> torch.Tensor:
    """BCE + soft Dice + edge-band BCE (weighted by ``params``); inputs ``(N, 1, H, W)``, target in {0, 1}."""
    import torch
    import torch.nn.functional as F

    bce_map = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    total = params.bce * bce_map.mean()
    if params.dice:
        prob = torch.sigmoid(logits)
        inter = (prob * target).sum(dim=(1, 2, 3))
        denom = prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
        total = total + params.dice * (1 - (2 * inter + 1) / (denom + 1)).mean()
    if params.boundary:
        band = edge_band(target, params.boundary_px)
        total = total + params.boundary * (bce_map * band).sum() / band.sum().clamp(min=1.0)
    return total


def resolve_device(name: str) -> str:
    """``train.device`` as a torch device string (:func:`pipeline.learning.torch_utils.select_device`)."""
    from pipeline.learning.torch_utils import select_device

    return str(select_device(name))


def mean_iou(prob: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> float:
    """Mean IoU over a batch of ``(N, ...)`` probabilities vs {0,1} targets (empty-vs-empty counts as 1)."""
    pred = prob >= threshold
    tgt = target >= 0.5
    axes = tuple(range(1, pred.ndim))
    inter = np.logical_and(pred, tgt).sum(axis=axes)
    union = np.logical_or(pred, tgt).sum(axis=axes)
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


# --------------------------------------------------------------------------- training


def recalibrate_batchnorm(model: torch.nn.Module, images: np.ndarray, batch_size: int, device: str) -> None:
    """Re-estimate every BatchNorm's running mean/variance as the exact average over ``images``
    (float32 ``(N, 3, R, R)`` network inputs, unaugmented), then leave the model in eval mode.

    torchvision's MobileNetV3 uses BatchNorm momentum 0.01, so after a short training run the running
    statistics are still near their initial values and eval-mode outputs collapse to a constant; this
    "precise BN" pass fixes that at the cost of one forward pass over ``images``.
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or not len(images):
        model.eval()
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over the batches seen
    model.train()
    bs = max(2, batch_size)
    with torch.no_grad():
        for b in range(0, len(images), bs):
            x = torch.from_numpy(images[b:b + bs]).to(device)
            if len(x) == 1:
                x = torch.cat([x, x.flip(-1)])
            model(x)
    for m, mom in zip(norms, saved, strict=True):
        m.momentum = mom
    model.eval()



@dataclass(frozen=True)
class TrainResult:
    model: Any
    meta: SegmenterMeta
    curve: tuple[dict[str, float | int | None], ...]
    n_train: int
    n_val: int


def fit(train: list[Sample], val: list[Sample], params: TrainParams, lineage: dict[str, Any]) -> TrainResult:
    """Train a segmenter on ``train`` (validated on ``val`` each epoch); deterministic for a given seed/device."""
    import torch

    if not train:
        raise UserError("the export's train split is empty: export more verified items or change export.splits")
    device = resolve_device(params.device)
    if params.threads:
        torch.set_num_threads(params.threads)
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    meta = SegmenterMeta(arch=params.arch, resolution=params.resolution, lineage=lineage, priors=params.priors)
    model = build_segmenter(params.arch, params.pretrained_backbone, meta.in_channels).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    steps_per_epoch = math.ceil(len(train) / params.batch_size)
    total = steps_per_epoch * params.epochs
    warm = steps_per_epoch * params.warmup_epochs

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    curve: list[dict[str, float | int | None]] = []
    val_x = np.stack([network_input(s.image, meta) for s in val]) if val else None
    val_y = np.stack([s.mask[None] for s in val]) if val else None
    rng_bn = np.random.default_rng(params.seed + 1)
    bn_idx = np.sort(rng_bn.permutation(len(train))[:BN_SAMPLES])
    bn_x = np.stack([network_input(train[int(i)].image, meta) for i in bn_idx])
    for epoch in range(1, params.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(len(train))
        losses: list[float] = []
        for b in range(steps_per_epoch):
            idx = order[b * params.batch_size:(b + 1) * params.batch_size]
            x, y = make_batch(train, idx, meta, params.augment, rng)
            xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            if len(idx) == 1:  # BatchNorm needs > 1 value per channel in train mode
                xt, yt = torch.cat([xt, xt.flip(-1)]), torch.cat([yt, yt.flip(-1)])
            loss = segmentation_loss(model(xt)["out"], yt, params.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach().cpu()))
        row: dict[str, float | int | None] = {"epoch": epoch, "train_loss": round(float(np.mean(losses)), 6),
                                               "val_loss": None, "val_iou": None}
        recalibrate_batchnorm(model, bn_x, params.batch_size, device)
        if val_x is not None and val_y is not None:
            with torch.inference_mode():
                probs, vlosses = [], []
                for b in range(0, len(val_x), params.batch_size):
                    xt = torch.from_numpy(val_x[b:b + params.batch_size]).to(device)
                    yt = torch.from_numpy(val_y[b:b + params.batch_size]).to(device)
                    logits = model(xt)["out"]
                    vlosses.append(float(segmentation_loss(logits, yt, params.loss)) * len(xt))
                    probs.append(torch.sigmoid(logits).cpu().numpy())
            row["val_loss"] = round(sum(vlosses) / len(val_x), 6)
            row["val_iou"] = round(mean_iou(np.concatenate(probs), val_y), 6)
        curve.append(row)
        log.info("epoch %d/%d: train_loss %.4f val_loss %s val_iou %s (%.1fs)", epoch, params.epochs,
                 row["train_loss"], row["val_loss"], row["val_iou"], time.perf_counter() - t0)
    recalibrate_batchnorm(model, bn_x, params.batch_size, device)
    return TrainResult(model, meta, tuple(curve), len(train), len(val))

