"""Export on real ECSSD photos: COCO round trip via pycocotools, splits, composites, card, bad input."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pycocotools.coco import COCO

from pipeline.commands.materialize import materialize
from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.params import ParamsError, load_section
from pipeline.dataset.exported import ExportReader
from pipeline.matting.composite import strip_paths
from pipeline.stages import export
from qa.checks import QAParams
from qa.near_duplicates import cluster, phash
from tests.loop.conftest import make_project


def _composite_alpha(project: Path, cid: str) -> np.ndarray:
    """Composite ``cid``'s alpha, sliced from its item's alpha strip by hand (not through the read path)."""
    lineage = io.read_parquet(project / "data/composite/lineage.parquet").set_index("composite_id")
    src, tile = str(lineage.loc[cid, "item_id"]), int(lineage.loc[cid, "tile"])
    strip = io.read_gray(strip_paths(project / "data/composite", src)[1])
    h = strip.shape[0] // int((lineage["item_id"] == src).sum())
    return strip[tile * h:(tile + 1) * h]


def _set(params_path: Path, section: str, **values: object) -> None:
    data = yaml.safe_load(params_path.read_text())
    data[section] = {**(data.get(section) or {}), **values}
    params_path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def exported(chdir_tmp: Path, ecssd: Path) -> Path:
    """10 photos, curated = ground truth, with a near-duplicate item, composites, corrections, decisions."""
    params = make_project(chdir_tmp, ecssd, 10)
    manifest = io.read_parquet(chdir_tmp / "data/ingest/manifest.parquet").sort_values("item_id")
    ids = [str(i) for i in manifest["item_id"]]
    # Two composites of the first item (its object on the second item's photo, flipped).
    src = ids[0]
    image = io.read_image(Path(manifest.iloc[0]["source_path"]))
    mask = io.read_mask(chdir_tmp / "data/curated/masks" / f"{src}.png")
    comp = chdir_tmp / "data/composite"
    rows = []
    for k in range(2):
        cid = f"{src}_{k:02d}"
        rows.append({"composite_id": cid, "item_id": src, "tile": k, "background": f"bg{k}.jpg", "scale": 1.0,
                     "dx": 0, "dy": 0, "flip": bool(k), "seed": k})
    # the composite stage's layout: one image strip and one alpha strip per item, tile k = rows k*H .. (k+1)*H - 1
    image_strip, alpha_strip = strip_paths(comp, src)
    io.write_png(image_strip, np.concatenate([image, image[:, ::-1]]))
    io.write_png(alpha_strip, np.concatenate([mask, mask[:, ::-1]]))  # a hard alpha: mask = alpha
    io.write_parquet(comp / "lineage.parquet", pd.DataFrame(rows))
    # Provenance tables for the card.
    io.write_parquet(chdir_tmp / "data/corrections/corrections.parquet", pd.DataFrame(
        [{"item_id": ids[1], "annotator": "alice", "source": "labelstudio", "updated_at": "2024-01-02T00:00:00Z",
          "mask_digest": "ab" * 32}]))
    io.write_parquet(chdir_tmp / "data/review/decisions.parquet", pd.DataFrame(
        [{"decision_id": 1, "item_id": ids[2], "decision": "accept", "reason": "", "fix": "", "reviewer": "bob",
          "decided_at": "2024-01-03T00:00:00Z", "mask_digest": ""}]))
    io.write_parquet(chdir_tmp / "data/preannotate/preannotations.parquet", pd.DataFrame(
        [{"item_id": i, "model": "grabcut", "model_version": "grabcut-v1"} for i in ids]))
    export.run(params)
    return chdir_tmp


def test_coco_round_trip_through_pycocotools(exported: Path) -> None:
    root = exported / "data/export"
    reader = ExportReader(root, exported / "data/composite")
    n_images = 0
    for split in ("train", "val", "test"):
        coco = COCO(str(root / "coco" / f"{split}.json"))
        assert coco.getCatIds() == [1]
        for img_id in coco.getImgIds():
            info = coco.loadImgs(img_id)[0]
            (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            decoded = coco.annToMask(ann)
            # items' files are written; composites' are read from the composite stage's strips (by reference)
            stored = reader.image_mask(Path(info["file_name"]).stem)[1]
            assert np.array_equal(decoded * 255, stored)
            assert (info["height"], info["width"]) == stored.shape
            assert ann["area"] == float(np.count_nonzero(stored))
            ys, xs = np.nonzero(stored)
            assert ann["bbox"] == [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                   float(ys.max() - ys.min() + 1)]
            assert (root / info["file_name"]).is_file() == (not info["composite"])
            n_images += 1
    assert n_images == 12  # 10 items + 2 composites


def test_exported_masks_are_the_curated_ground_truth(exported: Path, ecssd: Path) -> None:
    manifest = io.read_parquet(exported / "data/ingest/manifest.parquet")
    for r in manifest.itertuples(index=False):
        gt = io.read_mask(ecssd / "masks" / f"{Path(str(r.source_path)).stem}.png")
        assert np.array_equal(io.read_mask(exported / "data/export/matting/mask" / f"{r.item_id}.png"), gt)


def test_splits_table_and_composites_follow_their_item(exported: Path) -> None:
    root = exported / "data/export"
    splits = io.read_parquet(root / "splits.parquet")
    assert list(splits.columns) == list(export.SPLIT_COLUMNS)
    assert len(splits) == 10 and splits["item_id"].is_monotonic_increasing
    lineage = io.read_parquet(exported / "data/composite/lineage.parquet")
    src = lineage["item_id"].iloc[0]
    split = splits.set_index("item_id").loc[src, "split"]
    listed = (root / "splits" / f"{split}.txt").read_text().split()
    assert set(lineage["composite_id"]) <= set(listed)
    assert int(splits.set_index("item_id").loc[src, "n_composites"]) == 2
    cid = lineage["composite_id"].iloc[0]
    alpha = _composite_alpha(exported, cid)
    # the composite stage stores image + alpha only; the mask is derived (a hard alpha here: mask = alpha)
    reader = ExportReader(root, exported / "data/composite")
    assert np.array_equal(reader.image_mask(cid)[1], alpha)
    # each composite is its own tile of the item's strips: tile 1 is the flipped photo and mask
    photo = io.read_image(Path(io.read_parquet(exported / "data/ingest/manifest.parquet")
                               .set_index("item_id").loc[src, "source_path"]))
    flipped = str(lineage.set_index("tile").loc[1, "composite_id"])
    assert np.array_equal(reader.image_mask(flipped)[0], photo[:, ::-1])
    assert np.array_equal(reader.image_mask(cid)[0], photo)
    assert np.array_equal(reader.image_mask(flipped)[1], alpha[:, ::-1])
    # by default only the items' image/ and mask/ are written; alpha/, trimap/ and every composite file are
    # listed by reference (materialize; composites: read from the strips)
    assert sorted(p.name for p in (root / "matting").iterdir()) == ["image", "mask"]
    assert sorted(p.stem for p in (root / "matting/image").iterdir()) == sorted(splits["item_id"])
    assert sorted(p.stem for p in (root / "matting/mask").iterdir()) == sorted(splits["item_id"])
    listing = io.read_parquet(root / export.MATTING_TABLE).set_index("path")
    assert listing.loc[f"matting/alpha/{cid}.png", "written"] == False  # noqa: E712  (numpy bool)
    assert listing.loc[f"matting/mask/{cid}.png", "written"] == False  # noqa: E712
    assert listing.loc[f"matting/mask/{src}.png", "written"] == True  # noqa: E712
    summary = io.read_json(root / "dataset.json")
    assert summary["items"] == 10 and summary["composites"] == 2
    assert sum(s["items"] for s in summary["splits"].values()) == 10


def test_dataset_card_names_its_provenance(exported: Path) -> None:
    card = (exported / "data/export/README.md").read_text()
    version = io.read_json(exported / "data/export/dataset.json")["version"]
    assert card.startswith(f"# maskloop dataset {version}")
    assert "| alice | labelstudio |" in card  # the human correction it contains
    assert "| accept | bob |" in card  # the review decision
    assert "| grabcut | grabcut-v1 | 10 |" in card  # the model that pre-annotated it
    assert "| composites | 2 |" in card


def test_export_is_deterministic_and_incremental(exported: Path, tmp_path: Path) -> None:
    root = exported / "data/export"
    before = {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    # Clean rebuild from the same inputs in a copy of the project gives byte-identical outputs.
    clone = tmp_path / "clone"
    shutil.copytree(exported, clone, ignore=shutil.ignore_patterns("export", ".maskloop", "clone"))
    import os

    os.chdir(clone)
    export.run(clone / "params.yaml")
    after = {p.relative_to(clone / "data/export"): p.read_bytes()
             for p in sorted((clone / "data/export").rglob("*")) if p.is_file()}
    assert after == before


def test_near_duplicates_never_straddle_splits(chdir_tmp: Path, ecssd: Path) -> None:
    params = make_project(chdir_tmp, ecssd, 8)
    _set(params, "export", splits={"train": 0.5, "val": 0.0, "test": 0.5})
    manifest = io.read_parquet(chdir_tmp / "data/ingest/manifest.parquet")
    ids = sorted(str(i) for i in manifest["item_id"])
    first = manifest.set_index("item_id").loc[ids[0]]
    # A resized copy of the first photo as a new item (a near-duplicate with another item id).
    image = io.read_image(Path(first["source_path"]))
    dup = image[::2, ::2].copy()
    raw = chdir_tmp / "data/raw/images"
    (raw / "dup.jpg").write_bytes(io.encode_jpeg(dup, quality=80))
    from pipeline.stages import ingest

    ingest.run(params)
    manifest = io.read_parquet(chdir_tmp / "data/ingest/manifest.parquet")
    dup_id = str(manifest.loc[manifest["source_path"].str.endswith("dup.jpg"), "item_id"].iloc[0])
    gt = io.read_mask(chdir_tmp / "data/curated/masks" / f"{ids[0]}.png")
    io.write_png(chdir_tmp / "data/curated/masks" / f"{dup_id}.png", np.ascontiguousarray(gt[::2, ::2]))
    # The near-duplicate group as curate writes it (qa.near_duplicates at qa.phash_max_distance): export
    # reads that column and computes no hash of its own.
    qa_params = load_section(params, "qa", QAParams)
    dup_image = io.read_image(raw / "dup.jpg")
    hashes = {k: phash(io.read_image(Path(manifest.set_index("item_id").loc[k, "source_path"])))
              for k in ids} | {dup_id: phash(dup_image)}
    groups = cluster(hashes, qa_params.phash_max_distance)
    assert groups[dup_id] == groups[ids[0]] == min(dup_id, ids[0])
    assert len(set(groups.values())) == len(ids)  # the other photos are not near-duplicates
    cur = io.read_parquet(chdir_tmp / "data/curated/curated.parquet")
    extra = cur.iloc[[0]].assign(item_id=dup_id)
    cur = pd.concat([cur, extra]).sort_values("item_id")
    cur["dup_group"] = cur["item_id"].map(groups)
    io.write_parquet(chdir_tmp / "data/curated/curated.parquet", cur)
    for seed in range(4):
        _set(params, "export", seed=seed)
        export.run(params)
        splits = io.read_parquet(chdir_tmp / "data/export/splits.parquet").set_index("item_id")
        assert splits.loc[dup_id, "split"] == splits.loc[ids[0], "split"]
        assert splits.loc[dup_id, "component"] == splits.loc[ids[0], "component"]
        assert splits.loc[dup_id, "dup_group"] == splits.loc[ids[0], "dup_group"] == min(dup_id, ids[0])
    # Without the group (curate saw no near-duplicate) the pair is free to separate: the guard is the column.
    cur["dup_group"] = cur["item_id"]
    io.write_parquet(chdir_tmp / "data/curated/curated.parquet", cur)
    apart = set()
    for seed in range(8):
        _set(params, "export", seed=seed)
        export.run(params)
        splits = io.read_parquet(chdir_tmp / "data/export/splits.parquet").set_index("item_id")
        apart.add(splits.loc[dup_id, "split"] != splits.loc[ids[0], "split"])
    assert True in apart


def test_curated_table_without_dup_group_is_a_clear_error(chdir_tmp: Path, ecssd: Path) -> None:
    params = make_project(chdir_tmp, ecssd, 3)
    cur = io.read_parquet(chdir_tmp / "data/curated/curated.parquet")
    io.write_parquet(chdir_tmp / "data/curated/curated.parquet", cur.drop(columns=["dup_group"]))
    with pytest.raises(UserError, match=r"lacks columns \['dup_group'\]; re-run `dvc repro curate`"):
        export.run(params)


def test_retired_near_duplicate_key_names_its_successor(chdir_tmp: Path, ecssd: Path) -> None:
    params = make_project(chdir_tmp, ecssd, 2)
    _set(params, "export", near_duplicate_max_distance=6)
    with pytest.raises(ParamsError, match=r"export\.near_duplicate_max_distance: removed.*qa\.phash_max_distance"):
        export.run(params)


def test_zero_verified_items_is_a_clear_error(chdir_tmp: Path, ecssd: Path) -> None:
    params = make_project(chdir_tmp, ecssd, 3, verified=lambda i: False)
    with pytest.raises(UserError, match=r"nothing to export: 0 of 3 curated items are verified by a human"):
        export.run(params)
    _set(params, "export", require_verified=False)
    assert export.run(params)["items"] == 3


def test_missing_inputs_are_clear_errors(chdir_tmp: Path, ecssd: Path) -> None:
    params = make_project(chdir_tmp, ecssd, 2)
    mask = next((chdir_tmp / "data/curated/masks").glob("*.png"))
    mask.unlink()
    with pytest.raises(UserError, match=rf"item {mask.stem}: curated mask .* is missing"):
        export.run(params)
    (chdir_tmp / "data/curated/curated.parquet").unlink()
    with pytest.raises(UserError, match="curated table not found; run `dvc repro curate`"):
        export.run(params)


def test_rle_helpers_on_hand_drawn_masks() -> None:
    m = np.zeros((5, 7), np.uint8)
    m[1:3, 2:6] = 255  # 2x4 block
    m[4, 0] = 255  # a separate island
    m[1, 3] = 0  # a hole
    rle = export.encode_rle(m)
    area, bbox = export.rle_area_bbox(rle)
    assert rle["size"] == [5, 7]
    assert area == 8.0
    assert bbox == [0.0, 1.0, 6.0, 4.0]
    from pycocotools import mask as mask_util

    decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert np.array_equal(decoded * 255, m)
    empty = export.encode_rle(np.zeros((3, 4), np.uint8))
    assert export.rle_area_bbox(empty) == (0.0, [0.0, 0.0, 0.0, 0.0])


def test_composite_mask_and_trimap_derived_by_export_equal_composes() -> None:
    from pipeline.matting.composite import CompositeParams, Transform, compose

    rng = np.random.default_rng(3)
    fg = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    a = np.zeros((24, 32), np.uint8)
    a[6:18, 8:24] = 255
    a[6:18, 8] = 90  # a soft edge: unknown band in the trimap
    for px in (0, 3):
        params = CompositeParams(trimap_px=px)
        comp, _h, _s = compose(fg, a, rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), Transform(0.9, 2, -1, True),
                               params, rng)
        mask, trimap = export.composite_mask_trimap(comp.alpha, px)
        assert np.array_equal(mask, comp.mask) and np.array_equal(trimap, comp.trimap)
        assert np.count_nonzero(trimap == 128) > 0


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_materialize_writes_what_a_full_export_writes(exported: Path, tmp_path: Path) -> None:
    root = exported / "data/export"
    listing = io.read_parquet(root / export.MATTING_TABLE)
    assert set(listing["folder"]) == {"image", "mask", "alpha", "trimap"} and len(listing) == 10 * 2 + 2 * 4
    out = tmp_path / "full"
    result = materialize(exported / "params.yaml", out)
    assert result.files == {"image": 12, "mask": 12, "alpha": 2, "trimap": 2} and result.recomputed == 2
    got = _files(out / "matting")
    assert {k: hashlib.sha256(v).hexdigest() for k, v in got.items()} == dict(
        zip(listing["path"].str.removeprefix("matting/"), listing["sha256"], strict=True))
    cid = str(io.read_parquet(exported / "data/composite/lineage.parquet")["composite_id"].iloc[1])
    alpha = _composite_alpha(exported, cid)
    assert np.array_equal(io.read_gray(out / "matting/alpha" / f"{cid}.png"), alpha)
    assert np.array_equal(io.read_trimap(out / "matting/trimap" / f"{cid}.png"), alpha)  # hard alpha: no band
    assert _files(out / "coco") == _files(root / "coco")
    # the export with every folder written (the layout before by-reference) holds exactly these matting files,
    # and the same dataset version and COCO documents
    version = io.read_json(root / "dataset.json")["version"]
    _set(exported / "params.yaml", "export", materialize=list(export.FOLDERS))
    export.run(exported / "params.yaml")
    assert _files(root / "matting") == got
    assert io.read_json(root / "dataset.json")["version"] == version and _files(root / "coco") == _files(out / "coco")


def test_materialize_refuses_changed_inputs_and_bad_requests(exported: Path, tmp_path: Path) -> None:
    params = exported / "params.yaml"
    with pytest.raises(UserError, match="inside the export folder"):
        materialize(params, exported / "data/export/full")
    with pytest.raises(UserError, match=r"unknown folder\(s\) \['alphas'\]"):
        materialize(params, tmp_path / "a", ["alphas"])
    # an upstream file changed since the export (e.g. a hand edit): the recomputed file would differ
    lineage = io.read_parquet(exported / "data/composite/lineage.parquet")
    cid, src = str(lineage["composite_id"].iloc[0]), str(lineage["item_id"].iloc[0])
    alpha_path = strip_paths(exported / "data/composite", src)[1]
    io.write_png(alpha_path, (io.read_gray(alpha_path) // 2).astype(np.uint8))
    with pytest.raises(UserError, match=rf"matting/alpha/{cid}.png recomputed from the workspace differs"):
        materialize(params, tmp_path / "b", ["alpha"])
    _set(params, "export", materialize=["image"])
    with pytest.raises(ParamsError, match="materialize must include image and mask"):
        export.run(params)


def test_training_reads_composites_from_the_strips_exactly_as_the_exported_files(exported: Path) -> None:
    """Training (``load_split``) receives the same arrays whether composites come from the composite stage's strips
    (by reference, the default) or from the files an export with every folder written holds."""
    from pipeline.dataset.splits import SPLITS
    from pipeline.learning.training import load_split

    root, comp, params = exported / "data/export", exported / "data/composite", exported / "params.yaml"
    cids = sorted(str(c) for c in io.read_parquet(comp / "lineage.parquet")["composite_id"])
    reader = ExportReader(root, comp)
    by_ref = {cid: reader.image_mask(cid) for cid in cids}
    strips = {s: load_split(root, s, 64, composite_root=comp) for s in SPLITS}
    assert sum(len(x.composites) for s in SPLITS for x in strips[s]) == len(cids) == 2
    # a missing or changed strip is an error naming the composite and the file, never other training data
    src = str(io.read_parquet(comp / "lineage.parquet")["item_id"].iloc[0])
    alpha_strip = strip_paths(comp, src)[1]
    saved = alpha_strip.read_bytes()
    io.write_png(alpha_strip, (io.read_gray(alpha_strip) // 2).astype(np.uint8))
    with pytest.raises(UserError, match=rf"composite {cids[0]}: matting/mask/{cids[0]}.png read from .*differs"):
        ExportReader(root, comp).image_mask(cids[0])
    alpha_strip.unlink()
    with pytest.raises(UserError, match=rf"composite {cids[0]}: .*{alpha_strip.name}"):
        load_split(root, "train", 64, composite_root=comp) + load_split(root, "val", 64, composite_root=comp) \
            + load_split(root, "test", 64, composite_root=comp)
    alpha_strip.write_bytes(saved)
    with pytest.raises(UserError, match=rf"{cids[0]}: .*missing from the export \(no composite folder given\)"):
        [load_split(root, s, 64) for s in SPLITS]
    # the export with every folder written: its composite files hold exactly the arrays the read path returns
    _set(params, "export", materialize=list(export.FOLDERS))
    export.run(params)
    for cid in cids:
        image = io.read_image(root / "matting/image" / f"{cid}.png")
        assert np.array_equal(image, by_ref[cid][0]) and image.dtype == by_ref[cid][0].dtype
        assert np.array_equal(io.read_mask(root / "matting/mask" / f"{cid}.png", shape=image.shape[:2]), by_ref[cid][1])
    files = {s: load_split(root, s, 64) for s in SPLITS}
    for s in SPLITS:
        assert [x.name for x in files[s]] == [x.name for x in strips[s]]
        for a, b in zip(files[s], strips[s], strict=True):
            assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
            assert len(a.composites) == len(b.composites)
            for (ai, am), (bi, bm) in zip(a.composites, b.composites, strict=True):
                assert np.array_equal(ai, bi) and np.array_equal(am, bm) and ai.dtype == bi.dtype
