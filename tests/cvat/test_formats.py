"""CVAT XML / COCO / Segmentation-mask exports written by hand in the documented formats from real ground truth,
read back pixel-identical; malformed files give errors naming the file and the element."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from cvat_sdk import masks as sdk
from pycocotools import mask as coco_mask

from pipeline.annotation.files import FORMATS, ReadOptions, get_format, sniff_format
from pipeline.annotation.formats_coco import COCO
from pipeline.annotation.formats_cvat import CVAT_XML, Shape, iso_utc, mask_from_shapes, shapes_from_api
from pipeline.annotation.formats_segmask import SEGMASK, parse_labelmap
from pipeline.core.params import Paths

ITEM = "0123456789abcdef"


def _xml_mask_element(mask: np.ndarray, label: str = "foreground") -> str:
    pts = sdk.encode_mask(mask > 0)  # the reference encoder
    *runs, x1, y1, x2, y2 = pts
    rle = ", ".join(str(r) for r in runs)
    return (f'<mask label="{label}" source="manual" occluded="0" rle="{rle}" left="{x1}" top="{y1}" '
            f'width="{x2 - x1 + 1}" height="{y2 - y1 + 1}" z_order="0"></mask>')


def _xml(images: list[str], labels: tuple[str, ...] = ("foreground", "other"), meta_extra: str = "") -> str:
    label_xml = "".join(f"<label><name>{n}</name><color>#ff0000</color><type>any</type></label>" for n in labels)
    return ('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n'
            f'  <meta><task><id>42</id><name>t</name><created>2026-11-01 10:00:00.000000+01:00</created>'
            f'<updated>2026-11-02 12:30:00.500000+00:00</updated>{meta_extra}'
            f'<labels>{label_xml}</labels></task></meta>\n' + "\n".join(images) + "\n</annotations>\n")


def _image(frame: int, name: str, mask: np.ndarray, body: str) -> str:
    h, w = mask.shape
    return f'  <image id="{frame}" name="{name}" width="{w}" height="{h}">{body}</image>'


def test_cvat_xml_masks_round_trip_pixel_identical(tmp_path: Path, gt_masks: dict[str, np.ndarray]) -> None:
    names = sorted(gt_masks)
    images = [_image(i, f"{ITEM[:-2]}{i:02d}.jpg", gt_masks[n], _xml_mask_element(gt_masks[n]))
              for i, n in enumerate(names)]
    path = tmp_path / "annotations.xml"
    path.write_text(_xml(images, meta_extra="<assignee><username>alice</username></assignee>"), encoding="utf-8")
    assert sniff_format(path) is CVAT_XML
    anns = list(CVAT_XML.read(path, ReadOptions()))
    assert [a.item_id for a in anns] == [f"{ITEM[:-2]}{i:02d}" for i in range(len(names))]
    for a, n in zip(anns, names, strict=True):
        assert np.array_equal(a.mask, gt_masks[n]), n
        assert a.annotator == "alice" and a.task_id == "42"
        assert a.created_at == "2026-11-01T09:00:00.000000Z" and a.updated_at == "2026-11-02T12:30:00.500000Z"


def test_cvat_xml_in_export_zip_with_polygons_boxes_and_label_filter(tmp_path: Path,
                                                                     gt_masks: dict[str, np.ndarray]) -> None:
    gt = gt_masks["0034"]
    contours, _ = cv2.findContours((gt > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polys = "".join(
        '<polygon label="foreground" source="manual" occluded="0" points="'
        + ";".join(f"{x:.2f},{y:.2f}" for x, y in c.reshape(-1, 2)) + '" z_order="0"></polygon>'
        for c in contours if len(c) >= 3)
    box = '<box label="foreground" occluded="0" xtl="2.00" ytl="3.00" xbr="12.00" ybr="8.00" z_order="0"></box>'
    other = _xml_mask_element(np.ones_like(gt), label="other")  # not counted when labels=("foreground",)
    images = [_image(0, "IMG_0034.jpg", gt, polys + other), _image(1, "plain.jpg", gt, box)]
    zpath = tmp_path / "task_42-cvat.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("annotations.xml", _xml(images))
    assert sniff_format(zpath) is CVAT_XML
    a, b = list(CVAT_XML.read(zpath, ReadOptions(labels=("foreground",))))
    assert a.item_id == "" and a.image_name == "IMG_0034.jpg" and a.task_id == "42"
    # filled outer contours: the object's outline is kept exactly, holes are filled (polygons cannot hold holes)
    filled = np.zeros_like(gt)
    cv2.drawContours(filled, contours, -1, 255, thickness=cv2.FILLED)
    assert np.array_equal(a.mask, filled)
    expected = np.zeros_like(gt)
    expected[3:8, 2:12] = 255
    assert np.array_equal(b.mask, expected)
    # every label counted: the full-frame "other" mask dominates
    a_all = next(iter(CVAT_XML.read(zpath, ReadOptions())))
    assert (a_all.mask == 255).all()


def test_unannotated_frames_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(_xml(['  <image id="0" name="x.jpg" width="4" height="3"></image>']), encoding="utf-8")
    assert list(CVAT_XML.read(path, ReadOptions())) == []


def test_mask_box_exceeding_the_frame_is_clipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a 4x3 box at left=3, top=1 on a 5x3 frame: columns 5..6 and row 3 are outside
    body = '<mask label="foreground" rle="0, 12" left="3" top="1" width="4" height="3"></mask>'
    path = tmp_path / "a.xml"
    path.write_text(_xml([f'  <image id="0" name="{ITEM}.png" width="5" height="3">{body}</image>']), encoding="utf-8")
    (a,) = list(CVAT_XML.read(path, ReadOptions()))
    expected = np.zeros((3, 5), np.uint8)
    expected[1:3, 3:5] = 255
    assert np.array_equal(a.mask, expected)
    assert "exceeds the 5x3 frame" in caplog.text


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ('<image id="0" name="a.jpg" width="4" height="3"><mask label="foreground" rle="1, x" left="0" top="0" '
         'width="1" height="1"/></image>', "rle is not a list of integers"),
        ('<image id="0" name="a.jpg" width="4" height="3"><mask label="foreground" rle="5" left="0" top="0" '
         'width="1" height="1"/></image>', "does not match"),
        ('<image id="0" name="a.jpg" width="4" height="3"><mask label="foreground" rle="1" top="0" '
         'width="1" height="1"/></image>', "lacks attribute 'left'"),
        ('<image id="0" name="a.jpg" width="4" height="3"><mask label="foreground" left="0" top="0" '
         'width="1" height="1"/></image>', "no rle"),
        ('<image id="0" name="a.jpg" width="4" height="3"><polygon label="foreground" points="1,1;a,2"/></image>',
         "bad points"),
        ('<image id="0" name="a.jpg" width="4" height="3"><polygon label="foreground" points="1,1;2,2"/></image>',
         "bad polygon"),
        ('<image id="0" name="a.jpg" width="4" height="3"><box label="foreground" xtl="a" ytl="0" xbr="1" '
         'ybr="1"/></image>', "not a number"),
        ('<image id="0" name="a.jpg" width="4" height="3"><box xtl="0" ytl="0" xbr="1" ybr="1"/></image>',
         "has no label"),
        ('<image id="0" width="4" height="3"><box label="foreground" xtl="0" ytl="0" xbr="1" ybr="1"/></image>',
         "has no name"),
        ('<image id="0" name="a.jpg" width="x" height="3"></image>', "integer width and height"),
        ('<track id="0" label="foreground"></track>', "CVAT for video"),
    ],
)
def test_malformed_cvat_xml(tmp_path: Path, images: str, message: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(_xml([images]), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        list(CVAT_XML.read(path, ReadOptions()))
    assert "bad.xml" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<annotations><image", "not well-formed"),
        ("<root></root>", "expected <annotations>"),
        ('<!DOCTYPE x [<!ENTITY a "aaaa">]><annotations/>', "DOCTYPE"),
    ],
)
def test_broken_xml_documents(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        list(CVAT_XML.read(path, ReadOptions()))


def test_unknown_foreground_label_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(_xml([]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"none of the foreground labels \['person'\] exists"):
        list(CVAT_XML.read(path, ReadOptions(labels=("person",))))


def test_bad_zip(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"PK\x03\x04 not really")
    for reader in (CVAT_XML, COCO, SEGMASK):
        assert not reader.sniff(path)
        with pytest.raises(ValueError, match="not a valid zip"):
            list(reader.read(path, ReadOptions()))
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "x")
    with pytest.raises(ValueError, match=r"no annotations\.xml"):
        list(CVAT_XML.read(empty, ReadOptions()))
    with pytest.raises(ValueError, match=r"no annotations/instances"):
        list(COCO.read(empty, ReadOptions()))
    with pytest.raises(ValueError, match=r"no labelmap\.txt"):
        list(SEGMASK.read(empty, ReadOptions()))


def test_api_shapes_union_per_label_with_rotation_and_ellipse() -> None:
    h, w = 20, 30
    m = np.zeros((h, w), bool)
    m[2:6, 3:9] = True
    m[3:5, 5:7] = False  # hole
    shapes = shapes_from_api([
        {"type": "mask", "label_id": 1, "points": sdk.encode_mask(m)},
        {"type": "ellipse", "label_id": 1, "points": [20, 10, 23, 8]},
        {"type": "rectangle", "label_id": 1, "points": [10, 12, 14, 16], "rotation": 45},
        {"type": "polyline", "label_id": 1, "points": [0, 0, 5, 5]},
        {"type": "mask", "label_id": 2, "points": sdk.encode_mask(np.ones((h, w), bool))},
    ], {1: "foreground", 2: "background-ish"})
    assert [s.label for s in shapes][-1] == "background-ish"
    out = mask_from_shapes(shapes, h, w, ("foreground",), "t")
    assert out is not None and out.dtype == np.uint8
    fg = out > 0
    assert np.array_equal(fg[:7, :10], m[:7, :10])          # hole survives
    assert fg[10, 20] and fg[10, 22] and fg[8, 20] and not fg[10, 24]  # ellipse rx=3, ry=2
    assert fg[14, 12] and not fg[12, 10]                      # rotated square loses its corners
    assert mask_from_shapes([Shape("points", "foreground", (1, 1))], h, w, (), "t") is None
    with pytest.raises(ValueError, match="invalid frame size"):
        mask_from_shapes([], 0, 3, (), "t")
    with pytest.raises(ValueError, match="no label_id"):
        shapes_from_api([{"type": "mask", "points": [1, 0, 0, 0, 0]}], {})


def test_iso_utc() -> None:
    assert iso_utc("2026-01-02T03:04:05Z") == "2026-01-02T03:04:05.000000Z"
    assert iso_utc("2026-01-02 03:04:05") == "2026-01-02T03:04:05.000000Z"
    assert iso_utc("") == "" and iso_utc("yesterday") == ""


# --------------------------------------------------------------------------- COCO


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    flat = (mask > 0).T.ravel()  # column-major
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(edges).tolist()
    return [0, *counts] if flat[0] else counts


def _coco_doc(gt_masks: dict[str, np.ndarray]) -> dict:
    images, anns = [], []
    for i, (_name, m) in enumerate(sorted(gt_masks.items()), 1):
        h, w = m.shape
        images.append({"id": i, "file_name": f"{ITEM[:-2]}{i:02d}.jpg", "height": h, "width": w})
        if i % 2:
            seg = {"size": [h, w], "counts": _uncompressed_counts(m)}
        else:
            rle = coco_mask.encode(np.asfortranarray((m > 0).astype(np.uint8)))
            seg = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
        anns.append({"id": i, "image_id": i, "category_id": 1, "segmentation": seg, "iscrowd": 1, "area": 0,
                     "bbox": [0, 0, 0, 0]})
    # an extra polygon part on image 1 and an annotation of another category (not counted)
    anns.append({"id": 100, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
                 "iscrowd": 0})
    anns.append({"id": 101, "image_id": 2, "category_id": 2, "segmentation": [[0, 0, 50, 0, 50, 50]],
                 "iscrowd": 0})
    return {"licenses": [], "info": {}, "categories": [{"id": 1, "name": "foreground"}, {"id": 2, "name": "tree"}],
            "images": images, "annotations": anns}


def test_coco_rle_and_polygons_pixel_identical(tmp_path: Path, gt_masks: dict[str, np.ndarray]) -> None:
    doc = _coco_doc(gt_masks)
    path = tmp_path / "instances_default.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert sniff_format(path) is COCO
    anns = list(COCO.read(path, ReadOptions(labels=("foreground",))))
    assert len(anns) == len(gt_masks)
    for i, (a, (name, m)) in enumerate(zip(anns, sorted(gt_masks.items()), strict=True), 1):
        expected = m.copy()
        if i == 1:
            poly = coco_mask.decode(coco_mask.frPyObjects([[0, 0, 10, 0, 10, 10, 0, 10]], *m.shape))[:, :, 0]
            expected[poly > 0] = 255
        assert a.item_id == f"{ITEM[:-2]}{i:02d}"
        assert np.array_equal(a.mask, expected), name
    # zipped like CVAT's COCO 1.0 export
    zpath = tmp_path / "coco.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("annotations/instances_default.json", json.dumps(doc))
    assert sniff_format(zpath) is COCO
    assert len(list(COCO.read(zpath, ReadOptions(labels=("foreground",))))) == len(gt_masks)
    # counting every category adds the tree triangle to image 2
    all_anns = {a.item_id: a for a in COCO.read(path, ReadOptions())}
    assert all_anns[f"{ITEM[:-2]}02"].mask[5, 40] == 255


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("images"), "'images' and 'annotations' lists"),
        (lambda d: d["categories"].append({"id": "x"}), "bad category"),
        (lambda d: d["images"][0].pop("height"), "needs id, width, height"),
        (lambda d: d["images"][0].update(file_name=""), "has no file_name"),
        (lambda d: d["images"][0].update(width=0), "invalid size"),
        (lambda d: d["annotations"][0].update(image_id=999), "not in 'images'"),
        (lambda d: d["annotations"][0].update(category_id=7), "category 7 is not in"),
        (lambda d: d["annotations"][0].pop("category_id"), "integer image_id and category_id"),
        (lambda d: d["annotations"][0]["segmentation"].update(size=[1, 1]), "differs from the image size"),
        (lambda d: d["annotations"][0]["segmentation"]["counts"].append(5), "counts sum to"),
        (lambda d: d["annotations"][0]["segmentation"].update(counts=[-1]), "non-negative"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3]]), "even number"),
        (lambda d: d["annotations"][0].update(segmentation=[1, 2, 3, 4, 5, 6]), "list of coordinate lists"),
        (lambda d: d["annotations"][0].update(segmentation="x"), "unsupported segmentation"),
        (lambda d: d["annotations"].append(3), "must be objects"),
    ],
)
def test_malformed_coco(tmp_path: Path, gt_masks: dict[str, np.ndarray], mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    doc = _coco_doc(gt_masks)
    mutate(doc)
    path = tmp_path / "instances_bad.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        list(COCO.read(path, ReadOptions()))
    assert "instances_bad.json" in str(info.value)


def test_coco_not_json_and_unknown_label(tmp_path: Path, gt_masks: dict[str, np.ndarray]) -> None:
    path = tmp_path / "instances.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        list(COCO.read(path, ReadOptions()))
    path.write_text(json.dumps(_coco_doc(gt_masks)), encoding="utf-8")
    with pytest.raises(ValueError, match="none of the foreground labels"):
        list(COCO.read(path, ReadOptions(labels=("cat",))))


# --------------------------------------------------------------------------- Segmentation mask 1.1


def _write_segmask(root: Path, gt_masks: dict[str, np.ndarray]) -> None:
    (root / "SegmentationClass").mkdir(parents=True)
    (root / "SegmentationObject").mkdir()
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                       "foreground:250,50,83::\nshadow:10,20,30::\n", encoding="utf-8")
    for i, (_, m) in enumerate(sorted(gt_masks.items()), 1):
        rgb = np.zeros((*m.shape, 3), np.uint8)
        rgb[m > 0] = (250, 50, 83)
        rgb[:3, :3] = (10, 20, 30)  # a "shadow" corner
        cv2.imwrite(str(root / "SegmentationClass" / f"{ITEM[:-2]}{i:02d}.png"), rgb[:, :, ::-1])
    blank = np.zeros((5, 5, 3), np.uint8)
    cv2.imwrite(str(root / "SegmentationClass" / "unannotated.png"), blank)


def test_segmask_folder_and_zip(tmp_path: Path, gt_masks: dict[str, np.ndarray]) -> None:
    root = tmp_path / "segmask"
    _write_segmask(root, gt_masks)
    assert sniff_format(root) is SEGMASK
    anns = list(SEGMASK.read(root, ReadOptions(labels=("foreground",))))
    assert len(anns) == len(gt_masks)  # the blank image is skipped
    for i, (a, (name, m)) in enumerate(zip(anns, sorted(gt_masks.items()), strict=True), 1):
        assert a.item_id == f"{ITEM[:-2]}{i:02d}"
        assert np.array_equal(a.mask, m), name
    # default: every label but background -> the shadow corner counts
    first = next(iter(SEGMASK.read(root, ReadOptions())))
    assert (first.mask[:3, :3] == 255).all()
    zpath = tmp_path / "seg.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    assert sniff_format(zpath) is SEGMASK
    zanns = list(SEGMASK.read(zpath, ReadOptions(labels=("foreground",))))
    assert [a.item_id for a in zanns] == [a.item_id for a in anns]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(zanns, anns, strict=True))


def test_segmask_errors(tmp_path: Path, gt_masks: dict[str, np.ndarray]) -> None:
    root = tmp_path / "segmask"
    _write_segmask(root, {"0002": gt_masks["0002"]})
    odd = np.zeros((4, 4, 3), np.uint8)
    odd[0, 0] = (1, 2, 3)
    cv2.imwrite(str(root / "SegmentationClass" / "odd.png"), odd[:, :, ::-1])
    with pytest.raises(ValueError, match=r"odd.png: 1 colour\(s\) not in labelmap.txt: \(1,2,3\)"):
        list(SEGMASK.read(root, ReadOptions()))
    (root / "SegmentationClass" / "odd.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"odd\.png: cannot decode"):
        list(SEGMASK.read(root, ReadOptions()))
    with pytest.raises(ValueError, match="none of the foreground labels"):
        list(SEGMASK.read(root, ReadOptions(labels=("cat",))))
    (root / "labelmap.txt").unlink()
    with pytest.raises(ValueError, match=r"no labelmap\.txt"):
        list(SEGMASK.read(root, ReadOptions()))
    with pytest.raises(ValueError, match="expected 'label:r,g,b"):
        parse_labelmap("justaname\n", "lm")
    with pytest.raises(ValueError, match="is not r,g,b"):
        parse_labelmap("a:1,2::\n", "lm")
    with pytest.raises(ValueError, match="is not r,g,b"):
        parse_labelmap("a:x,2,3::\n", "lm")
    with pytest.raises(ValueError, match="no labels"):
        parse_labelmap("# only a comment\n", "lm")


def test_formats_are_registered() -> None:
    assert get_format("cvat-xml") is CVAT_XML and get_format("coco") is COCO and get_format("cvat-segmask") is SEGMASK
    assert {"cvat-xml", "coco", "cvat-segmask"} <= set(FORMATS)


def test_files_backend_pulls_a_folder_of_cvat_exports(tmp_path: Path, gt_masks: dict[str, np.ndarray]) -> None:
    """The offline journey: XML, COCO and segmentation-mask exports dropped in one folder, sniffed and pulled."""
    from pipeline.annotation.files import make_backend

    folder = tmp_path / "exports"
    folder.mkdir()
    names = sorted(gt_masks)
    # XML: items 01..02; COCO: item 03; segmask: item 04 and a second annotation of item 01 (older task export)
    xml_images = [_image(i, f"{ITEM[:-2]}{i:02d}.jpg", gt_masks[names[i - 1]], _xml_mask_element(gt_masks[names[i - 1]]))
                  for i in (1, 2)]
    (folder / "task_1_annotations.xml").write_text(_xml(xml_images), encoding="utf-8")
    m3 = gt_masks[names[2]]
    rle = coco_mask.encode(np.asfortranarray((m3 > 0).astype(np.uint8)))
    coco = {"categories": [{"id": 1, "name": "foreground"}],
            "images": [{"id": 1, "file_name": f"{ITEM[:-2]}03.jpg", "height": m3.shape[0], "width": m3.shape[1]}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1,
                             "segmentation": {"size": list(m3.shape), "counts": rle["counts"].decode("ascii")}}]}
    (folder / "instances_default.json").write_text(json.dumps(coco), encoding="utf-8")
    _write_segmask(folder / "segmask", {names[3]: gt_masks[names[3]]})
    (folder / "notes.txt").write_text("not an export", encoding="utf-8")
    backend = make_backend({"folder": str(folder), "labels": ["foreground"]}, Paths(manifest=tmp_path / "none.parquet"))
    outcome = backend.pull([])
    got = {c.item_id: c for c in outcome.corrections}
    assert sorted(got) == [f"{ITEM[:-2]}{i:02d}" for i in (1, 2, 3)]
    # the segmask export's only PNG is named ...01 too: item 01 has two annotations; the XML one is newer
    # (it carries times, the segmask export none) and wins
    for i in (1, 2, 3):
        assert np.array_equal(got[f"{ITEM[:-2]}{i:02d}"].mask, gt_masks[names[i - 1]])
    assert got[f"{ITEM[:-2]}01"].n_annotations == 2 and got[f"{ITEM[:-2]}02"].n_annotations == 1
    assert got[f"{ITEM[:-2]}03"].source.endswith("instances_default.json")
    assert outcome.problems == ()


def test_remaining_shape_errors(tmp_path: Path) -> None:
    from pipeline.annotation.formats_cvat import decode_mask_clipped, shape_to_mask

    with pytest.raises(ValueError, match="inverted"):
        decode_mask_clipped([1, 3, 0, -2, 0], 3, 3, "w")  # x2 < x1, outside the frame
    with pytest.raises(ValueError, match="ellipse needs 4"):
        shape_to_mask(Shape("ellipse", "f", (1, 2, 3)), 5, 5)
    with pytest.raises(ValueError, match="covers no area"):
        shape_to_mask(Shape("points", "f", (1, 2)), 5, 5)
    for body, message in (
        ('<box label="foreground" xtl="inf" ytl="0" xbr="1" ybr="1"/>', "not finite"),
        ('<mask label="foreground" rle="1" left="0" top="0" width="0" height="1"/>', "box is 0x1"),
    ):
        path = tmp_path / "bad.xml"
        path.write_text(_xml([f'<image id="0" name="a.jpg" width="4" height="3">{body}</image>']), encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            list(CVAT_XML.read(path, ReadOptions()))


def test_remaining_coco_and_segmask_errors(tmp_path: Path, gt_masks: dict[str, np.ndarray]) -> None:
    for seg, message in (({"size": [2, 2]}, "needs 'size'"), ({"size": [2, 2], "counts": 5}, "list or a string")):
        doc = {"categories": [{"id": 1, "name": "foreground"}],
               "images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 2}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": seg}]}
        path = tmp_path / "instances.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            list(COCO.read(path, ReadOptions()))
    root = tmp_path / "seg"
    root.mkdir()
    (root / "labelmap.txt").write_text("background:0,0,0::\nforeground:1,2,3::\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no SegmentationClass/ folder"):
        list(SEGMASK.read(root, ReadOptions()))
    (root / "SegmentationClass").mkdir()
    cv2.imwrite(str(root / "SegmentationClass" / "deep.png"), np.zeros((3, 3, 3), np.uint16))
    with pytest.raises(ValueError, match="expected an 8-bit RGB class image"):
        list(SEGMASK.read(root, ReadOptions()))
