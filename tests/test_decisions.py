"""Thresholds and abstention for photo models: chosen by evaluate, stored in the checkpoint and the ONNX metadata,
applied the same way by both engines and by predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from birdvision.data.photos.ood import ood_images
from birdvision.evaluation.evaluator import evaluate_checkpoint
from birdvision.export import main as export_main
from birdvision.exporting.metadata import read_metadata
from birdvision.predict import main as predict_main
from birdvision.prediction.api import load
from birdvision.prediction.predictor import UNKNOWN
from birdvision.prediction.tables import top_rows
from birdvision.runs.checkpoint import CheckpointError, checkpoint_meta, update_hparams
from tests._bird_runs import make_run


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, demo_photos) -> Path:
    run = make_run(tmp_path_factory.mktemp("run"), demo_photos)
    ood = tmp_path_factory.mktemp("ood")
    from PIL import Image

    for i, img in enumerate(ood_images(1, 40, seed=9)[0][:4]):
        Image.fromarray(img).save(ood / f"{i}.png")
    (ood / "notes.txt").write_text("not an image")
    th = {"fpr": 0.05, "precision": None, "ood_far": 0.2, "ood_images": 3, "ood": str(ood)}
    evaluate_checkpoint(run, "test", run / "eval", threshold=type("T", (), th)())
    return run


@pytest.fixture(scope="module")
def exported(evaluated, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    assert export_main([f"ckpt={evaluated}", "format=onnx", f"output_dir={out}"]) == 0
    return out / "model.onnx"


def test_evaluate_stores_thresholds_and_abstention_and_reports_them(evaluated):
    meta = checkpoint_meta(evaluated)
    th, ab = meta["thresholds"], meta["abstain"]
    assert th["target"] == "fpr" and th["target_value"] == 0.05 and th["split"] == "valid"
    assert len(th["values"]) == len(meta["classes"]) and all(v is None or 0 <= v <= 1 for v in th["values"])
    assert ab["score"] == "max_prob" and 0 <= ab["threshold"] <= 1 and ab["target_value"] == 0.2
    m = json.loads((evaluated / "eval" / "metrics.json").read_text())
    assert {"thresholds.csv", "thresholds.md", "abstention.csv", "abstention.md"} <= set(m["outputs"])
    assert m["abstain/folder_images"] == 4 and m["abstain/generated_images"] == 30
    assert 0 <= m["abstain/auroc_generated"] <= 1 and 0 <= m["abstain/auroc_folder"] <= 1
    assert m["thresholds/fpr_pooled"] is not None
    with open(evaluated / "eval" / "thresholds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class_name"] for r in rows] == meta["classes"]
    assert {"threshold", "precision", "recall", "fpr"} <= set(rows[0])
    from birdvision.reports.html import write_run_report

    page = write_run_report(evaluated).read_text()
    assert "Per-class thresholds (fpr=0.05" in page and "AUROC vs generated images" in page


def test_evaluate_without_calibration_measures_the_stored_decisions(evaluated, tmp_path):
    before = checkpoint_meta(evaluated)
    th = {"fpr": 0.3, "precision": None, "ood_far": 0.5, "ood_images": 2, "ood": None}
    m = evaluate_checkpoint(evaluated, "test", tmp_path / "ev", calibrate=False, threshold=type("T", (), th)())
    after = checkpoint_meta(evaluated)
    assert after["thresholds"] == before["thresholds"] and after["abstain"] == before["abstain"]  # untouched
    assert m["thresholds/target_value"] == 0.05 and m["abstain/threshold"] == before["abstain"]["threshold"]
    with open(tmp_path / "ev" / "abstention.csv", newline="") as f:
        assert next(csv.DictReader(f))["threshold"] == "stored in the checkpoint"


def test_metadata_refuses_impossible_decisions(evaluated, tmp_path):
    import shutil

    ck = tmp_path / "copy.ckpt"
    shutil.copy(evaluated / "checkpoints" / "best.ckpt", ck)
    with pytest.raises(CheckpointError, match="thresholds lists 1 values for 3 classes"):
        update_hparams(ck, thresholds={"values": [0.5]})
    with pytest.raises(CheckpointError, match=r"thresholds.values\[1\]=1.5"):
        update_hparams(ck, thresholds={"values": [0.5, 1.5, None]})
    with pytest.raises(CheckpointError, match="background_class='gull' is not one of the classes"):
        update_hparams(ck, background_class="gull")
    with pytest.raises(CheckpointError, match="abstain.threshold"):
        update_hparams(ck, abstain={"threshold": -1})


def test_both_engines_carry_and_apply_the_same_decisions(evaluated, exported, demo_photos):
    meta, ck = read_metadata(exported), checkpoint_meta(evaluated)
    assert meta["thresholds"] == ck["thresholds"] and meta["abstain"] == ck["abstain"]
    a, b = load(evaluated), load(exported)
    assert np.array_equal(a.thresholds, b.thresholds, equal_nan=True) and a.abstain_threshold == b.abstain_threshold
    photos = sorted((demo_photos / "test").rglob("*.jpg"))
    batch = np.concatenate([np.stack([a.prepare(p) for p in photos]), ood_images(2, 32, seed=1)[0]])
    pa, pb = a.predict_batch(batch), b.predict_batch(batch)
    assert np.abs(pa - pb).max() < 1e-5
    for kw in ({}, {"always_top1": False}, {"always_top1": False, "min_confidence": 0.5}):
        assert [[s for s, _ in r] for r in a.decide(pa, top_k=3, **kw)] == \
            [[s for s, _ in r] for r in b.decide(pb, top_k=3, **kw)]


def test_photo_abstention_in_predict(evaluated, demo_photos, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    p = load(run)
    photos = demo_photos / "test"
    probs = p.predict_batch(sorted(photos.rglob("*.jpg")))
    t = float(np.median(probs.max(1)))  # half the photos under it
    update_hparams(run / "checkpoints" / "best.ckpt", abstain=dict(checkpoint_meta(run)["abstain"], threshold=t))
    out = tmp_path / "p.csv"
    assert predict_main([f"model={run}", f"input={photos}", f"output={out}", "top_k=1"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(probs) and UNKNOWN not in {r["species"] for r in rows}  # default: every photo's best species
    assert predict_main([f"model={run}", f"input={photos}", f"output={out}", "top_k=1", "always_top1=false",
                         "min_confidence=0"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    unknown = [r for r in rows if r["species"] == UNKNOWN]
    assert len(rows) == len(probs) and len(unknown) == int(np.sum(probs.max(1) < t))
    assert all(float(r["confidence"]) < t + 1e-4 for r in unknown)


def test_top_rows_thresholds_skip_and_unknown():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.1, 0.7], [0.4, 0.35, 0.25]])
    thr = np.array([0.5, 0.2, np.nan])  # the third class has no threshold: min_confidence
    got = top_rows(probs, ["a", "b", "nocall"], top_k=3, min_confidence=0.9, always_top1=False, thresholds=thr,
                   skip=[2])
    assert [[s for s, _ in r] for r in got] == [["a", "b"], [], ["b"]]  # never nocall; b passes its own 0.2
    best = top_rows(probs, ["a", "b", "nocall"], top_k=1, always_top1=True, thresholds=thr, skip=[2])
    assert [[s for s, _ in r] for r in best] == [["a"], ["a"], ["a"]]  # the best species, not the no-call class
    photo = top_rows(probs, ["a", "b", "c"], top_k=2, min_confidence=0.1, always_top1=False, abstain=0.5,
                     unknown="unknown")
    assert [[s for s, _ in r] for r in photo] == [["a", "b"], ["c", "a"], ["unknown"]]
    assert photo[2][0][1] == pytest.approx(0.4)
