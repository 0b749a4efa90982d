"""Round trip against a REAL CVAT server (marked ``cvat``): runs whenever CVAT_URL, CVAT_USERNAME and
CVAT_PASSWORD are set, skips with that reason otherwise. See docs/cvat.md for starting a server.

Covers: push of real ECSSD photos in several tasks, annotations set through the API with ground-truth masks
(holes, several parts), pull of completed jobs pixel-identical to the ground truth, re-push idempotence
(no new task; a changed pre-annotation replaces the shapes of untouched frames only), and import of the same
task's CVAT XML / COCO / Segmentation mask exports through the files backend readers.
"""

from __future__ import annotations

import os
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.annotation.base import PushItem
from pipeline.annotation.cvat import CvatBackend, CvatConnection, CvatParams
from pipeline.annotation.files import ReadOptions
from pipeline.annotation.formats_coco import COCO
from pipeline.annotation.formats_cvat import CVAT_XML
from pipeline.annotation.formats_segmask import SEGMASK
from pipeline.core import io
from pipeline.core.items import item_id_for_bytes

pytestmark = pytest.mark.cvat

NEEDED = ("CVAT_URL", "CVAT_USERNAME", "CVAT_PASSWORD")
PHOTOS = ("0002", "0005", "0018", "0026", "0034")  # holes and several parts (see conftest)


@pytest.fixture(scope="module")
def cvat_env() -> dict[str, str]:
    missing = [n for n in NEEDED if not os.environ.get(n)]
    if missing:
        pytest.skip(f"no CVAT server configured: set {', '.join(missing)} (see docs/cvat.md)")
    return {n: os.environ[n] for n in NEEDED}


@pytest.fixture(scope="module")
def backend(cvat_env: dict[str, str]) -> Iterator[CvatBackend]:
    params = CvatParams(url=cvat_env["CVAT_URL"], project_name=f"maskloop-test-{uuid.uuid4().hex[:8]}",
                        labels=("foreground", "other"), foreground_labels=("foreground",), task_size=2,
                        max_retries=2, backoff_s=0.5)
    conn = CvatConnection(params, cvat_env["CVAT_USERNAME"], cvat_env["CVAT_PASSWORD"])
    b = CvatBackend(params, conn)
    yield b
    project = b.find_project()
    if project is not None:
        project.remove()
    conn.close()


def _items(ecssd: Path, tmp: Path, version: str = "v1") -> tuple[list[PushItem], dict[str, np.ndarray]]:
    items, gts = [], {}
    for i, name in enumerate(PHOTOS):
        image = ecssd / "images" / f"{name}.jpg"
        gt = io.read_mask(ecssd / "masks" / f"{name}.png")
        pre = cv2.erode(gt, np.ones((9, 9), np.uint8))  # a plausible, imperfect pre-annotation
        if version != "v1":
            pre = cv2.dilate(gt, np.ones((5, 5), np.uint8))
        mask_path = tmp / version / f"{name}.png"
        io.write_png(mask_path, pre)
        h, w = gt.shape
        item_id = item_id_for_bytes(image.read_bytes())
        items.append(PushItem(item_id=item_id, image_path=image, width=w, height=h, mask_path=mask_path,
                              model_version=version, score=0.5, uncertainty=i / 10))
        gts[item_id] = gt
    return items, gts


def _annotate_with_ground_truth(backend: CvatBackend, gts: dict[str, np.ndarray], only: set[str]) -> None:
    """What an annotator does: replace the frame's shapes by the true mask, then complete the job."""
    from cvat_sdk import masks as sdk
    from cvat_sdk import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    client = backend.conn.client()
    project = backend.find_project()
    label = backend.label_ids(project)["foreground"]
    for task in backend.tasks(project):
        names = backend.frame_names(task)
        frames = {f: Path(n).stem for f, n in enumerate(names) if Path(n).stem in only}
        if not frames:
            continue
        old = [s.id for s in task.get_annotations().shapes if s.frame in frames]
        if old:
            task.remove_annotations(ids=old)
        shapes = [models.LabeledShapeRequest(
            type=models.ShapeType("mask"), frame=f, label_id=label, source="manual", occluded=False, z_order=0,
            attributes=[], points=[float(v) for v in sdk.encode_mask(gts[item_id] > 0)])
            for f, item_id in sorted(frames.items())]
        task.update_annotations(models.PatchedLabeledDataRequest(shapes=shapes, tags=[], tracks=[]),
                                action=AnnotationUpdateAction.CREATE)
        for job in task.get_jobs():
            client.jobs.retrieve(job.id).update(models.PatchedJobWriteRequest(state="completed"))


def test_round_trip(backend: CvatBackend, ecssd: Path, tmp_path: Path) -> None:
    items, gts = _items(ecssd, tmp_path)

    # push: 5 items in tasks of 2 -> 3 tasks; frames named <item_id>.jpg
    out = backend.push(items, [])
    assert (out.created, out.updated, out.unchanged) == (5, 0, 0)
    assert out.server_version and len({r.task_id for r in out.receipt}) == 3
    project = backend.find_project()
    assert project is not None and len(backend.tasks(project)) == 3

    # nothing is pulled before a job is completed
    assert backend.pull(out.receipt).corrections == ()

    # annotators draw the ground truth on 3 frames and complete their jobs
    done = {it.item_id for it in items[:3]}
    _annotate_with_ground_truth(backend, gts, done)
    pulled = backend.pull(out.receipt)
    by_item = {c.item_id: c for c in pulled.corrections}
    assert done <= set(by_item)
    for item_id in done:
        assert np.array_equal(by_item[item_id].mask, gts[item_id]), item_id  # holes and parts survive
        assert by_item[item_id].annotation_id.startswith("job") and by_item[item_id].updated_at

    # re-push unchanged: nothing created or touched
    again = backend.push(items, out.receipt)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 5)
    assert again.receipt == out.receipt and len(backend.tasks(project)) == 3

    # a new pre-annotation version: frames people edited keep their shapes, the others are replaced
    items2, _ = _items(ecssd, tmp_path, "v2")
    third = backend.push(items2, again.receipt)
    assert third.created == 0 and third.updated == 2 and len(backend.tasks(project)) == 3
    final = {c.item_id: c for c in backend.pull(third.receipt).corrections}
    for item_id in done:
        assert np.array_equal(final[item_id].mask, gts[item_id])

    # the same tasks exported by CVAT read back by the files-backend readers
    task = next(t for t in backend.tasks(project) if any(Path(n).stem in done for n in backend.frame_names(t)))
    options = ReadOptions(labels=("foreground",))
    for fmt, reader in (("CVAT for images 1.1", CVAT_XML), ("COCO 1.0", COCO), ("Segmentation mask 1.1", SEGMASK)):
        path = tmp_path / f"{fmt.replace(' ', '_')}.zip"
        task.export_dataset(fmt, path, include_images=False)
        assert zipfile.is_zipfile(path) and reader.sniff(path), fmt
        read = {a.item_id or Path(a.image_name).stem: a for a in reader.read(path, options)}
        for item_id in done & set(read):
            assert np.array_equal(read[item_id].mask, gts[item_id]), (fmt, item_id)
        assert done & set(read), fmt
