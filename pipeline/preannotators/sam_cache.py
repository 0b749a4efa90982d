"""SAM image-embedding cache: one entry per (item, checkpoint), so re-prompting never re-runs the encoder.

SAM's image encoder costs ~99% of a prediction (seconds on CPU); its prompt decoder costs milliseconds.
The cache stores the encoder output for each item under ``paths.sam_cache`` (a DVC-tracked output of the
``preannotate`` stage)::

    <sam_cache>/<checkpoint sha256[:16]>/<item_id>.npy    float16 (1, C, h, w) image embedding
    <sam_cache>/<checkpoint sha256[:16]>/<item_id>.json   {"original_size": [H, W], "input_size": [h, w],
                                                           "shape": [...], "checkpoint_sha256": "...", "version": 1}

float16 halves the size (vit_b: 2 MiB per item) at no visible cost to the masks. The files are written
atomically and are byte-deterministic (``np.save`` writes no timestamp), so DVC hashes stay stable. An entry is
used only when its JSON matches the checkpoint and the image size; anything else is a miss (recomputed and
overwritten), never an error. Re-prompting after a prompt change, a new round or a correction
(``maskloop sam-prompt``) therefore costs only the decoder.
"""

from __future__ import annotations

import io as _bytesio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import io

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class CachedEmbedding:
    """One cache entry: the embedding (float16 ``(1, C, h, w)``) and the sizes SAM's predictor needs."""

    features: np.ndarray
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class SamEmbeddingCache:
    """Embeddings of one checkpoint under ``root/<sha[:16]>/``."""

    def __init__(self, root: Path, checkpoint_sha256: str) -> None:
        if len(checkpoint_sha256) != 64:
            raise ValueError(f"checkpoint_sha256 must be 64 hex digits, got {checkpoint_sha256!r}")
        self.root = Path(root)
        self.checkpoint_sha256 = checkpoint_sha256
        self.dir = self.root / checkpoint_sha256[:16]

    def paths(self, item_id: str) -> tuple[Path, Path]:
        return self.dir / f"{item_id}.npy", self.dir / f"{item_id}.json"

    def load(self, item_id: str, original_size: tuple[int, int] | None = None) -> CachedEmbedding | None:
        """The entry of ``item_id`` or None (absent, unreadable, other checkpoint or other image size)."""
        npy, meta_path = self.paths(item_id)
        if not (npy.is_file() and meta_path.is_file()):
            return None
        try:
            meta = io.read_json(meta_path)
            feats = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("sam cache: unreadable entry %s (%s); recomputing", npy, exc)
            return None
        if (
            not isinstance(meta, dict)
            or meta.get("version") != FORMAT_VERSION
            or meta.get("checkpoint_sha256") != self.checkpoint_sha256
            or list(feats.shape) != list(meta.get("shape", []))
        ):
            log.warning("sam cache: entry %s does not match this checkpoint/format; recomputing", npy)
            return None
        orig = (int(meta["original_size"][0]), int(meta["original_size"][1]))
        if original_size is not None and orig != tuple(original_size):
            log.warning("sam cache: entry %s is for a %s image, not %s; recomputing", npy, orig, original_size)
            return None
        inp = (int(meta["input_size"][0]), int(meta["input_size"][1]))
        return CachedEmbedding(features=feats, original_size=orig, input_size=inp)

    def save(self, item_id: str, entry: CachedEmbedding) -> None:
        """Write ``entry`` atomically (embedding first, then the JSON that makes it valid)."""
        npy, meta_path = self.paths(item_id)
        feats = np.ascontiguousarray(entry.features.astype(np.float16))
        buf = _bytesio.BytesIO()
        np.save(buf, feats, allow_pickle=False)
        io.write_bytes(npy, buf.getvalue())
        io.write_json(
            meta_path,
            {
                "version": FORMAT_VERSION,
                "checkpoint_sha256": self.checkpoint_sha256,
                "original_size": list(entry.original_size),
                "input_size": list(entry.input_size),
                "shape": list(feats.shape),
                "dtype": "float16",
            },
        )


def prune(root: Path, keep_items: set[str]) -> int:
    """Delete entries (of every checkpoint) whose item is not in ``keep_items``; returns files removed.

    Entries of other checkpoints are kept for items still present, so switching back to an earlier
    checkpoint is still a cache hit.
    """
    root = Path(root)
    removed = 0
    if not root.is_dir():
        return 0
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(sub.iterdir()):
            if not f.is_file():
                continue
            stem = f.name.split(".", 1)[0]
            if io.is_temp_file(f) or (f.suffix in (".npy", ".json") and stem not in keep_items):
                io.remove(f)
                removed += 1
        if not any(sub.iterdir()):
            sub.rmdir()
    return removed


def to_entry(features: Any, original_size: tuple[int, ...], input_size: tuple[int, ...]) -> CachedEmbedding:
    """A cache entry from a SAM predictor's state (``features`` a torch tensor)."""
    arr = features.detach().to("cpu").float().numpy().astype(np.float16)
    return CachedEmbedding(
        features=arr,
        original_size=(int(original_size[0]), int(original_size[1])),
        input_size=(int(input_size[0]), int(input_size[1])),
    )
