"""Evaluation: metric tables on hand-made matrices, and the CLI end to end on a seconds-long checkpoint."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from birdvision.evaluate import main
from birdvision.evaluation.evaluator import evaluate_checkpoint
from birdvision.fit import main as fit_main
from birdvision.reports import metrics as M
from birdvision.reports.html import write_run_report
from tests.conftest import fit_args

# ----------------------------------------------------------------------------- tables from a confusion matrix


def test_topk_accuracy_hand_case():
    logits = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 2.0, 0.0]])
    labels = np.array([0, 1, 2])  # true class ranked 1st, 3rd and 2nd
    assert M.topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert M.topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert M.topk_accuracy(logits, labels, 3) == 1.0
    assert M.topk_accuracy(logits, labels, 10) == 1.0  # k capped at the class count


def test_per_class_table_consistent_with_confusion_matrix():
    classes = ["a", "b", "c", "d"]
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    preds = np.array([0, 0, 1, 2, 1, 0, 1, 1, 2])
    cm = M.confusion_matrix(labels, preds, 4)
    assert cm.tolist() == [[2, 1, 1, 0], [1, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0]]
    rows = {r.label: r for r in M.per_class(cm, classes)}
    for i, c in enumerate(classes):
        r = rows[c]
        assert r.support == cm[i].sum() and r.predicted == cm[:, i].sum()
    assert rows["a"].precision == pytest.approx(2 / 3) and rows["a"].recall == pytest.approx(2 / 4)
    assert rows["b"].precision == pytest.approx(1 / 4) and rows["b"].recall == pytest.approx(1 / 2)
    assert rows["a"].f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert rows["c"].most_confused_with == "b" and rows["c"].confused_count == 2
    assert rows["d"].support == 0 and rows["d"].most_confused_with == ""
    macro = M.macro_scores(list(rows.values()))
    assert macro["recall"] == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)  # d (no samples) left out
    pairs = M.confused_pairs(cm, classes)
    assert (pairs[0].true, pairs[0].predicted, pairs[0].count) == ("c", "b", 2)
    assert sum(p.count for p in pairs) == cm.sum() - np.trace(cm)


def test_tables_written_with_header_even_when_empty(tmp_path):
    M.write_table([], tmp_path / "pairs", "t", M.columns_of(M.ConfusedPair))
    assert (tmp_path / "pairs.csv").read_text().startswith("true,predicted,count")
    assert "(none)" in (tmp_path / "pairs.md").read_text()


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained_run(demo_photos, tmp_path_factory) -> Path:
    """A one-epoch test_tiny run; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("runs")
    assert fit_main(fit_args(demo_photos, out, "trainer.max_epochs=1", "test_after_fit=false")) == 0
    return next(out.glob("demo/*"))


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    dst = tmp_path / "demo" / trained_run.name
    shutil.copytree(trained_run, dst)
    return dst


def _temperature(ckpt: Path) -> float:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["temperature"]


def test_evaluate_cli_writes_metrics_plots_and_stores_temperature(run_copy, capsys):
    out = run_copy / "eval"
    assert main([f"ckpt={run_copy}", "split=test", f"output_dir={out}"]) == 0
    pngs, csvs = list(out.glob("*.png")), list(out.glob("*.csv"))
    assert len(pngs) >= 3 and len(csvs) >= 1
    m = json.loads((out / "metrics.json").read_text())
    for key in ("test/acc", "test/acc5", "test/precision", "test/recall", "test/f1", "test/ece", "test/ece_calibrated",
                "temperature"):
        assert key in m
    assert m["temperature_fitted"] and m["calibration_split"] == "valid"
    ckpt = run_copy / "checkpoints" / "best.ckpt"
    assert _temperature(ckpt) == pytest.approx(m["temperature"])
    with open(out / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(int(r["support"]) for r in rows) == m["items"] == 12  # demo_photos: 3 species x 4 test photos
    # top-1 from the table equals the reported one: correct = sum of recall x support
    correct = sum(float(r["recall"]) * int(r["support"]) for r in rows)
    assert correct / m["items"] == pytest.approx(m["test/acc"])
    with open(out / "predictions.csv") as f:
        preds = list(csv.DictReader(f))
    assert sum(p["true"] == p["predicted"] for p in preds) / len(preds) == pytest.approx(m["test/acc"])
    report = (run_copy / "report.html").read_text()
    assert "data:image/png;base64," in report and "Evaluation" in report
    assert "http://" not in report and "https://" not in report and "<script" not in report


def test_predict_proba_uses_fitted_temperature(run_copy):
    from birdvision.runs.checkpoint import load_classifier

    evaluate_checkpoint(run_copy, "test", run_copy / "eval")
    model = load_classifier(run_copy)
    x = torch.randn(2, 3, 32, 32)
    t = model.hparams.temperature
    assert t != 1.0
    assert torch.allclose(model.predict_proba(x), torch.softmax(model(x) / t, dim=-1))


def test_class_list_mismatch_names_the_labels_and_class_map_fixes_it(run_copy, tmp_path, capsys):
    classes = json.loads((run_copy / "classes.json").read_text())
    src = run_copy / "manifest.csv"
    text = src.read_text().replace(classes[0], "Mystery Bird")
    (tmp_path / "other.csv").write_text(text)
    rc = main([f"ckpt={run_copy}", f"data={tmp_path / 'other.csv'}", f"output_dir={tmp_path / 'e1'}", "report=false"])
    err = capsys.readouterr().err
    assert rc == 2 and "Mystery Bird" in err and "class_map" in err
    (tmp_path / "map.json").write_text(json.dumps({"Mystery Bird": classes[0]}))
    assert main([f"ckpt={run_copy}", f"data={tmp_path / 'other.csv'}", f"class_map={tmp_path / 'map.json'}",
                 f"output_dir={tmp_path / 'e2'}", "report=false"]) == 0
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["items"] == 12


def test_empty_split_is_a_one_line_error(run_copy, tmp_path, capsys):
    lines = (run_copy / "manifest.csv").read_text().splitlines()
    kept = [ln for ln in lines if ",test," not in ln]
    (tmp_path / "no_test.csv").write_text("\n".join(kept) + "\n")
    assert main([f"ckpt={run_copy}", f"data={tmp_path / 'no_test.csv'}", f"output_dir={tmp_path / 'e'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "split 'test'" in err and "no samples" in err and len(err.splitlines()) == 1


def test_run_folder_without_checkpoints_is_a_one_line_error(run_copy, capsys):
    shutil.rmtree(run_copy / "checkpoints")
    (run_copy / "checkpoints").mkdir()
    assert main([f"ckpt={run_copy}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no checkpoints" in err and len(err.splitlines()) == 1


def test_missing_ckpt_and_bad_split(capsys):
    assert main([]) == 2
    assert "ckpt=PATH is required" in capsys.readouterr().err
    assert main(["ckpt=/nonexistent/x.ckpt"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_run_report_sections_appear_with_their_files(run_copy):
    (run_copy / "audit_summary.json").write_text(json.dumps({"duplicates": 4, "dropped": 1}))
    (run_copy / "export").mkdir()
    (run_copy / "export" / "parity.json").write_text(json.dumps({"max_abs_diff": 1e-5, "top1_agreement": 1.0}))
    shutil.rmtree(run_copy / "eval", ignore_errors=True)  # fit evaluates on its own; pretend it did not
    page = write_run_report(run_copy).read_text()
    assert "Data audit" in page and "duplicates" in page
    assert "Export parity" in page and "top1_agreement" in page
    assert "Learning curves" in page and (run_copy / "learning_curves.png").is_file()
    assert "not evaluated yet" in page  # no eval/ folder in this copy


def test_call_models_run_the_mel_frontend_and_show_spectrograms(tmp_path):
    """Audio checkpoints yield waveforms; evaluation applies the frontend per batch and plots spectrograms."""
    from torch.utils.data import TensorDataset

    from birdvision.data.audio.mel import MelFrontend
    from birdvision.evaluation.logits import compute_logits, top_loss_images
    from birdvision.models import create_model
    from birdvision.reports.plots import save_figure, top_losses_figure
    from birdvision.spec import from_dict as spec_from_dict

    spec = MelFrontend(sample_rate=8000, n_fft=256, hop_length=128, n_mels=32, f_max_hz=4000.0).spec()
    preprocess = {"kind": "audio", "sample_rate": 8000, "clip_seconds": 0.5, "mel": spec}
    front = spec_from_dict(preprocess).frontend()
    ds = TensorDataset(torch.randn(5, 4000) * 0.1, torch.tensor([0, 1, 2, 0, 1]))
    net = create_model("test_tiny", 3, pretrained=False, in_chans=spec.get("in_chans", 1))
    logits, labels = compute_logits(net, ds, batch_transform=front, batch_size=2, num_workers=0,
                                    device=torch.device("cpu"))
    assert logits.shape == (5, 3) and labels.tolist() == [0, 1, 2, 0, 1]
    images = top_loss_images(ds, [0, 3], spec_from_dict(preprocess), front)
    assert images[0].ndim == 2 and images[0].shape[0] == 32  # (n_mels, frames)
    path = save_figure(top_losses_figure(images, ["a", "b"], spectrogram=True), tmp_path / "t.png")
    assert path.stat().st_size > 1000


def test_split_metrics_are_stage_keys_and_old_files_still_read():
    from birdvision.reports.metrics import metric_key, split_metric

    assert metric_key("valid", "acc") == "val/acc" and metric_key("test", "ece") == "test/ece"
    new = {"split": "valid", "val/acc": 0.9, "val/f1": 0.8}
    old = {"split": "test", "top1": 0.7, "macro_f1": 0.6, "ece": 0.05}  # metrics.json written before stage keys
    assert split_metric(new, "acc") == 0.9 and split_metric(new, "f1") == 0.8 and split_metric(new, "ece") is None
    assert split_metric(old, "acc") == 0.7 and split_metric(old, "f1") == 0.6 and split_metric(old, "ece") == 0.05
