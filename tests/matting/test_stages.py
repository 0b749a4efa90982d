"""trimap -> matte -> composite as stages through the real `maskloop` CLI on real ECSSD photos, plus
`maskloop evaluate-matting` on the alphamatting set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline.core import io
from tests.conftest import REPO, copy_ecssd, maskloop

NUMBA_ENV = {"NUMBA_CACHE_DIR": os.environ["NUMBA_CACHE_DIR"]}


def make_project(tmp_path: Path, ecssd: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runner"].update(workers=2, max_failure_fraction=0.5, progress=False)
    params["composite"].update(per_item=2, procedural=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(REPO / "data" / "backgrounds", root / "data" / "backgrounds")
    copy_ecssd(ecssd, root / "data" / "raw" / "images", n=3)
    maskloop("ingest", cwd=root)
    manifest = io.read_parquet(root / "data" / "ingest" / "manifest.parquet")
    rows = []
    for k, r in enumerate(manifest.itertuples()):
        mask = io.read_mask(ecssd / "masks" / (Path(r.source_path).stem + ".png"))
        if k == 0:
            mask = np.zeros_like(mask)  # a bad curated mask: empty -> that item fails, the others proceed
        io.write_png(root / "data" / "curated" / "masks" / f"{r.item_id}.png", mask)
        rows.append({"item_id": r.item_id, "included": True})
    rows.append({"item_id": "ffffffffffffffff", "included": False})  # excluded items are ignored
    io.write_parquet(root / "data" / "curated" / "curated.parquet", pd.DataFrame(rows))
    return root


def test_trimap_matte_composite_stages(tmp_path: Path, ecssd: Path) -> None:
    root = make_project(tmp_path, ecssd)
    maskloop("trimap", cwd=root, env=NUMBA_ENV)
    tri = io.read_parquet(root / "data" / "trimap" / "trimaps.parquet")
    report = io.read_parquet(root / "reports" / "trimap.parquet")
    failed = report[report["status"] == "failed"]
    assert len(tri) == 2 and len(failed) == 1
    assert "no foreground" in failed["error"].iloc[0]
    assert (tri["band_px"] == 10).all() and (tri["unknown_fraction"] > 0).all()
    for item_id in tri["item_id"]:
        t = io.read_trimap(root / "data" / "trimap" / "trimaps" / f"{item_id}.png")
        assert set(np.unique(t).tolist()) == {0, 128, 255}

    maskloop("matte", cwd=root, env=NUMBA_ENV)
    matte = io.read_parquet(root / "data" / "matte" / "matte.parquet")
    assert sorted(matte["item_id"]) == sorted(tri["item_id"]) and (matte["solver"] == "cf").all()
    for item_id in matte["item_id"]:
        alpha = io.read_gray(root / "data" / "matte" / "alpha" / f"{item_id}.png")
        t = io.read_trimap(root / "data" / "trimap" / "trimaps" / f"{item_id}.png")
        assert np.array_equal(alpha[t == 255], np.full(np.count_nonzero(t == 255), 255))
        assert np.array_equal(alpha[t == 0], np.zeros(np.count_nonzero(t == 0)))
        assert io.read_image(root / "data" / "matte" / "foreground" / f"{item_id}.png").shape[:2] == alpha.shape

    proc = maskloop("composite", cwd=root, env=NUMBA_ENV)
    assert "MP/s" in proc.stderr + proc.stdout  # throughput per megapixel is reported
    lineage = io.read_parquet(root / "data" / "composite" / "lineage.parquet")
    assert len(lineage) == 4 and set(lineage["item_id"]) == set(matte["item_id"])
    first = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "data" / "composite").rglob("*.png"))}
    # 2 items x (image strip + alpha strip) of 2 composites each: masks and trimaps are derived from alpha by export
    assert len(first) == 4 and {k.split("/")[2] for k in first} == {"image_strips", "alpha_strips"}
    for item_id in matte["item_id"]:
        alpha = io.read_gray(root / "data" / "matte" / "alpha" / f"{item_id}.png")
        strip = io.read_gray(root / "data" / "composite" / "alpha_strips" / f"{item_id}.png")
        assert strip.shape == (2 * alpha.shape[0], alpha.shape[1])  # two tiles of the photo's size, stacked
        image_strip = io.read_image(root / "data" / "composite" / "image_strips" / f"{item_id}.png")
        assert image_strip.shape[:2] == strip.shape
    assert list(lineage["tile"]) == [0, 1, 0, 1]

    # same seed -> byte-identical files after a clean rebuild
    shutil.rmtree(root / "data" / "composite")
    shutil.rmtree(root / ".maskloop" / "state" / "composite")
    maskloop("composite", cwd=root, env=NUMBA_ENV)
    again = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "data" / "composite").rglob("*.png"))}
    assert again == first
    assert io.read_parquet(root / "data" / "composite" / "lineage.parquet").equals(lineage)


def test_matte_stage_without_trimaps_is_one_clear_sentence(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    proc = maskloop("matte", cwd=root, check=False, env=NUMBA_ENV)
    assert proc.returncode == 1 and "trimap table not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = maskloop("trimap", cwd=root, check=False)
    assert proc.returncode == 1 and "curated table not found" in proc.stderr


def test_evaluate_matting_command(tmp_path: Path, alphamatting: Path) -> None:
    pred = tmp_path / "pred"
    for name in ("GT01", "GT02"):
        gt = io.read_gray(alphamatting / "alpha" / f"{name}.png")
        io.write_png(pred / f"{name}.png", gt if name == "GT01" else 255 - gt)
    proc = maskloop("evaluate-matting", "--gt", str(alphamatting / "alpha"), "--pred", str(pred),
                    "--trimaps", str(alphamatting / "trimaps" / "Trimap1"), "--out", str(tmp_path / "ev"),
                    cwd=tmp_path)
    df = io.read_parquet(tmp_path / "ev.parquet")
    assert df["name"].tolist() == ["GT01", "GT02"]
    assert df.loc[0, "sad"] == 0.0 and df.loc[0, "conn"] == 0.0 and df.loc[1, "sad"] > 1.0
    assert "mean_sad=" in proc.stdout and io.read_json(tmp_path / "ev.json")["evaluated"] == 2
    (pred / "GT03.png").write_bytes(b"broken")
    proc = maskloop("evaluate-matting", "--gt", str(alphamatting / "alpha"), "--pred", str(pred),
                    "--trimaps", str(alphamatting / "trimaps" / "Trimap1"), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "1 of 3 files could not be evaluated" in proc.stderr
