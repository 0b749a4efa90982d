"""``sam`` refinement engine: segment-anything prompted by the clicks, on the pipeline's cached embedding.

- **Embedding**: per item, from (1) this engine's in-memory LRU, else (2) the pipeline's SAM embedding cache
  (:mod:`pipeline.preannotators.sam_cache`, ``paths.sam_cache``; written by the ``preannotate`` stage with
  ``model: sam``, keyed by the checkpoint's SHA-256), else (3) the image encoder, once: the result is written
  to that cache, so neither this process nor the next one encodes the item again. An item the pipeline
  already encoded is never re-encoded (``encoder_calls`` counts real encoder runs). Only case (3) reads the
  image; a cached click costs the prompt decoder and the full-size upsampling.
- **Prompt**: every click as a point (positive = 1, negative = 0), the optional box (XYXY), and the current
  mask as SAM's low-resolution mask input (``mask_input``): when the current mask is the one this engine
  returned last for the item, SAM's own low-res logits of that answer are fed back (what SAM was trained
  with); otherwise the mask is converted to logits (+/-:data:`MASK_LOGIT`) in SAM's padded low-res frame (256 x 256 for the official models).
- ``multimask: auto``: three candidates for a lone click without a mask (the ambiguous case), the one with
  the highest predicted IoU kept; one mask otherwise.
- **Output**: logits upsampled by SAM's post-processing to full size, ``probability = sigmoid``,
  ``mask = probability >= 0.5``; clicks are then painted in (:func:`~pipeline.refine.base.force_clicks`).

Thread-safe: per-item state sits in a locked LRU (one encoder run per item even when several requests for
it arrive at once); prompting uses a fresh predictor object per call, so no shared mutable state.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.core.params import Paths
from pipeline.preannotators.base import CheckpointMissing, SamParams
from pipeline.preannotators.sam_cache import CachedEmbedding, SamEmbeddingCache, to_entry
from pipeline.refine.base import (
    Box,
    Click,
    RefineInputError,
    RefineItem,
    RefineParams,
    RefineResult,
    RefinerSpec,
    SamRefineParams,
    check_clicks,
    check_mask,
    force_clicks,
)
from pipeline.refine.grabcut import LruCache

log = logging.getLogger(__name__)

VERSION = "1"
MASK_LOGIT = 8.0
"""Logit magnitude of a binary mask fed to SAM as its low-res mask input."""


def weights_name(arch: str) -> str:
    """The ``maskloop models fetch`` name of a SAM architecture's official weights."""
    return f"sam_{arch}"


def require_weights(params: SamRefineParams) -> Path:
    """The checkpoint path, or :class:`CheckpointMissing` naming it and ``maskloop models fetch``."""
    path = Path(params.checkpoint)
    if path.is_file():
        return path
    if params.arch == "vit_tiny":
        hint = "vit_tiny has no official weights (a test architecture: save a random-weight state dict there)"
    else:
        hint = f"get the official weights with `maskloop models fetch {weights_name(params.arch)}`"
    raise CheckpointMissing(f"{path}: SAM {params.arch} checkpoint not found (refine.sam.checkpoint); {hint}")


# --------------------------------------------------------------------------- pure functions


def mask_to_low_res(mask: np.ndarray, input_size: tuple[int, int], img_size: int, low: int = 256) -> np.ndarray:
    """A binary mask ``(H, W)`` -> SAM's mask input float32 ``(1, 1, low, low)``: resized to the encoder's
    ``input_size`` ``(h, w)``, zero-padded to ``img_size`` square (bottom/right, as SAM pads the image),
    downscaled to ``low`` and mapped to logits +/-:data:`MASK_LOGIT`."""
    h, w = input_size
    m = cv2.resize((mask > 0).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    square = np.zeros((img_size, img_size), np.float32)
    square[:h, :w] = m
    small = cv2.resize(square, (low, low), interpolation=cv2.INTER_AREA)
    return ((small * 2.0 - 1.0) * MASK_LOGIT).astype(np.float32)[None, None]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -60.0, 60.0)))).astype(np.float32)


def _digest(mask: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray((mask > 0).astype(np.uint8)).tobytes(), digest_size=16).hexdigest()


@dataclass(eq=False)
class ItemState:
    """Per-item state: the embedding (torch float32 ``(1, C, h, w)``), the sizes and the last answer's
    low-res logits (keyed by the digest of the mask it produced)."""

    features: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    last_digest: str = ""
    last_low: np.ndarray | None = None


# --------------------------------------------------------------------------- registry class


class SamRefiner:
    """Registry entry ``sam``: loads SAM in the constructor (``refine.sam``)."""

    def __init__(self, params: RefineParams, paths: Paths | None = None, **_: Any) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        from pipeline.learning.torch_utils import select_device, set_threads
        from pipeline.preannotators.sam import load_sam

        set_threads(params.threads)
        self.params = params.sam
        require_weights(self.params)
        self.device = select_device(params.device)
        self.model, sha = load_sam(SamParams(arch=self.params.arch, checkpoint=Path(self.params.checkpoint)),
                                   self.device)
        self.checkpoint_sha256 = sha
        self.cache = SamEmbeddingCache(Path(paths.sam_cache), sha) if (self.params.cache and paths) else None
        self.transform = ResizeLongestSide(self.model.image_encoder.img_size)
        self.encoder_calls = 0
        self._count_lock = threading.Lock()
        self._items: LruCache[str, ItemState] = LruCache(params.cache_items)
        self.spec = RefinerSpec(name="sam", version=f"sam-{self.params.arch}-{sha[:12]}-v{VERSION}",
                                checkpoint_sha256=sha)

    # ---------------------------------------------------------------- embedding

    def _state_from(self, entry: CachedEmbedding) -> ItemState:
        import torch

        feats = torch.from_numpy(entry.features.astype(np.float32)).to(self.device)
        return ItemState(feats, entry.original_size, entry.input_size)

    def _embed(self, item: RefineItem) -> ItemState:
        """From the pipeline's cache, else the encoder (then stored in the cache)."""
        import torch

        if self.cache is not None:
            entry = self.cache.load(item.item_id)
            if entry is not None and (item.pixels is None or entry.original_size == tuple(item.pixels.shape[:2])):
                return self._state_from(entry)
        image = item.load_image()
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise RefineInputError(f"item {item.item_id}: image must be RGB uint8, got {image.shape} {image.dtype}")
        x = self.transform.apply_image(image)
        t = torch.as_tensor(x, device=self.device).permute(2, 0, 1).contiguous()[None, :, :, :]
        with torch.inference_mode():
            feats = self.model.image_encoder(self.model.preprocess(t))
        with self._count_lock:
            self.encoder_calls += 1
        entry = to_entry(feats, image.shape[:2], tuple(t.shape[-2:]))
        if self.cache is not None:
            self.cache.save(item.item_id, entry)
        # rounded exactly as the cache stores it: cold and cached answers are identical
        return self._state_from(entry)

    def state(self, item: RefineItem) -> tuple[ItemState, bool]:
        """The item's :class:`ItemState` (embedding computed at most once); ``(state, was_in_memory)``."""
        return self._items.get_or_make(item.item_id, lambda: self._embed(item))

    # ---------------------------------------------------------------- refine

    def refine(
        self, item: RefineItem, current_mask: np.ndarray | None, clicks: Sequence[Click], box: Box | None = None
    ) -> RefineResult:
        import torch

        st, cached = self.state(item)
        shape = st.original_size
        prior = check_mask(current_mask, shape, item.item_id)
        check_clicks(clicks, shape, item.item_id)
        box = box.clipped(shape) if box is not None else None
        if not clicks and box is None:
            raise RefineInputError(f"item {item.item_id}: sam needs at least one click or a box")
        mask_in: np.ndarray | None = None
        if self.params.mask_input and prior.any():
            if st.last_low is not None and st.last_digest == _digest(prior):
                mask_in = st.last_low[None, None]
            else:
                mask_in = mask_to_low_res(prior, st.input_size, self.model.image_encoder.img_size,
                                          int(self.model.prompt_encoder.mask_input_size[0]))
        multimask = self.params.multimask == "always" or (
            self.params.multimask == "auto" and len(clicks) == 1 and mask_in is None and box is None
        )
        with torch.inference_mode():
            pts = None
            if clicks:
                coords = np.array([[c.x + 0.5, c.y + 0.5] for c in clicks], np.float32)
                coords = self.transform.apply_coords(coords, shape)
                labels = np.array([1 if c.positive else 0 for c in clicks], np.int32)
                pts = (torch.as_tensor(coords[None], dtype=torch.float, device=self.device),
                       torch.as_tensor(labels[None], dtype=torch.int, device=self.device))
            boxes = None
            if box is not None:
                b = self.transform.apply_boxes(np.array([box.as_tuple()], np.float32), shape)
                boxes = torch.as_tensor(b, dtype=torch.float, device=self.device)
            masks = None if mask_in is None else torch.as_tensor(mask_in, dtype=torch.float, device=self.device)
            sparse, dense = self.model.prompt_encoder(points=pts, boxes=boxes, masks=masks)
            low, iou = self.model.mask_decoder(
                image_embeddings=st.features, image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
            )
            k = int(torch.argmax(iou[0]))
            chosen = low[0, k]
            full = self.model.postprocess_masks(chosen[None, None], st.input_size, shape)[0, 0]
        prob = sigmoid(full.float().cpu().numpy())
        mask = (prob >= 0.5).astype(np.uint8)
        radius = max(1, round(0.004 * max(shape)))
        force_clicks(mask, prob, clicks, radius)
        st.last_low = chosen.float().cpu().numpy()
        st.last_digest = _digest(mask)
        return RefineResult(mask=mask, probability=prob, cached=cached)
