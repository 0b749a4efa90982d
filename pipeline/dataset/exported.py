"""Reading an export's images and masks by name, whether written as files or listed by reference.

The export (:mod:`pipeline.stages.export`) writes the items' ``matting/image`` and ``matting/mask`` files; a
composite's image and mask are listed by reference in ``matting.parquet`` (path, SHA-256) unless
``export.materialize`` names all six folders. :class:`ExportReader` returns either kind as arrays:

- a written file is read from the export folder (as before);
- a composite is read from its item's strips in the composite stage's folder
  (:func:`pipeline.matting.composite.read_composite`), its mask derived from the alpha exactly as the export
  derives it (:func:`pipeline.matting.composite.composite_mask`), and both checked against the SHA-256 that
  ``matting.parquet`` records for the file the export would have written (re-encoded with the export's
  ``png_compression``, recorded in ``dataset.json``), so a reader gets exactly the arrays the exported files hold.

A missing or changed strip is a :class:`pipeline.core.errors.UserError` naming the composite and the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.matting.composite import (
    CompositeRef,
    composite_mask,
    composite_refs,
    read_composite,
    strip_paths,
)

MATTING_TABLE = "matting.parquet"


class ExportReader:
    """Image (RGB uint8 ``(H, W, 3)``) and mask (uint8 ``{0, 255}``) of any exported image name.

    ``export_root``: the export folder; ``composite_root``: the composite stage's folder (``paths.composite``);
    ``verify``: check composites read from strips against ``matting.parquet`` (one PNG encode per array)."""

    def __init__(self, export_root: Path, composite_root: Path | None, verify: bool = True) -> None:
        self.export_root = Path(export_root)
        self.composite_root = Path(composite_root) if composite_root is not None else None
        self.verify = verify
        self._refs: dict[str, CompositeRef] | None = None
        self._digests: dict[str, str] | None = None
        self._compression: int | None = None

    # lazily loaded tables (an export whose images are all files needs neither)
    def _ref(self, name: str) -> CompositeRef | None:
        if self.composite_root is None:
            return None
        if self._refs is None:
            lineage_path = self.composite_root / "lineage.parquet"
            self._refs = composite_refs(io.read_parquet(lineage_path), lineage_path) if lineage_path.is_file() else {}
        return self._refs.get(name)

    def _expected(self, path: str) -> tuple[str | None, int]:
        if self._digests is None:
            table_path = self.export_root / MATTING_TABLE
            table: Any = io.read_parquet(table_path) if table_path.is_file() else None
            self._digests = ({} if table is None else
                             dict(zip(table["path"].astype(str), table["sha256"].astype(str), strict=True)))
            summary_path = self.export_root / "dataset.json"
            summary = io.read_json(summary_path) if summary_path.is_file() else {}
            self._compression = int(summary.get("params", {}).get("png_compression", 3))
        return self._digests.get(path), int(self._compression or 0)

    def image_mask(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``name``'s image and mask (see the class docstring). Raises :class:`UserError` naming the file when
        neither the exported files nor (for a composite) the composite stage's strips give them, or when a strip
        differs from what the export recorded."""
        folder = self.export_root / "matting"
        ipath, mpath = folder / "image" / f"{name}.png", folder / "mask" / f"{name}.png"
        if ipath.is_file() and mpath.is_file():
            image = io.read_image(ipath)
            return image, io.read_mask(mpath, shape=image.shape[:2])
        ref = self._ref(name)
        if ref is None or self.composite_root is None:
            where = ("no composite folder given" if self.composite_root is None
                     else f"not a composite of {self.composite_root / 'lineage.parquet'}")
            raise UserError(f"{name}: {ipath} or {mpath} missing from the export ({where}); re-run `dvc repro export`")
        strips = " / ".join(p.as_posix() for p in strip_paths(self.composite_root, ref.item_id))
        try:
            image, alpha = read_composite(self.composite_root, ref)
        except io.ImageError as exc:
            raise UserError(f"composite {name}: {exc}; its image and mask are read from the composite stage's strips "
                            "(export lists them by reference): run `dvc checkout` or `dvc repro composite`") from exc
        mask = composite_mask(alpha)
        if self.verify:
            for rel, arr in ((f"matting/image/{name}.png", image), (f"matting/mask/{name}.png", mask)):
                want, compression = self._expected(rel)
                if want is None:
                    raise UserError(f"composite {name}: {rel} is not listed in {self.export_root / MATTING_TABLE}; "
                                    "re-run `dvc repro export`")
                if hashlib.sha256(io.encode_png(arr, compression)).hexdigest() != want:
                    raise UserError(f"composite {name}: {rel} read from {strips} differs from the exported version "
                                    f"(SHA-256 in {self.export_root / MATTING_TABLE}); the composite stage's output "
                                    "changed since the export: run `dvc checkout` or `dvc repro export`")
        return image.copy(), mask  # a copy: read_composite returns read-only views of a cached strip
