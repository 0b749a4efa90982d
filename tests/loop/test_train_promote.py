"""Train a few steps on real photos, promote, load through the `trained` pre-annotator, evaluate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.commands import promote
from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.learning import training as train
from pipeline.stages import evaluate, export
from pipeline.stages import train as train_stage
from tests.conftest import REPO, maskloop
from tests.loop.conftest import make_project

TINY = {"arch": "lraspp_mobilenet_v3_large", "resolution": 32, "epochs": 2, "batch_size": 4, "seed": 0, "device": "cpu",
        "threads": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, ecssd: Path) -> Path:
    """8 photos exported and trained for 2 tiny epochs (module-scoped: the tests below read its outputs)."""
    root = tmp_path_factory.mktemp("loop") / "proj"
    old = Path.cwd()
    root.mkdir()
    os.chdir(root)
    try:
        params = make_project(root, ecssd, 8, overrides={"train": TINY})
        # Round-0 pre-annotations and pulled corrections for two items (correction effort).
        ids = sorted(str(i) for i in io.read_parquet(root / "data/ingest/manifest.parquet")["item_id"])
        rows = []
        for k, i in enumerate(ids[:2]):
            gt = io.read_mask(root / "data/curated/masks" / f"{i}.png")
            pre = gt.copy() if k == 0 else np.zeros_like(gt)  # first accepted unchanged, second redrawn
            io.write_png(root / "data/preannotate/masks" / f"{i}.png", pre)
            io.write_png(root / "data/corrections/masks" / f"{i}.png", gt)
            rows.append({"item_id": i, "model": "grabcut", "model_version": "g1"})
        io.write_parquet(root / "data/preannotate/preannotations.parquet", pd.DataFrame(rows))
        io.write_parquet(root / "data/corrections/corrections.parquet", pd.DataFrame({"item_id": ids[:2]}))
        export.run(params)
        train_stage.run(params)
    finally:
        os.chdir(old)
    return root


def test_training_writes_checkpoint_metrics_and_curve(trained: Path) -> None:
    metrics = io.read_json(trained / "metrics/train.json")
    curve = io.read_json(trained / "metrics/train_curve.json")
    assert metrics["epochs"] == 2 and [r["epoch"] for r in curve] == [1, 2]
    assert metrics["n_train"] + metrics["n_val"] <= 8 and metrics["n_train"] > 0
    assert all(np.isfinite(r["train_loss"]) for r in curve)
    lineage = io.read_json(trained / "models/train/lineage.json")
    dataset = io.read_json(trained / "data/export/dataset.json")
    assert lineage["dataset_version"] == dataset["version"]
    assert lineage["train_params"]["resolution"] == 32
    from pipeline.core.runner import hash_file

    assert lineage["checkpoint_sha256"] == hash_file(trained / "models/train/model.pt")


def test_promote_then_trained_preannotator_loads_it(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(trained)
    params_path = trained / "params.yaml"
    text = params_path.read_text()
    params_path.write_text("# my project settings\n" + text.replace("\ntrain:\n", "\ntrain:  # the model\n", 1))
    result = promote.promote(params_path, use_dvc=False)
    lineage = io.read_json(trained / "models/promoted/lineage.json")
    assert lineage["promoted"] is True
    assert lineage["checkpoint_sha256"] == result.checkpoint_sha256
    assert (lineage["arch"], lineage["resolution"]) == ("lraspp_mobilenet_v3_large", 32)
    assert lineage["dataset_version"] == io.read_json(trained / "data/export/dataset.json")["version"]
    assert lineage["train_params"]["epochs"] == 2
    # verified = curated verified (all 8 here) plus pulled corrections
    assert lineage["verified_items"] == sorted(str(i) for i in
                                               io.read_parquet(trained / "data/ingest/manifest.parquet")["item_id"])
    new_text = params_path.read_text()
    assert new_text.startswith("# my project settings\n") and "\ntrain:  # the model\n" in new_text
    assert yaml.safe_load(new_text)["preannotate"]["model"] == "trained"
    assert not promote.promote(params_path, use_dvc=False).params_changed  # idempotent

    from pipeline.core.params import load_paths
    from pipeline.preannotators import build_preannotator
    from pipeline.preannotators.base import PreannotateParams, PredictContext

    pre = build_preannotator("trained", PreannotateParams(model="trained"), load_paths(params_path))
    assert result.checkpoint_sha256 == pre.spec.checkpoint_sha256
    image = io.read_image(next((trained / "data/raw/images").glob("*.jpg")))
    out = pre.predict(image, PredictContext(item_id="x"))
    assert out.mask.shape == image.shape[:2] and set(np.unique(out.mask)) <= {0, 255}


def test_promote_refuses_missing_and_mismatched_checkpoints(trained: Path, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.chdir(trained)
    params_path = trained / "params.yaml"
    with pytest.raises(UserError, match="segmenter checkpoint not found"):
        promote.promote(params_path, checkpoint=tmp_path / "nope.pt", use_dvc=False)
    data = yaml.safe_load(params_path.read_text())
    other = tmp_path / "params.yaml"
    other.write_text(yaml.safe_dump({**data, "train": {**data["train"], "resolution": 64}}))
    with pytest.raises(UserError, match="trained at resolution 32, but 64 is configured"):
        promote.promote(other, use_dvc=False)
    other.write_text(yaml.safe_dump({**data, "train": {**data["train"], "arch": "deeplabv3_mobilenet_v3_large"}}))
    with pytest.raises(UserError, match="trained for architecture 'lraspp_mobilenet_v3_large'"):
        promote.promote(other, use_dvc=False)


def test_promote_cli_in_a_dvc_repo_versions_the_weights(trained: Path, tmp_path: Path) -> None:
    import shutil

    proj = tmp_path / "dvcproj"
    shutil.copytree(trained, proj, ignore=shutil.ignore_patterns(".maskloop"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], cwd=proj, check=True, env=env)
    out = maskloop("promote", cwd=proj)
    assert "DVC-tracked" in out.stdout and "preannotate.model" in out.stdout
    assert (proj / "models/promoted/model.pt.dvc").is_file()
    assert "model.pt" in (proj / "models/promoted/.gitignore").read_text()
    bad = maskloop("promote", "--checkpoint", "missing.pt", cwd=proj, check=False)
    assert bad.returncode == 1 and "missing.pt: segmenter checkpoint not found" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_evaluate_reports_test_metrics_and_correction_effort(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(trained)
    metrics = evaluate.run(trained / "params.yaml")
    splits = io.read_parquet(trained / "data/export/splits.parquet")
    n_test = int((splits["split"] == "test").sum())
    assert metrics["test"]["items"] == n_test
    if n_test:
        assert 0.0 <= metrics["test"]["iou"] <= 1.0 and 0.0 <= metrics["test"]["mae"] <= 1.0
    effort = metrics["effort"]["grabcut@g1"]
    assert effort["items"] == 2
    assert effort["accepted_unchanged"] == 0.5  # one accepted as is, one redrawn from empty
    assert effort["mean_pixels_changed"] > 0.0
    assert io.read_json(trained / "metrics/evaluate.json") == metrics
    table = io.read_parquet(trained / "data/evaluate/effort_items.parquet")
    assert list(table["unchanged"]) == [True, False]
    # simulated clicks (grabcut refine engine): none for the accepted mask, at least one for the redrawn one
    noc90 = [float(v) for v in table["noc90"]]
    assert effort["noc_items"] == 2 and noc90[0] == 0 and noc90[1] >= 1
    assert effort["mean_noc90"] == float(table["noc90"].mean())
    assert io.read_json(trained / "metrics/effort.json")[0]["mean_noc90"] == effort["mean_noc90"]
    from pipeline.commands.status import SECTIONS
    from pipeline.core.params import load_paths

    (fn,) = [f for title, f in SECTIONS if title == "loop"]
    status = "\n".join(fn(load_paths(trained / "params.yaml")))
    assert "effort grabcut@g1: 2 items, 50% accepted unchanged" in status
    assert "promoted: lraspp_mobilenet_v3_large @ 32 px" in status


def test_train_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    with pytest.raises(UserError, match="export not found; run `dvc repro export` first"):
        train_stage.run(tmp_path / "params.yaml")
    with pytest.raises(UserError, match="train split is empty"):
        train.fit([], [], train.TrainParams(**TINY), {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resolution must be a multiple of 8"):
        train.TrainParams(resolution=50)


def test_loss_prefers_the_right_answer_and_edge_band() -> None:
    target = torch.zeros(1, 1, 16, 16)
    target[..., 4:12, 4:12] = 1
    good = (target * 2 - 1) * 8
    bad = -good
    params = train.LossParams()
    assert float(train.segmentation_loss(good, target, params)) < 0.05
    assert float(train.segmentation_loss(bad, target, params)) > 5
    band = train.edge_band(target, 1)
    # the band is 1 px each side of the square's edge: rows/cols 3..12 minus the interior 5..10
    assert int(band.sum()) == 10 * 10 - 6 * 6


def test_augment_keeps_shapes_and_binary_masks() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1
    params = train.AugmentParams(hflip=1.0, vflip=0.0, scale_min=0.5, scale_max=2.0, color_jitter=0.3)
    for _ in range(10):
        img, m = train.augment(image, mask, params, rng)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and m.shape == (32, 32)
        assert set(np.unique(m)) <= {0.0, 1.0}
    flip_only = train.AugmentParams(hflip=1.0, scale_min=1.0, scale_max=1.0, color_jitter=0.0)
    img, m = train.augment(image, mask, flip_only, rng)
    assert np.array_equal(img, image[:, ::-1]) and np.array_equal(m, mask[:, ::-1])


def test_fit_with_saliency_priors_carries_them_to_the_checkpoint() -> None:
    """train.priors: the network gets the saliency channels in training, precise BN and validation alike,
    and the checkpoint's meta carries them to inference."""
    rng = np.random.default_rng(0)
    samples = []
    for k in range(8):
        img = rng.integers(60, 120, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), np.float32)
        y, x = 6 + k % 4, 8 + k % 5
        mask[y:y + 14, x:x + 14] = 1
        img[mask > 0] = (230, 40, 40)
        samples.append(train.Sample(f"s{k}", img, mask))
    params = train.TrainParams(**{**TINY, "epochs": 3, "lr": 3e-3}, priors=("mbd", "backgroundness"))
    result = train.fit(samples[:6], samples[6:], params, {})
    assert result.meta.priors == ("mbd", "backgroundness") and result.meta.in_channels == 5
    assert result.curve[-1]["val_iou"] is not None
    with pytest.raises(ValueError, match="priors must be distinct names"):
        train.TrainParams(priors=("depth",))
