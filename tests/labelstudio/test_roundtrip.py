"""Push -> annotate -> pull against the real Label Studio server, with real ECSSD photos and ground truth."""

from __future__ import annotations

import base64
import io as _io
import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests

from pipeline.annotation.brush import mask_to_rle, rle_to_mask
from pipeline.core import io
from tests.labelstudio.conftest import NAMES, TOKEN, Server, _erode

pytestmark = pytest.mark.labelstudio


def _brush_result(mask: np.ndarray) -> list[dict]:
    return [{"from_name": "mask", "to_name": "image", "type": "brushlabels", "original_width": mask.shape[1],
             "original_height": mask.shape[0],
             "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["foreground"]}}]


def _prediction_mask(task: dict) -> np.ndarray:
    (pred,) = task["predictions"]
    (res,) = pred["result"]
    return rle_to_mask(res["value"]["rle"], res["original_height"], res["original_width"])


def _receipt(root: Path) -> dict[str, str]:
    df = io.read_parquet(root / "data" / "annotation" / "receipt.parquet")
    return dict(zip(df["item_id"], df["task_id"], strict=True))


def test_push_creates_one_task_per_item_with_its_prediction(ls_server: Server, ls_project_factory) -> None:
    proj = ls_project_factory("push-basic")
    proj.run("push")
    pid = ls_server.project(proj.title)["id"]
    tasks = ls_server.tasks(pid)
    assert len(tasks) == len(NAMES)
    by_item = {t["data"]["item_id"]: t for t in tasks}
    assert set(by_item) == set(proj.gt)
    for item_id, task in by_item.items():
        assert np.array_equal(_prediction_mask(task), proj.preannotation(item_id)), item_id
        (pred,) = task["predictions"]
        assert pred["model_version"] == "test-1" and pred["score"] == pytest.approx(0.5)
        assert task["data"]["image"].startswith("/data/local-files/?d=")
    # most uncertain first: task ids increase as uncertainty decreases
    ordered = sorted(tasks, key=lambda t: t["id"])
    unc = [t["data"]["uncertainty"] for t in ordered]
    assert unc == sorted(unc, reverse=True)
    # the receipt maps every item to its task
    assert _receipt(proj.root) == {i: str(t["id"]) for i, t in by_item.items()}
    # the image is served by Label Studio through the local storage
    first = ordered[0]
    img = ls_server.api("GET", first["data"]["image"])
    assert io.decode_image_bytes(img.content).shape[:2] == proj.gt[first["data"]["item_id"]].shape
    # idempotent: a second push changes nothing
    out = proj.run("push")
    assert "0 new, 0 updated, 10 unchanged" in " ".join(out.stderr.split()) + " ".join(out.stdout.split())
    assert len(ls_server.tasks(pid)) == len(NAMES)
    report = json.loads((proj.root / "reports" / "push.json").read_text())
    assert report["unchanged"] == len(NAMES) and report["server_version"] == "1.23.2"


def test_repush_after_three_changed_preannotations_replaces_three_predictions(
        ls_server: Server, ls_project_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = ls_project_factory("push-changed")
    proj.run("push")
    pid = ls_server.project(proj.title)["id"]
    before = {t["data"]["item_id"]: t for t in ls_server.tasks(pid)}
    changed = sorted(proj.gt)[:3]
    for item_id in changed:
        proj.set_preannotation(item_id, _erode(proj.gt[item_id], 6))
    proj.run("push")
    after = {t["data"]["item_id"]: t for t in ls_server.tasks(pid)}
    assert len(after) == len(NAMES)
    assert {i: t["id"] for i, t in after.items()} == {i: t["id"] for i, t in before.items()}
    for item_id, task in after.items():
        assert len(task["predictions"]) == 1
        assert np.array_equal(_prediction_mask(task), proj.preannotation(item_id)), item_id
        same = task["predictions"][0]["id"] == before[item_id]["predictions"][0]["id"]
        assert same == (item_id not in changed), item_id
    report = json.loads((proj.root / "reports" / "push.json").read_text())
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 3, len(NAMES) - 3)
    # an item that left the dataset is reported, its task kept (and marked when archive_removed is on)
    from pipeline.annotation.configured import read_receipt
    from pipeline.annotation.labelstudio import make_backend
    from pipeline.core.params import load_paths
    from pipeline.stages.push import build_push_items

    paths = load_paths(proj.params)
    paths = paths.__class__(**{k: proj.root / v for k, v in paths.__dict__.items()})
    items = build_push_items(paths)
    settings = {"url": ls_server.url, "project_title": proj.title, "document_root": str(ls_server.document_root),
                "archive_removed": True}
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    backend = make_backend(settings, paths)
    gone = items[0].item_id
    out = backend.push(items[1:], read_receipt(paths.annotation / "receipt.parquet"))
    assert out.removed == (gone,) and out.unchanged == len(NAMES) - 1
    assert {r.item_id: r.status for r in out.receipt}[gone] == "removed"
    tasks = {t["data"]["item_id"]: t for t in ls_server.tasks(pid)}
    assert len(tasks) == len(NAMES) and tasks[gone]["data"]["removed"] is True
    assert len(tasks[gone]["predictions"]) == 1


def test_annotations_pull_back_pixel_identical_and_exports_agree(ls_server: Server, ls_project_factory) -> None:
    proj = ls_project_factory("pull-roundtrip")
    proj.run("push")
    pid = ls_server.project(proj.title)["id"]
    task_of = _receipt(proj.root)
    by_name = {name: item_id for item_id, name in proj.names.items()}
    second = ls_server.api("POST", "/api/users", json={"email": "annotator2@example.com", "username": "annotator2",
                                                       "password": "annotator2-pass"}).json()["id"]
    submitted = ["0002", "0005", "0018", "0026", "0034", "0001"]
    for name in submitted:
        item = by_name[name]
        ls_server.api("POST", f"/api/tasks/{task_of[item]}/annotations",
                      json={"result": _brush_result(proj.gt[item]), "lead_time": 20.0})
    # two annotators on 0003: the first is sloppy, the second (newer) is right
    two = by_name["0003"]
    ls_server.api("POST", f"/api/tasks/{task_of[two]}/annotations",
                  json={"result": _brush_result(_erode(proj.gt[two], 8)), "lead_time": 5.0})
    time.sleep(0.05)
    ls_server.api("POST", f"/api/tasks/{task_of[two]}/annotations",
                  json={"result": _brush_result(proj.gt[two]), "completed_by": second, "lead_time": 7.0})
    # a ground-truth flag wins over a newer annotation (0004)
    gt_item = by_name["0004"]
    gt_ann = ls_server.api("POST", f"/api/tasks/{task_of[gt_item]}/annotations",
                           json={"result": _brush_result(proj.gt[gt_item])}).json()
    ls_server.api("PATCH", f"/api/annotations/{gt_ann['id']}", json={"ground_truth": True})
    ls_server.api("POST", f"/api/tasks/{task_of[gt_item]}/annotations",
                  json={"result": _brush_result(_erode(proj.gt[gt_item], 5)), "completed_by": second})
    # a draft (0006) and a skipped task (0007) are not corrections
    ls_server.api("POST", f"/api/tasks/{task_of[by_name['0006']]}/drafts",
                  json={"result": _brush_result(proj.gt[by_name["0006"]]), "lead_time": 3.0})
    ls_server.api("POST", f"/api/tasks/{task_of[by_name['0007']]}/annotations", json={"result": [], "was_cancelled": True})

    proj.run("pull")
    table = io.read_parquet(proj.root / "data" / "corrections" / "corrections.parquet").set_index("item_id")
    expected = {by_name[n] for n in [*submitted, "0003", "0004"]}
    assert set(table.index) == expected
    for item_id in expected:
        got = io.read_mask(proj.root / "data" / "corrections" / "masks" / f"{item_id}.png")
        assert np.array_equal(got, proj.gt[item_id]), proj.names[item_id]
    row = table.loc[two]
    assert row["n_annotations"] == 2 and row["annotator"] == "annotator2@example.com"
    assert 0.0 < row["disagreement_iou"] < 1.0
    assert bool(table.loc[gt_item, "ground_truth"]) and table.loc[gt_item, "n_annotations"] == 2
    assert table.loc[by_name["0002"], "lead_time"] == pytest.approx(20.0)
    assert table.loc[by_name["0002"], "task_id"] == task_of[by_name["0002"]]
    report = json.loads((proj.root / "reports" / "pull.json").read_text())
    assert report["skipped"] == {"cancelled": 1, "draft": 1}
    assert report["disagreements"] == 2
    # pulling again writes nothing new
    proj.run("pull")
    assert json.loads((proj.root / "reports" / "pull.json").read_text())["written"] == 0

    # the files backend on real exports gives the same masks
    exports = proj.root / "data" / "annotation" / "exports"
    exports.mkdir(parents=True)
    (exports / "project.json").write_bytes(
        ls_server.api("GET", f"/api/projects/{pid}/export", params={"exportType": "JSON"}).content)
    png_zip = ls_server.api("GET", f"/api/projects/{pid}/export", params={"exportType": "BRUSH_TO_PNG"}).content
    assert zipfile.is_zipfile(_io.BytesIO(png_zip))
    for fmt, payload in (("json", None), ("png", png_zip)):
        other = proj.root.parent / f"files-{fmt}"
        other.mkdir()
        (other / "params.yaml").write_text(
            proj.params.read_text().replace("  backend: labelstudio ", "  backend: files ", 1)
            .replace("folder: data/annotation/exports", f"folder: {other / 'exports'}", 1))
        (other / "exports").mkdir()
        if payload is None:
            (other / "exports" / "project.json").write_bytes((exports / "project.json").read_bytes())
        else:
            (other / "exports" / "project.zip").write_bytes(payload)
        for sub in ("ingest", "annotation"):
            dest = other / "data" / sub
            dest.mkdir(parents=True)
            for f in (proj.root / "data" / sub).glob("*.parquet"):
                (dest / f.name).write_bytes(f.read_bytes())
        proj_files = proj.__class__(root=other, title=proj.title, gt=proj.gt, names=proj.names)
        proj_files.run("pull")
        ftable = io.read_parquet(other / "data" / "corrections" / "corrections.parquet").set_index("item_id")
        # BRUSH_TO_PNG carries no ground-truth flag: there the newest annotation of 0004 wins instead
        compare = expected if fmt == "json" else expected - {gt_item}
        assert compare <= set(ftable.index), fmt
        for item_id in compare:
            a = io.read_mask(other / "data" / "corrections" / "masks" / f"{item_id}.png")
            b = io.read_mask(proj.root / "data" / "corrections" / "masks" / f"{item_id}.png")
            assert np.array_equal(a, b), (fmt, proj.names[item_id])
            assert ftable.loc[item_id, "task_id"] == table.loc[item_id, "task_id"]
        assert ftable.loc[two, "n_annotations"] == 2


def test_server_stopped_mid_push_fails_clearly_then_repush_completes(ls_server: Server, ls_project_factory) -> None:
    proj = ls_project_factory("push-interrupted", chunk_size=1, max_retries=2, backoff_s=0.2)
    result: dict[str, object] = {}

    def push() -> None:
        result["proc"] = proj.run("push", check=False)

    thread = threading.Thread(target=push)
    thread.start()
    pid = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            rows = ls_server.api("GET", "/api/projects", params={"page_size": 1000}).json()["results"]
            match = [p for p in rows if p["title"] == proj.title]
            if match:
                pid = match[0]["id"]
                if len(ls_server.tasks(pid)) >= 2:
                    break
        except requests.RequestException:  # polling a busy server
            pass
        time.sleep(0.05)
    ls_server.stop()
    thread.join(timeout=120)
    ls_server.start()
    proc = result["proc"]
    assert proc.returncode == 1, proc.stdout + proc.stderr  # type: ignore[attr-defined]
    err = " ".join((proc.stderr + proc.stdout).split())  # type: ignore[attr-defined]
    assert "is unreachable" in err and "failed 3 times" in err, err
    assert "retry 1/2" in err and "retry 2/2" in err, err
    assert pid is not None
    assert 2 <= len(ls_server.tasks(pid)) < len(NAMES)
    proj.run("push")
    tasks = ls_server.tasks(pid)
    items = [t["data"]["item_id"] for t in tasks]
    assert len(tasks) == len(NAMES) and sorted(items) == sorted(proj.gt)
    assert all(len(t["predictions"]) == 1 for t in tasks)
    assert len(_receipt(proj.root)) == len(NAMES)


def test_wrong_token_gives_a_clear_authentication_error(ls_server: Server, ls_project_factory) -> None:
    proj = ls_project_factory("push-bad-token", names=("0001",))
    bad = "not-the-right-token-7781"
    proc = proj.run("push", check=False, token=bad)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1
    assert "rejected the API token" in out and "LABEL_STUDIO_API_KEY" in out, out
    assert bad not in out and "Traceback" not in out
    assert not (proj.root / "data" / "annotation" / "receipt.parquet").exists()


@pytest.mark.parametrize("mode", ["upload", "data-uri"])
def test_images_uploaded_or_embedded_instead_of_local_storage(ls_server: Server, ls_project_factory, mode: str) -> None:
    proj = ls_project_factory(f"images-{mode}", names=("0005", "0018"))
    proj.params.write_text(proj.params.read_text().replace("image_mode: local", f"image_mode: {mode}", 1))
    proj.run("push")
    tasks = ls_server.tasks(ls_server.project(proj.title)["id"])
    assert len(tasks) == 2
    for task in tasks:
        image = task["data"]["image"]
        item = task["data"]["item_id"]
        if mode == "upload":
            assert image.startswith("/data/upload/") and image.endswith(f"{item}.jpg")
            content = ls_server.api("GET", image).content
        else:
            assert image.startswith("data:image/jpeg;base64,")
            content = base64.b64decode(image.split(",", 1)[1])
        assert io.decode_image_bytes(content).shape[:2] == proj.gt[item].shape
        assert np.array_equal(_prediction_mask(task), proj.preannotation(item))
    if mode != "upload":
        return
    proj.set_preannotation(sorted(proj.gt)[0], _erode(proj.gt[sorted(proj.gt)[0]], 5))
    proj.run("push")  # a changed prediction keeps the task's image
    after = {t["id"]: t["data"]["image"] for t in ls_server.tasks(ls_server.project(proj.title)["id"])}
    assert after == {t["id"]: t["data"]["image"] for t in tasks}
