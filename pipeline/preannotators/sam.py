"""``sam``: segment-anything prompted by another pre-annotator's mask, or in an automatic mode.

Architectures (:data:`SAM_ARCHS`, like segment-anything's own ``sam_model_registry``): ``vit_b``, ``vit_l``,
``vit_h`` (official checkpoints, see :data:`pipeline.preannotators.base.OFFICIAL_WEIGHTS`) and ``vit_tiny``, a
4-layer toy configuration with no official weights that exists so tests and smoke runs can exercise the real
loading and prompting code in milliseconds.

Prompting (``preannotate.sam``):

- ``prompt_from: grabcut | deeplabv3 | trained`` runs that pre-annotator first; its mask gives the prompt:
  ``box`` = the mask's bounding box (XYXY, pixels), ``points`` = ``n_positive`` points deep inside the mask
  (successive maxima of its distance transform) and ``n_negative`` points far outside it, or ``box+points``.
  With ``multimask: true`` SAM returns three candidates and the one with the highest predicted IoU is kept.
  An empty prompt mask falls back to the automatic mode.
- ``prompt_from: auto`` decodes an ``auto_grid x auto_grid`` grid of single-point prompts in **one batch**
  and keeps the most salient candidate: predicted IoU x (1 - fraction of the image border it covers)^2,
  among candidates covering 1-90% of the image.

The image embedding comes from :class:`~pipeline.preannotators.sam_cache.SamEmbeddingCache` when present (the
encoder is skipped entirely); otherwise it is computed and stored. Computed embeddings are rounded to float16
exactly as stored, so a prediction is byte-identical whether the embedding came from the cache or not.

Resolution: SAM resizes the longer side to its encoder size (1024 for the official models) itself; mask
logits are upsampled to the full image size by SAM's own post-processing (bilinear), then
``probability = sigmoid(logits)`` and ``mask = probability >= 0.5``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import cv2
import numpy as np

from pipeline.core.params import Paths
from pipeline.preannotators.base import (
    CheckpointArchitectureError,
    PreannotateParams,
    PreannotationResult,
    PreannotatorSpec,
    PredictContext,
    SamParams,
    confidence_from,
    file_sha256,
    load_state_strict,
    load_torch_file,
    require_checkpoint,
    state_dict_of,
)
from pipeline.preannotators.sam_cache import SamEmbeddingCache, to_entry

log = logging.getLogger(__name__)

VERSION = "1"


# --------------------------------------------------------------------------- architectures


def _build_tiny() -> Any:
    """A 2-block, 64-dim ViT SAM on 256 px inputs (random weights; tests and smoke runs only)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim = 32
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=256, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, out_chans=dim,
            qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(16, 16), input_image_size=(256, 256), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.eval()
    return sam


def _build_official(name: str) -> Any:
    from segment_anything import sam_model_registry

    return sam_model_registry[name](checkpoint=None)


@dataclass(frozen=True)
class SamArch:
    """A SAM architecture: its builder and the image-encoder signature a checkpoint must match."""

    build: Callable[[], Any]
    embed_dim: int
    depth: int


SAM_ARCHS: dict[str, SamArch] = {
    "vit_b": SamArch(partial(_build_official, "vit_b"), 768, 12),
    "vit_l": SamArch(partial(_build_official, "vit_l"), 1024, 24),
    "vit_h": SamArch(partial(_build_official, "vit_h"), 1280, 32),
    "vit_tiny": SamArch(_build_tiny, 64, 2),
}

_BLOCK_RE = re.compile(r"^image_encoder\.blocks\.(\d+)\.")


def encoder_signature(state: dict[str, Any]) -> tuple[int, int] | None:
    """(embed_dim, depth) of the SAM image encoder in a state dict, or None when it holds no SAM encoder."""
    w = state.get("image_encoder.patch_embed.proj.weight")
    if w is None or not hasattr(w, "shape"):
        return None
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK_RE.match(k))}
    return int(w.shape[0]), len(blocks)


def load_sam(params: SamParams, device: Any) -> tuple[Any, str]:
    """Build the configured SAM, load its checkpoint strictly and move it to ``device``.

    Returns (model in eval mode, checkpoint SHA-256). Raises ``CheckpointMissing`` / ``CheckpointCorrupt`` /
    ``CheckpointArchitectureError`` (UserErrors naming the file) before any weights are used.
    """
    what = f"sam/{params.arch}"
    path = require_checkpoint(params.checkpoint, what, "preannotate.sam.checkpoint")
    state = state_dict_of(load_torch_file(path, f"SAM {params.arch}"), path, f"SAM {params.arch}")
    arch = SAM_ARCHS[params.arch]
    sig = encoder_signature(state)
    if sig is None:
        raise CheckpointArchitectureError(
            f"{path}: not a segment-anything checkpoint (no image_encoder.patch_embed weights); "
            f"preannotate.sam.arch is {params.arch}"
        )
    if sig != (arch.embed_dim, arch.depth):
        found = [n for n, a in SAM_ARCHS.items() if (a.embed_dim, a.depth) == sig]
        raise CheckpointArchitectureError(
            f"{path}: holds a SAM image encoder with embed_dim {sig[0]} and {sig[1]} blocks"
            f"{f' ({found[0]})' if found else ''}, but preannotate.sam.arch is {params.arch} "
            f"(embed_dim {arch.embed_dim}, {arch.depth} blocks); set the matching arch or checkpoint"
        )
    model = arch.build()
    load_state_strict(model, state, path, f"SAM {params.arch}")
    model.to(device)
    model.eval()
    return model, file_sha256(path)


# --------------------------------------------------------------------------- prompts (pure)


def box_from_mask(mask: np.ndarray) -> np.ndarray | None:
    """Bounding box XYXY float32 ``(4,)`` (x1, y1 exclusive) of the foreground of a mask ``(H, W)``, or None."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _peaks(region: np.ndarray, n: int) -> list[tuple[float, float]]:
    """Up to ``n`` (x, y) points deep inside the bool ``region``: successive distance-transform maxima,
    each suppressing a disc of its own depth (deterministic: ties break by raster order)."""
    if n <= 0 or not region.any():
        return []
    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    pts: list[tuple[float, float]] = []
    work = dist.copy()
    for _ in range(n):
        idx = int(np.argmax(work))
        y, x = divmod(idx, work.shape[1])
        if work[y, x] <= 0:
            break
        pts.append((float(x), float(y)))
        r = max(2, int(dist[y, x]))
        cv2.circle(work, (x, y), r, 0.0, -1)
    return pts


def points_from_mask(mask: np.ndarray, n_positive: int, n_negative: int) -> tuple[np.ndarray, np.ndarray]:
    """Point prompts from a mask ``(H, W)``: coords float32 ``(N, 2)`` as (x, y) pixels, labels int32 ``(N,)``
    (1 = foreground inside the mask, 0 = background far outside it)."""
    fg = mask > 0
    pos = _peaks(fg, n_positive)
    neg = _peaks(~fg, n_negative) if fg.any() else []
    coords = np.array(pos + neg, np.float32).reshape(-1, 2)
    labels = np.array([1] * len(pos) + [0] * len(neg), np.int32)
    return coords, labels


def grid_points(height: int, width: int, n: int) -> np.ndarray:
    """``n x n`` (x, y) points float32 ``(n*n, 2)`` at the centres of a regular grid over the image."""
    xs = (np.arange(n, dtype=np.float32) + 0.5) * width / n
    ys = (np.arange(n, dtype=np.float32) + 0.5) * height / n
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def salience_scores(masks: np.ndarray, ious: np.ndarray) -> np.ndarray:
    """Score bool candidate masks ``(M, h, w)`` with predicted IoUs ``(M,)``: IoU x (1 - border coverage)^2,
    -1 for candidates covering under 1% or over 90% of the image."""
    m = masks.reshape(len(masks), *masks.shape[-2:])
    area = m.mean(axis=(1, 2))
    border = np.concatenate([m[:, 0, :], m[:, -1, :], m[:, :, 0], m[:, :, -1]], axis=1).mean(axis=1)
    score = ious * (1.0 - border) ** 2
    return np.where((area >= 0.01) & (area <= 0.9), score, -1.0)


# --------------------------------------------------------------------------- predictor with cache


class CachedSam:
    """A SAM model plus predictor whose image embedding goes through the cache.

    ``encoder_calls`` counts real encoder runs (tests and the benchmark check cache hits with it).
    """

    def __init__(self, model: Any, checkpoint_sha256: str, device: Any, cache: SamEmbeddingCache | None) -> None:
        from segment_anything import SamPredictor

        self.model = model
        self.device = device
        self.checkpoint_sha256 = checkpoint_sha256
        self.cache = cache
        self.predictor = SamPredictor(model)
        self.encoder_calls = 0

    def set_image(self, image: np.ndarray, item_id: str = "") -> bool:
        """Make ``image`` (RGB uint8 ``(H, W, 3)``) current; True when the embedding came from the cache."""
        import torch

        p = self.predictor
        if self.cache is not None and item_id:
            entry = self.cache.load(item_id, image.shape[:2])
            if entry is not None:
                p.reset_image()
                p.features = torch.from_numpy(entry.features.astype(np.float32)).to(self.device)
                p.original_size = entry.original_size
                p.input_size = entry.input_size
                p.is_image_set = True
                return True
        with torch.inference_mode():
            p.set_image(image, image_format="RGB")
        self.encoder_calls += 1
        # round exactly as the cache stores it: cold and cached predictions are then identical
        p.features = p.features.half().float()
        if self.cache is not None and item_id:
            self.cache.save(item_id, to_entry(p.features, p.original_size, p.input_size))
        return False

    def decode(
        self, coords: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None, multimask: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched decoding. ``coords`` ``(B, N, 2)`` (x, y) pixels, ``labels`` ``(B, N)``, ``box`` ``(B, 4)``
        XYXY pixels (original image frame). Returns low-res logits ``(B, K, 256*, 256*)`` and IoUs ``(B, K)``."""
        import torch

        p = self.predictor
        if not p.is_image_set:
            raise RuntimeError("set_image must be called before decode")
        pts = None
        boxes_t = None
        with torch.inference_mode():
            if coords is not None and labels is not None and coords.size:
                c = p.transform.apply_coords(coords.astype(np.float32), p.original_size)
                pts = (
                    torch.as_tensor(c, dtype=torch.float, device=self.device),
                    torch.as_tensor(labels, dtype=torch.int, device=self.device),
                )
            if box is not None:
                b = p.transform.apply_boxes(box.astype(np.float32), p.original_size)
                boxes_t = torch.as_tensor(b, dtype=torch.float, device=self.device)
            sparse, dense = self.model.prompt_encoder(points=pts, boxes=boxes_t, masks=None)
            low, iou = self.model.mask_decoder(
                image_embeddings=p.features,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
        return low.float().cpu().numpy(), iou.float().cpu().numpy()

    def full_logits(self, low: np.ndarray) -> np.ndarray:
        """One low-res logit map ``(h, w)`` -> float32 logits ``(H, W)`` at the original image size."""
        import torch

        p = self.predictor
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(low[None, None])).to(self.device)
            out = self.model.postprocess_masks(t, p.input_size, p.original_size)
        return out[0, 0].float().cpu().numpy()

    def valid_low_res(self, low: np.ndarray) -> np.ndarray:
        """Crop low-res maps ``(..., h, w)`` to the part that covers the image (SAM pads to a square)."""
        p = self.predictor
        size = self.model.image_encoder.img_size
        hh = max(1, round(low.shape[-2] * p.input_size[0] / size))
        ww = max(1, round(low.shape[-1] * p.input_size[1] / size))
        return low[..., :hh, :ww]

    def prompt(
        self, box: np.ndarray | None, coords: np.ndarray | None, labels: np.ndarray | None, multimask: bool
    ) -> tuple[np.ndarray, float]:
        """Prompt the current image once: (full-size logits float32 ``(H, W)``, predicted IoU of the kept mask)."""
        low, iou = self.decode(
            None if coords is None else coords[None],
            None if labels is None else labels[None],
            None if box is None else box[None],
            multimask,
        )
        k = int(np.argmax(iou[0]))
        return self.full_logits(low[0, k]), float(iou[0, k])

    def automatic(self, grid: int) -> tuple[np.ndarray, float]:
        """Most salient mask from a ``grid x grid`` batch of single-point prompts: (logits, predicted IoU)."""
        h, w = self.predictor.original_size
        pts = grid_points(h, w, grid)
        low, iou = self.decode(pts[:, None, :], np.ones((len(pts), 1), np.int32), None, True)
        flat_low = low.reshape(-1, *low.shape[-2:])
        flat_iou = iou.reshape(-1)
        scores = salience_scores(self.valid_low_res(flat_low) > 0, flat_iou)
        k = int(np.argmax(scores))
        return self.full_logits(flat_low[k]), float(flat_iou[k])


def logits_to_result(logits: np.ndarray, sam_iou: float, cached: bool) -> PreannotationResult:
    """SAM logits ``(H, W)`` -> result: probability = sigmoid, mask = probability >= 0.5."""
    prob = (1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -60.0, 60.0)))).astype(np.float32)
    # derived from the stored float32 probability itself, so mask == (probability >= 0.5) holds by construction
    # (a logit a hair below 0 rounds to exactly 0.5 in float32)
    mask = np.where(prob >= 0.5, 255, 0).astype(np.uint8)
    iou = float(np.clip(sam_iou, 0.0, 1.0)) if math.isfinite(sam_iou) else math.nan
    return PreannotationResult(
        mask=mask, probability=prob, confidence=confidence_from(prob, mask, iou), sam_iou=iou, encoder_cached=cached
    )


# --------------------------------------------------------------------------- registry class


class SamPreannotator:
    """Registry entry ``sam``: loads SAM (and the prompting pre-annotator) in the constructor."""

    def __init__(self, params: PreannotateParams, paths: Paths, **_: Any) -> None:
        from pipeline.learning.torch_utils import select_device, set_threads
        from pipeline.preannotators import build_preannotator

        set_threads(params.threads)
        self.params = params.sam
        self.device = select_device(params.device)
        model, sha = load_sam(self.params, self.device)
        cache = SamEmbeddingCache(paths.sam_cache, sha) if self.params.cache else None
        self.sam = CachedSam(model, sha, self.device, cache)
        self.source = None if self.params.prompt_from == "auto" else build_preannotator(
            self.params.prompt_from, params, paths
        )
        how = "auto" if self.source is None else f"{self.source.spec.version}+{self.params.prompt}"
        self.spec = PreannotatorSpec(
            name="sam", version=f"sam-{self.params.arch}-{sha[:12]}-{how}-v{VERSION}", checkpoint_sha256=sha
        )

    def predict(self, image: np.ndarray, context: PredictContext) -> PreannotationResult:
        cached = self.sam.set_image(image, context.item_id)
        box = coords = labels = None
        if self.source is not None:
            src = self.source.predict(image, context)
            if src.mask.any():
                if "box" in self.params.prompt:
                    box = box_from_mask(src.mask)
                if "points" in self.params.prompt:
                    coords, labels = points_from_mask(src.mask, self.params.n_positive, self.params.n_negative)
        if box is None and coords is None:
            logits, iou = self.sam.automatic(self.params.auto_grid)
        else:
            logits, iou = self.sam.prompt(box, coords, labels, self.params.multimask)
        return logits_to_result(logits, iou, cached)
