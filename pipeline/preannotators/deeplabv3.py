"""``deeplabv3``: torchvision DeepLabV3 (ResNet-50 or MobileNetV3-Large) from a local checkpoint.

Heads (``preannotate.deeplabv3.head``):

- ``voc``: the 21-class Pascal VOC head of torchvision's published weights (``OFFICIAL_WEIGHTS``);
  foreground probability = the sum of the softmax probabilities of ``classes`` (default: every non-background
  class).
- ``binary``: a 1-channel head (a foreground logit per pixel) such as maskloop's own training produces;
  probability = sigmoid.

Checkpoints are state dicts (``torch.save(model.state_dict())``, optionally under ``state_dict``/``model``);
the auxiliary classifier of the official weights is loaded when present. A checkpoint of the other backbone
or the other head is refused with a clear error before any weights are used.

Resolution: the image is resized (area) so its longer side is at most ``max_side`` (default 520, what the
official weights were trained at), normalised with ImageNet mean/std, and the probability is resized back
to full resolution bilinearly (mask = probability >= 0.5).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipeline.core.images import shrink_longest
from pipeline.core.params import Paths
from pipeline.preannotators.base import (
    VOC_FOREGROUND,
    CheckpointArchitectureError,
    DeepLabParams,
    PreannotateParams,
    PreannotationResult,
    PreannotatorSpec,
    PredictContext,
    confidence_from,
    file_sha256,
    load_state_strict,
    load_torch_file,
    mask_from_probability,
    require_checkpoint,
    resize_probability,
    state_dict_of,
)

log = logging.getLogger(__name__)

VERSION = "1"
VOC_CLASSES = ("background", *VOC_FOREGROUND)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# a parameter whose shape tells the backbones apart: first conv of ResNet-50 (64 ch) vs MobileNetV3 (16 ch)
_BACKBONE_KEYS = {"resnet50": "backbone.conv1.weight", "mobilenet_v3_large": "backbone.0.0.weight"}


def build_deeplab(arch: str, num_classes: int, aux: bool) -> Any:
    """A randomly initialised torchvision DeepLabV3 (no download: ``weights=None, weights_backbone=None``)."""
    from torchvision.models import segmentation

    builders = {
        "resnet50": segmentation.deeplabv3_resnet50,
        "mobilenet_v3_large": segmentation.deeplabv3_mobilenet_v3_large,
    }
    return builders[arch](weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)


def load_deeplab(params: DeepLabParams, device: Any) -> tuple[Any, str]:
    """Load the configured DeepLabV3 checkpoint strictly; (model in eval mode on ``device``, SHA-256)."""
    what = f"deeplabv3/{params.arch}"
    path = require_checkpoint(params.checkpoint, what, "preannotate.deeplabv3.checkpoint")
    state = state_dict_of(load_torch_file(path, f"DeepLabV3 {params.arch}"), path, f"DeepLabV3 {params.arch}")
    key = _BACKBONE_KEYS[params.arch]
    if key not in state:
        other = [a for a, k in _BACKBONE_KEYS.items() if k in state]
        raise CheckpointArchitectureError(
            f"{path}: not a DeepLabV3 {params.arch} checkpoint"
            + (f" (it holds a {other[0]} backbone)" if other else " (no DeepLabV3 backbone weights found)")
            + "; set preannotate.deeplabv3.arch to match the checkpoint"
        )
    head = state.get("classifier.4.weight")
    if head is None or not hasattr(head, "shape"):
        raise CheckpointArchitectureError(f"{path}: no DeepLabV3 classifier head (classifier.4.weight) found")
    n_out = int(head.shape[0])
    expected = 21 if params.head == "voc" else 1
    if n_out != expected:
        raise CheckpointArchitectureError(
            f"{path}: DeepLabV3 head has {n_out} output channels, but preannotate.deeplabv3.head is {params.head} "
            f"(expects {expected}); set head to {'voc' if n_out == 21 else 'binary'} or use another checkpoint"
        )
    aux = any(k.startswith("aux_classifier.") for k in state)
    model = build_deeplab(params.arch, n_out, aux)
    load_state_strict(model, state, path, f"DeepLabV3 {params.arch} ({params.head} head)")
    model.to(device)
    model.eval()
    return model, file_sha256(path)


def to_tensor(image: np.ndarray, max_side: int) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> float32 ``(1, 3, h, w)`` ImageNet-normalised, longer side <= ``max_side``."""
    small, _ = shrink_longest(image, max_side, copy=False)
    x = (small.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def foreground_probability(logits: np.ndarray, head: str, class_ids: tuple[int, ...]) -> np.ndarray:
    """Network output ``(C, h, w)`` -> float32 foreground probability ``(h, w)`` in [0, 1]."""
    if head == "binary":
        return (1.0 / (1.0 + np.exp(-np.clip(logits[0], -60.0, 60.0)))).astype(np.float32)
    z = logits - logits.max(axis=0, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=0, keepdims=True)
    return np.clip(p[list(class_ids)].sum(axis=0), 0.0, 1.0).astype(np.float32)


class DeepLabV3Preannotator:
    """Registry entry ``deeplabv3``."""

    def __init__(self, params: PreannotateParams, paths: Paths | None = None, **_: Any) -> None:
        from pipeline.learning.torch_utils import select_device, set_threads

        set_threads(params.threads)
        self.params = params.deeplabv3
        self.device = select_device(params.device)
        self.model, sha = load_deeplab(self.params, self.device)
        self.class_ids = tuple(VOC_CLASSES.index(c) for c in self.params.classes)
        self.spec = PreannotatorSpec(
            name="deeplabv3",
            version=f"deeplabv3-{self.params.arch}-{self.params.head}-{sha[:12]}-v{VERSION}",
            checkpoint_sha256=sha,
        )

    def probability(self, image: np.ndarray) -> np.ndarray:
        """Foreground probability float32 ``(H, W)`` at full resolution."""
        import torch

        x = torch.from_numpy(to_tensor(image, self.params.max_side)).to(self.device)
        with torch.inference_mode():
            out = self.model(x)["out"][0].float().cpu().numpy()
        prob = foreground_probability(out, self.params.head, self.class_ids)
        return resize_probability(prob, image.shape[:2])

    def predict(self, image: np.ndarray, context: PredictContext) -> PreannotationResult:
        prob = self.probability(image)
        mask = mask_from_probability(prob)
        return PreannotationResult(mask=mask, probability=prob, confidence=confidence_from(prob, mask))
