import json
import shutil
from pathlib import Path

import pytest
import torch

from birdvision.fit import main
from birdvision.runs.checkpoint import CheckpointError, checkpoint_meta, load_classifier
from tests.conftest import fit_args


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A 'pretrained' state_dict for test_tiny, so staged fine-tuning is exercised."""
    from birdvision.models import create_model

    torch.manual_seed(0)
    f = tmp_path_factory.mktemp("w") / "tiny.pth"
    torch.save(create_model("test_tiny", 10).state_dict(), f)
    return f


@pytest.fixture(scope="module")
def run(demo_photos: Path, tmp_path_factory, tiny_weights: Path) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert main(fit_args(demo_photos, out, f"model.weights_path={tiny_weights}", "finetune.warmup_epochs=1")) == 0
    (run_dir,) = list((out / "demo").iterdir())
    return run_dir


def test_fit_writes_run_folder(run: Path):
    for name in ("config.yaml", "classes.json", "metrics.csv", "summary.json", "manifest.csv"):
        assert (run / name).is_file(), name
    ck = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert ck == ["best.ckpt", "epoch=000.ckpt", "epoch=001.ckpt", "last.ckpt"]
    s = json.loads((run / "summary.json").read_text())
    assert s["epochs_completed"] == 2
    assert 0.0 <= s["test/acc"] <= 1.0 and "val/acc_best" in s
    assert Path(s["best_checkpoint"]).is_file()
    assert json.loads((run / "classes.json").read_text()) == sorted(json.loads((run / "classes.json").read_text()))
    assert len(list((run / "eval").glob("*.png"))) >= 3 and (run / "eval" / "per_class.csv").is_file()
    assert (run / "report.html").is_file() and s["temperature"] > 0
    assert checkpoint_meta(run / "checkpoints" / "best.ckpt")["temperature"] == pytest.approx(s["temperature"])
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header and "val/acc" in header


def test_checkpoint_carries_everything_to_run_it(run: Path):
    meta = checkpoint_meta(run / "checkpoints" / "best.ckpt")
    assert meta["classes"] == json.loads((run / "classes.json").read_text())
    assert meta["preprocess"]["kind"] == "image" and meta["preprocess"]["size"] == 32
    assert len(meta["manifest_digest"]) == 16 and meta["backbone"] == "test_tiny"
    model = load_classifier(run)
    probs = model.predict_proba(torch.zeros(2, 3, 32, 32))
    torch.testing.assert_close(probs.sum(1), torch.ones(2))


def test_staged_finetuning_freezes_then_unfreezes(run: Path):
    import csv

    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("train/backbone_frozen")]
    frozen = {int(r["epoch"]): float(r["train/backbone_frozen"]) for r in rows}
    assert frozen == {0: 1.0, 1: 0.0}  # one head-only epoch, then everything


def test_backbone_weights_do_not_change_during_warmup(demo_photos: Path, tmp_path: Path, tiny_weights: Path):
    args = fit_args(demo_photos, tmp_path, "trainer.max_epochs=1", "finetune.warmup_epochs=1",
                    f"model.weights_path={tiny_weights}")
    assert main(args) == 0
    (run_dir,) = list((tmp_path / "demo").iterdir())
    after = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    before = torch.load(tiny_weights, weights_only=True)
    # batch-norm running statistics stay pretrained too
    torch.testing.assert_close(after["net.features.1.running_mean"], before["features.1.running_mean"])
    torch.testing.assert_close(after["net.features.0.weight"], before["features.0.weight"])
    assert not torch.equal(after["net.classifier.1.weight"], before["classifier.1.weight"])


def test_resume_latest_completes_the_planned_epochs(run: Path, tmp_path: Path):
    out = tmp_path / "out"
    shutil.copytree(run, out / "demo" / run.name)
    rd = out / "demo" / run.name
    for name in ("epoch=001.ckpt", "last.ckpt", "best.ckpt"):
        (rd / "checkpoints" / name).unlink()
    (rd / "summary.json").unlink()
    step0 = torch.load(rd / "checkpoints" / "epoch=000.ckpt", weights_only=True)["global_step"]
    cfg_args = [f"model.weights_path={_cfg(run)['model']['weights_path']}", "finetune.warmup_epochs=1"]
    assert main(fit_args(_root(run), out, *cfg_args, "resume=latest")) == 0
    s = json.loads((rd / "summary.json").read_text())
    assert s["epochs_completed"] == 2
    last = torch.load(rd / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * step0  # continued from epoch 1, not restarted
    import csv

    epochs = {int(r["epoch"]) for r in csv.DictReader(open(rd / "metrics.csv")) if r.get("val/acc")}
    assert epochs == {0, 1}  # the interrupted run's rows are kept beside the resumed ones


def _cfg(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def _root(run: Path) -> Path:
    return Path(_cfg(run)["data"]["root"])


def test_from_scratch_skips_the_head_only_warmup(demo_photos: Path, tmp_path: Path):
    assert main(fit_args(demo_photos, tmp_path, "trainer.max_epochs=1", "finetune.warmup_epochs=1")) == 0
    (run_dir,) = list((tmp_path / "demo").iterdir())
    hp = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["warmup_epochs"] == 0 and hp["backbone_lr_scale"] == 1.0


def test_resume_without_runs_is_clear(tmp_path: Path, demo_photos: Path, capsys):
    assert main(fit_args(demo_photos, tmp_path, "resume=latest")) == 2
    assert "no run of recipe 'demo'" in capsys.readouterr().err


def test_user_errors_exit_2_without_traceback(tmp_path: Path, capsys):
    assert main(["recipe=demo", "trainer.max_epoch=1"]) == 2
    err = capsys.readouterr().err
    assert "trainer.max_epochs" in err and "Traceback" not in err
    assert main(["recipe=demo", f"data.root={tmp_path / 'missing'}", f"output_dir={tmp_path}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_pretrained_unavailable_stops_before_training(tmp_path: Path, demo_photos: Path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    args = fit_args(demo_photos, tmp_path, "model.backbone=resnet18", "model.pretrained=true")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model.pretrained=false" in err and "resnet18-f37072fd.pth" in err
    assert not list(tmp_path.glob("demo/*/checkpoints/*.ckpt"))


def test_foreign_checkpoint_is_refused(tmp_path: Path):
    torch.save({"state_dict": {}}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match="not a birdvision checkpoint"):
        load_classifier(tmp_path / "x.ckpt")


def test_fit_trains_from_an_audit_manifest(demo_photos: Path, tmp_path: Path):
    import shutil

    from birdvision.audit import main as audit_main

    data = tmp_path / "data"
    shutil.copytree(demo_photos, data)
    victim = next((data / "train").glob("*/*.jpg"))
    victim.write_bytes(b"")  # a broken file the audit must drop
    assert audit_main(["check=default", f"data.root={data}", f"output_dir={tmp_path / 'audit'}", "scan.workers=1"]) == 0
    manifest = tmp_path / "audit" / "manifest.csv"
    assert main(fit_args(data, tmp_path / "runs", f"data.manifest={manifest}", "trainer.max_epochs=1")) == 0
    (run_dir,) = list((tmp_path / "runs" / "demo").iterdir())
    trained_on = {r.split(",")[0] for r in (run_dir / "manifest.csv").read_text().splitlines()[1:]}
    assert str(victim) not in trained_on and len(trained_on) == 3 * 20 - 1


# ----------------------------------------------------------------------------- head on cached embeddings


def test_head_on_cached_embeddings_is_an_ordinary_checkpoint(demo_photos: Path, tmp_path: Path, tiny_weights: Path):
    from birdvision.evaluation.evaluator import evaluate_checkpoint

    cache = tmp_path / "cache"
    args = fit_args(demo_photos, tmp_path / "runs", f"model.weights_path={tiny_weights}", "finetune.mode=embeddings",
                    f"finetune.embedding_cache={cache}")
    assert main(args) == 0
    first = json.loads(next((tmp_path / "runs" / "demo").glob("*/summary.json")).read_text())
    n_items = sum(first["samples"].values())
    assert first["embeddings/cached_before"] == 0 and first["embeddings/total"] == n_items
    assert first["epochs_completed"] == 0 and first["head/l2"] in [t["l2"] for t in first["head/l2_tried"]]
    assert first["val/acc_best"] == first["val/acc"]
    # The cached-embedding logits are the network's logits: evaluating the saved checkpoint by
    # running the whole network gives the accuracy fit computed from the cache.
    ev = evaluate_checkpoint(first["best_checkpoint"], "test", tmp_path / "ev", calibrate=False)
    assert ev["test/acc"] == pytest.approx(first["test/acc"])
    assert first["train/acc"] > 0.6  # 3 classes, chance is 1/3

    # a second run embeds nothing and trains the same head
    assert main(args) == 0
    second = json.loads(sorted((tmp_path / "runs" / "demo").glob("*/summary.json"))[-1].read_text())
    assert second["embeddings/cached_before"] == n_items and second["run_dir"] != first["run_dir"]
    assert second["test/acc"] == first["test/acc"] and second["head/l2"] == first["head/l2"]

    # other weights are other embeddings: a fresh cache file, nothing reused
    torch.manual_seed(1)
    other = tmp_path / "other.pth"
    from birdvision.models import create_model

    torch.save(create_model("test_tiny", 10).state_dict(), other)
    assert main(fit_args(demo_photos, tmp_path / "runs2", f"model.weights_path={other}", "finetune.mode=embeddings",
                         f"finetune.embedding_cache={cache}")) == 0
    third = json.loads(next((tmp_path / "runs2" / "demo").glob("*/summary.json")).read_text())
    assert third["embeddings/cached_before"] == 0 and len(list(cache.glob("*.pt"))) == 2


def test_finetune_mode_is_checked(demo_photos: Path, tmp_path: Path, capsys):
    assert main(fit_args(demo_photos, tmp_path, "finetune.mode=linear")) == 2
    assert "finetune.mode='linear': expected one of staged, embeddings" in capsys.readouterr().err


def test_pretrained_checkpoints_load_without_reading_pretrained_weights(demo_photos: Path, tmp_path: Path, monkeypatch):
    """Lightning's load_from_checkpoint, birdvision's loader and evaluate never fetch ImageNet weights."""
    from birdvision.training.module import BirdClassifier

    assert main(fit_args(demo_photos, tmp_path / "runs", "model.backbone=efficientnet_lite0", "model.pretrained=true",
                         "finetune.mode=embeddings", f"finetune.embedding_cache={tmp_path / 'cache'}",
                         "evaluate_after_fit=false")) == 0
    ckpt = next((tmp_path / "runs").glob("demo/*/checkpoints/best.ckpt"))

    def no_fetch(*a, **k):
        raise AssertionError("pretrained weights were read while loading a checkpoint")

    monkeypatch.setattr("birdvision.models.factory.pretrained_state", no_fetch)
    lit = BirdClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    assert lit.hparams.pretrained is True  # the run's record is kept
    ours = load_classifier(ckpt)
    stored = torch.load(ckpt, weights_only=True)["state_dict"]
    torch.testing.assert_close(lit.state_dict()["net.classifier.1.weight"], stored["net.classifier.1.weight"])
    torch.testing.assert_close(ours.state_dict()["net.conv_stem.weight"], stored["net.conv_stem.weight"])


def test_head_init_from_embeddings_starts_fine_tuning_from_a_fitted_head(demo_photos: Path, tmp_path: Path,
                                                                        tiny_weights: Path, monkeypatch):
    """LP-FT: the network handed to the trainer already carries the logistic-regression head."""
    import birdvision.fit as fit_mod

    seen = {}

    def fake_trainer_fit(cfg, module, pipe, run_dir, resume_ckpt, sampler=None):
        seen["head"] = module.net.classifier[1].weight.detach().clone()
        seen["module"] = module
        return {"best_checkpoint": str(run_dir / "none.ckpt"), "epochs_completed": 0}

    monkeypatch.setattr(fit_mod, "_fit_with_trainer", fake_trainer_fit)
    args = fit_args(demo_photos, tmp_path / "runs", f"model.weights_path={tiny_weights}", "finetune.head_init=embeddings",
                    "finetune.warmup_epochs=0", f"finetune.embedding_cache={tmp_path / 'cache'}")
    assert main(args) == 0
    s = json.loads(next((tmp_path / "runs" / "demo").glob("*/summary.json")).read_text())
    assert {"head_init/train_acc", "head_init/val_acc"} <= set(s)
    assert seen["head"].std() > 0.05  # create_model's fresh head has std 0.01
    # the head's train accuracy, recomputed through the whole network, is the one fit reported
    from birdvision.data.manifest import read_manifest
    from birdvision.spec import from_dict as spec_from_dict

    run = Path(s["run_dir"])
    train = [x for x in read_manifest(run / "manifest.csv") if x.split == "train"]
    ds = spec_from_dict(seen["module"].hparams.preprocess).eval_dataset(train, json.loads((run / "classes.json").read_text()))
    net = seen["module"].net.eval()
    with torch.no_grad():
        acc = sum(int(net(x[None]).argmax()) == y for x, y in (ds[i] for i in range(len(ds)))) / len(ds)
    assert acc == pytest.approx(s["head_init/train_acc"])
    assert main(fit_args(demo_photos, tmp_path, "finetune.head_init=linear")) == 2


def test_freeze_bn_keeps_pretrained_statistics_while_weights_train(demo_photos: Path, tmp_path: Path, tiny_weights: Path):
    args = fit_args(demo_photos, tmp_path, f"model.weights_path={tiny_weights}", "finetune.warmup_epochs=0",
                    "finetune.freeze_bn=true", "evaluate_after_fit=false")
    assert main(args) == 0
    last = torch.load(next(tmp_path.glob("demo/*/checkpoints/last.ckpt")), weights_only=True)["state_dict"]
    pretrained = torch.load(tiny_weights, weights_only=True)
    torch.testing.assert_close(last["net.features.1.running_mean"], pretrained["features.1.running_mean"])
    torch.testing.assert_close(last["net.features.1.running_var"], pretrained["features.1.running_var"])
    assert not torch.equal(last["net.features.0.weight"], pretrained["features.0.weight"])  # the backbone did train


def test_weight_ema_is_what_checkpoints_test_and_resume_continues_the_raw_weights(demo_photos: Path, tmp_path: Path):
    out = tmp_path / "runs"
    assert main(fit_args(demo_photos, out, "finetune.ema_decay=0.5", "finetune.warmup_epochs=0", "trainer.max_epochs=1")) == 0
    run = next((out / "demo").iterdir())
    ck = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    avg, raw = ck["state_dict"], ck["current_model_state"]
    assert avg.keys() == raw.keys()
    assert not torch.equal(avg["net.features.0.weight"], raw["net.features.0.weight"])
    s = json.loads((run / "summary.json").read_text())
    # fit's test score is the averaged weights' score: evaluate loads best.ckpt on its own and agrees
    ev = json.loads((run / "eval" / "metrics.json").read_text())
    assert s["evaluated_split"] == "test" and s["test/ece"] == ev["test/ece"] and "top1" not in s and "eval/top1" not in s
    assert s["test/acc"] == pytest.approx(ev["test/acc"])  # the trainer's test score (kept) equals evaluate's
    model = load_classifier(run / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(model.net.features[0].weight, avg["net.features.0.weight"])
    # resuming continues from the raw weights and keeps averaging
    assert main(fit_args(demo_photos, out, "finetune.ema_decay=0.5", "finetune.warmup_epochs=0", "trainer.max_epochs=2",
                         f"resume={run}")) == 0
    run2 = max((out / "demo").iterdir(), key=lambda p: p.stat().st_mtime)
    ck2 = torch.load(run2 / "checkpoints" / "last.ckpt", weights_only=False)
    assert json.loads((run2 / "summary.json").read_text())["epochs_completed"] == 2
    assert ck2["averaging_state"]["n_averaged"] > ck["averaging_state"]["n_averaged"]


def test_epoch_metrics_stay_apart_after_a_perfect_first_batch():
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

    from birdvision.training.module import BirdClassifier

    n = 36
    m = BirdClassifier("test_tiny", [f"c{i}" for i in range(n)], load_weights=False)
    alone = {"acc": MulticlassAccuracy(n, top_k=1, average="micro"), "acc5": MulticlassAccuracy(n, top_k=5, average="micro"),
             "f1": MulticlassF1Score(n, average="macro")}
    g = torch.Generator().manual_seed(0)
    for i in range(5):
        y = torch.randint(0, n, (32,), generator=g)
        x = torch.randn(32, n, generator=g)
        x[torch.arange(32), y] += 20.0 if i == 0 else 2.0  # the first batch all right, later ones often wrong
        m.test_metrics.update(x, y)
        for metric in alone.values():
            metric.update(x, y)
    got = m.test_metrics.compute()
    for k, metric in alone.items():
        assert float(got[f"test/{k}"]) == pytest.approx(float(metric.compute())), k
    assert float(got["test/f1"]) != pytest.approx(float(got["test/acc5"]))
