"""Item identity and the manifest.

An **item** is one source image, identified by the first 16 hex digits of the SHA-256 of its file
bytes (:func:`item_id_for_bytes`). Renames do not change it; byte-identical duplicates collapse to one
item whose ``source_paths`` lists every path. The manifest (``paths.manifest``, Parquet) has one row
per item plus one row per rejected file (``status == "quarantined"``, ``item_id`` empty).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import io
from pipeline.core.work import FileInput

ITEM_ID_LEN = 16

MANIFEST_COLUMNS = (
    "item_id", "source_path", "source_paths", "width", "height", "orientation", "mode", "bytes", "status", "error",
)

STATUS_OK = "ok"
STATUS_QUARANTINED = "quarantined"


def item_id_for_bytes(data: bytes) -> str:
    """Item id of a file's bytes: first 16 hex digits of SHA-256."""
    return hashlib.sha256(data).hexdigest()[:ITEM_ID_LEN]


def item_id_from_digest(sha256_hex: str) -> str:
    """Item id from a full SHA-256 hex digest of the file (as the runner computes it)."""
    return sha256_hex[:ITEM_ID_LEN]


@dataclass(frozen=True)
class Item:
    """One manifest row. ``source_path`` is the first of ``source_paths`` in sorted order."""

    item_id: str
    source_path: str
    source_paths: tuple[str, ...]
    width: int
    height: int
    orientation: int
    mode: str
    bytes: int
    status: str
    error: str

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def image_input(self) -> FileInput:
        """The source image as a runner input, fingerprinted by the item id (no re-hashing)."""
        return FileInput(Path(self.source_path), digest=self.item_id)


def load_manifest(path: Path) -> list[Item]:
    """All manifest rows (ok items sorted by id, then quarantined files sorted by path)."""
    df = io.read_parquet(path)
    missing = set(MANIFEST_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: manifest lacks columns {sorted(missing)}")
    items = [
        Item(
            item_id=str(r.item_id),
            source_path=str(r.source_path),
            source_paths=tuple(str(p) for p in r.source_paths),
            width=int(r.width),
            height=int(r.height),
            orientation=int(r.orientation),
            mode=str(r.mode),
            bytes=int(r.bytes),
            status=str(r.status),
            error=str(r.error),
        )
        for r in df.itertuples(index=False)
    ]
    return items


def ok_items(path: Path) -> list[Item]:
    """Usable items of the manifest at ``path``, sorted by item id."""
    return sorted((i for i in load_manifest(path) if i.ok), key=lambda i: i.item_id)


def iter_ok(path: Path) -> Iterator[Item]:
    yield from ok_items(path)
