"""The binary foreground segmenter that maskloop trains and promotes (torchvision, MobileNetV3-Large).

One registry of builders (:data:`ARCHS`), one checkpoint format, one preprocessing path shared by
training (:mod:`pipeline.learning.training`) and inference (the ``trained`` pre-annotator):

- :func:`build_segmenter` builds LR-ASPP or DeepLabV3 on MobileNetV3-Large with a 1-channel head (a logit
  per pixel), randomly initialised, optionally loading a **backbone** checkpoint from a local file (never
  a download).
- :func:`save_checkpoint` / :func:`load_segmenter` write and read ``{"format", "format_version", "meta",
  "state_dict"}`` with :func:`torch.save` / ``torch.load(weights_only=True)``. Problems (missing file,
  corrupt file, not a maskloop checkpoint, another architecture or resolution than expected, weights that
  do not fit) raise :class:`~pipeline.core.errors.UserError` naming the file.
- :func:`predict_probability` returns the foreground probability ``float32 (H, W)`` in ``[0, 1]`` at the
  image's own size.

Preprocessing (:func:`preprocess`): the RGB uint8 image is resized (``cv2.INTER_AREA`` when shrinking,
bilinear when growing) to a ``resolution x resolution`` square (aspect not preserved: the network sees the
whole image), scaled to ``[0, 1]`` and normalised with ImageNet mean/std.

Example::

    model = build_segmenter("lraspp_mobilenet_v3_large", None)
    meta = SegmenterMeta(arch="lraspp_mobilenet_v3_large", resolution=128)
    save_checkpoint(Path("model.pt"), model, meta)
    model, meta = load_segmenter(Path("model.pt"), "cpu")
    prob = predict_probability(model, meta, image_rgb, "cpu")   # float32 (H, W) in [0, 1]
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from pipeline.core import io
from pipeline.core.errors import UserError

if TYPE_CHECKING:  # heavy imports stay inside functions
    import torch

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "maskloop-segmenter"
CHECKPOINT_FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_RESOLUTION = 32


@dataclass(frozen=True)
class SegmenterMeta:
    """What a checkpoint says about its model.

    ``arch``: a key of :data:`ARCHS`. ``resolution``: square input side in pixels the model was trained at
    (multiple of 8, >= 32). ``threshold``: probability above which a pixel is foreground. ``lineage``:
    JSON-able provenance (dataset version, train params, ...) carried along unchanged.
    """

    arch: str
    resolution: int
    threshold: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    lineage: Mapping[str, Any] = field(default_factory=dict)
    priors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise UserError(f"unknown segmenter architecture {self.arch!r}; choose one of {sorted(ARCHS)}")
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int):
            raise UserError(f"segmenter resolution must be an integer, got {self.resolution!r}")
        if self.resolution < MIN_RESOLUTION or self.resolution % 8:
            raise UserError(
                f"segmenter resolution must be a multiple of 8 and >= {MIN_RESOLUTION}, got {self.resolution}"
            )
        if not 0.0 < self.threshold < 1.0:
            raise UserError(f"segmenter threshold must be in (0, 1), got {self.threshold}")
        from pipeline.preannotators.saliency import PRIORS

        unknown = sorted(set(self.priors) - set(PRIORS))
        if unknown or len(set(self.priors)) != len(self.priors):
            raise UserError(f"segmenter priors must be distinct names from {sorted(PRIORS)}, got {list(self.priors)}")

    @property
    def in_channels(self) -> int:
        """Network input channels: RGB plus one per saliency prior."""
        return 3 + len(self.priors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "resolution": self.resolution,
            "threshold": float(self.threshold),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "lineage": dict(self.lineage),
            "priors": list(self.priors),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> SegmenterMeta:
        try:
            return cls(
                arch=str(raw["arch"]),
                resolution=int(raw["resolution"]),
                threshold=float(raw.get("threshold", 0.5)),
                mean=tuple(float(v) for v in raw.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
                std=tuple(float(v) for v in raw.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
                lineage=dict(raw.get("lineage", {})),
                priors=tuple(str(p) for p in raw.get("priors", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: checkpoint metadata is incomplete or invalid ({exc!r})") from exc


# --------------------------------------------------------------------------- registry


def _lraspp(num_classes: int) -> torch.nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)


def _deeplabv3(num_classes: int) -> torch.nn.Module:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)


def _unet_small(num_classes: int) -> torch.nn.Module:
    from pipeline.learning.unet import SmallUNet

    return SmallUNet(num_classes, width=8)


ARCHS: dict[str, Callable[[int], torch.nn.Module]] = {
    "lraspp_mobilenet_v3_large": _lraspp,
    "deeplabv3_mobilenet_v3_large": _deeplabv3,
    "unet_small": _unet_small,
}
"""Architecture name (``train.arch`` in params.yaml) -> builder ``(num_classes) -> nn.Module``. ``unet_small``
(:mod:`pipeline.learning.unet`) is the one to train from scratch on CPU; the MobileNetV3 ones take
ImageNet backbone weights (``train.pretrained_backbone``)."""

BACKBONE_ARCHS = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large")
"""Architectures with a MobileNetV3-Large backbone that ``pretrained_backbone`` weights can fill."""


def build_segmenter(arch: str, pretrained_backbone: Path | None = None, in_channels: int = 3) -> torch.nn.Module:
    """A randomly initialised 1-class segmenter; the model's ``forward(x)["out"]`` is ``(N, 1, h, w)`` logits.

    ``pretrained_backbone``: optional local file with MobileNetV3-Large weights, either a torchvision
    classification state dict (``features.*`` keys, e.g. ``mobilenet_v3_large-*.pth``) or a state dict of
    the segmentation backbone itself. Raises :class:`UserError` when the file is missing or does not fit.
    """
    if arch not in ARCHS:
        raise UserError(f"unknown segmenter architecture {arch!r}; choose one of {sorted(ARCHS)}")
    model = ARCHS[arch](1)
    if pretrained_backbone is not None:
        if arch not in BACKBONE_ARCHS:
            raise UserError(f"train.pretrained_backbone: architecture {arch!r} has no ImageNet backbone; use one of "
                            f"{sorted(BACKBONE_ARCHS)} or set it to null")
        _load_backbone(model, Path(pretrained_backbone))
    if in_channels != 3:
        _widen_input(model, in_channels)
    return model


def _widen_input(model: torch.nn.Module, in_channels: int) -> None:
    """Give the backbone's first convolution ``in_channels`` inputs (RGB + saliency priors): its RGB weights
    (random or pretrained) are kept, the extra channels start from the layer's default initialisation."""
    import torch

    if in_channels < 3:
        raise UserError(f"a segmenter needs at least the 3 RGB input channels, got {in_channels}")
    widen = getattr(model, "widen_input", None)
    if callable(widen):
        widen(in_channels)
        return
    first = model.backbone["0"]  # type: ignore[index]
    conv = first[0]
    wide = torch.nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           bias=conv.bias is not None)
    with torch.no_grad():
        wide.weight[:, :3] = conv.weight
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    first[0] = wide


def _load_backbone(model: torch.nn.Module, path: Path) -> None:
    import torch

    if not path.is_file():
        raise UserError(f"{path}: pretrained backbone checkpoint not found (train.pretrained_backbone); get the "
                        "official ImageNet weights with `maskloop models fetch mobilenet_v3_large`")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise UserError(f"{path}: cannot read pretrained backbone checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise UserError(f"{path}: pretrained backbone checkpoint is not a state dict")
    state: dict[str, Any] = {}
    for key, value in raw.items():
        k = str(key)
        if k.startswith("features."):
            state[k[len("features.") :]] = value
        elif k.startswith("backbone."):
            state[k[len("backbone.") :]] = value
        elif not k.startswith("classifier."):
            state[k] = value
    import torch.nn

    backbone = model.backbone
    if not isinstance(backbone, torch.nn.Module):
        raise TypeError(f"model has no backbone module: {type(model).__name__}")
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise UserError(f"{path}: backbone weights do not fit MobileNetV3-Large ({exc})") from exc
    loaded = set(backbone.state_dict()) & set(state)
    if not loaded:
        raise UserError(f"{path}: no MobileNetV3-Large backbone weights found in this checkpoint")
    if loaded and result.missing_keys:
        log.warning("%s: %d backbone tensors not in the checkpoint (left random)", path, len(result.missing_keys))
    log.info("loaded %d backbone tensors from %s", len(loaded), path)


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model: torch.nn.Module, meta: SegmenterMeta) -> str:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically; returns the file's SHA-256.

    The file is deterministic for given weights and meta (no timestamps).
    """
    import io as _bio

    import torch

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "meta": meta.to_dict(),
        "state_dict": state,
    }
    buf = _bio.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    io.write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def read_checkpoint_meta(path: Path) -> SegmenterMeta:
    """Only the metadata of a checkpoint (still reads the file). Same errors as :func:`load_segmenter`."""
    return _read_checkpoint(Path(path))[0]


def _read_checkpoint(path: Path) -> tuple[SegmenterMeta, dict[str, Any]]:
    import torch

    if not path.is_file():
        raise UserError(
            f"{path}: segmenter checkpoint not found (train a model with `dvc repro train`, "
            "then `maskloop promote`)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt files
        raise UserError(
            f"{path}: corrupt or unreadable segmenter checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a maskloop segmenter checkpoint (no format={CHECKPOINT_FORMAT!r} header)")
    version = payload.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format version {version!r} is not supported (expected {CHECKPOINT_FORMAT_VERSION})"
        )
    meta_raw = payload.get("meta")
    state = payload.get("state_dict")
    if not isinstance(meta_raw, dict) or not isinstance(state, dict):
        raise UserError(f"{path}: segmenter checkpoint lacks its meta or state_dict")
    return SegmenterMeta.from_dict(meta_raw, str(path)), state


def load_segmenter(
    path: Path,
    device: str | torch.device = "cpu",
    expected_arch: str | None = None,
    expected_resolution: int | None = None,
) -> tuple[torch.nn.Module, SegmenterMeta]:
    """Load a checkpoint written by :func:`save_checkpoint`; the model comes back in eval mode on ``device``.

    With ``expected_arch`` / ``expected_resolution`` (what params.yaml asks for), a checkpoint trained for
    another architecture or resolution is refused with a :class:`UserError` naming both values.
    """
    path = Path(path)
    meta, state = _read_checkpoint(path)
    if expected_arch is not None and meta.arch != expected_arch:
        raise UserError(
            f"{path}: checkpoint was trained for architecture {meta.arch!r}, but {expected_arch!r} is configured; "
            "retrain or set the architecture to match"
        )
    if expected_resolution is not None and meta.resolution != expected_resolution:
        raise UserError(
            f"{path}: checkpoint was trained at resolution {meta.resolution}, but {expected_resolution} is "
            "configured; retrain or set the resolution to match"
        )
    model = build_segmenter(meta.arch, None, meta.in_channels)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: weights do not match architecture {meta.arch!r} ({first})") from exc
    model.to(device)
    model.eval()
    return model, meta


# --------------------------------------------------------------------------- pre/post-processing


def resize_to(image: np.ndarray, width: int, height: int, *, nearest: bool = False) -> np.ndarray:
    """Resize an ``(H, W[, C])`` array to ``(height, width[, C])`` (area when shrinking, bilinear otherwise)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if nearest:
        interp = cv2.INTER_NEAREST
    elif width < w and height < h:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def normalize(image_rgb: np.ndarray, meta: SegmenterMeta) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> float32 ``(3, H, W)`` normalised by ``meta.mean`` / ``meta.std``."""
    x = image_rgb.astype(np.float32) / 255.0
    x = (x - np.asarray(meta.mean, np.float32)) / np.asarray(meta.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def network_input(image_rgb: np.ndarray, meta: SegmenterMeta) -> np.ndarray:
    """RGB uint8 ``(R, R, 3)`` (already at the network size) -> float32 ``(meta.in_channels, R, R)``: the
    normalised image, then ``meta.priors`` (:func:`~pipeline.preannotators.saliency.prior_channels`, in [-1, 1]) computed
    on that same image. Training and inference both go through here."""
    x = normalize(image_rgb, meta)
    if not meta.priors:
        return x
    from pipeline.preannotators.saliency import prior_channels

    extra = prior_channels(np.ascontiguousarray(image_rgb), tuple(meta.priors)).transpose(2, 0, 1)
    return np.ascontiguousarray(np.concatenate([x, extra], axis=0), dtype=np.float32)


def preprocess(image_rgb: np.ndarray, meta: SegmenterMeta) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> float32 ``(3, R, R)`` network input, ``R = meta.resolution``."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image_rgb.dtype} {image_rgb.shape}")
    r = meta.resolution
    return network_input(resize_to(image_rgb, r, r), meta)


def predict_probability(
    model: torch.nn.Module, meta: SegmenterMeta, image_rgb: np.ndarray, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Foreground probability of ``image_rgb`` (RGB uint8 ``(H, W, 3)``) as float32 ``(H, W)`` in ``[0, 1]``.

    The model runs at ``meta.resolution``; the probability map is resized back to the image's size.
    """
    import torch

    h, w = image_rgb.shape[:2]
    x = torch.from_numpy(preprocess(image_rgb, meta))[None].to(device)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        logits = model(x)["out"][0, 0].float().cpu().numpy()
    if was_training:
        model.train()
    prob_small = 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))
    prob = resize_to(prob_small.astype(np.float32), w, h)
    return np.clip(prob, 0.0, 1.0).astype(np.float32)


def checkpoint_sha256(path: Path) -> str:
    """SHA-256 hex digest of a checkpoint file (its identity in lineage and pre-annotation tables)."""
    from pipeline.core.hashing import sha256_file

    return sha256_file(Path(path))
