"""Spectrogram mode's no-call class: where its windows come from, and a call model that stays silent on noise."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdvision.config import FitConfig, load_config
from birdvision.data.audio.background import (
    BACKGROUND_CLASS,
    frame_levels,
    quiet_mask,
    relabel_quiet,
    synthetic_noise,
)
from birdvision.data.build import build_pipeline
from birdvision.data.manifest import Sample, read_manifest
from birdvision.data.splits import assert_no_leakage
from birdvision.export import main as export_main
from birdvision.fit import main as fit_main
from birdvision.predict import main as predict_main
from birdvision.runs.checkpoint import checkpoint_meta

SR = 32000


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def calls(tmp_path_factory) -> Path:
    from birdvision.data.audio.demo import make_demo_calls

    return make_demo_calls(tmp_path_factory.mktemp("calls"), n_species=2, recordings_per_species=8, seconds=6)


@pytest.fixture(scope="module")
def background_dir(tmp_path_factory) -> Path:
    """A user's folder of recordings without calls: wind-like low noise."""
    d = tmp_path_factory.mktemp("bg")
    rng = np.random.default_rng(3)
    for i in range(4):
        x = np.cumsum(rng.standard_normal(SR * 6)) * 1e-4
        sf.write(d / f"wind_{i}.wav", (x - x.mean()).astype(np.float32), SR, subtype="FLOAT")
    return d


@pytest.fixture(scope="module")
def noise_wav(tmp_path_factory) -> Path:
    """20 s of low white noise, as between the calls of the acceptance soundscape."""
    p = tmp_path_factory.mktemp("noise") / "noise.wav"
    sf.write(p, np.random.default_rng(0).normal(0, 0.003, SR * 20).astype(np.float32), SR)
    return p


FAST = ["recipe=demo_calls", "model.backbone=test_tiny", "data.num_workers=0", "audio.mel.n_mels=32",
        "audio.augment.enabled=false", "audio.nocall.synthetic=8"]


def test_pipeline_adds_a_nocall_class_in_every_split(calls, background_dir, tmp_path, monkeypatch):
    import birdvision.data.audio.background as B

    monkeypatch.setattr(B, "SYNTHETIC_CACHE", tmp_path / "cache")  # this test's own, to count its files
    cfg = load_config(FitConfig, [*FAST, f"data.root={calls}", f"data.background={background_dir}"],
                      preset_key="recipe", preset_dir="recipes")
    pipe = build_pipeline(cfg)
    assert pipe.background_class == BACKGROUND_CLASS and BACKGROUND_CLASS in pipe.classes
    nocall = [w for w in pipe.samples if w.label == BACKGROUND_CLASS]
    assert {w.split for w in nocall} == {"train", "valid", "test"}
    from_folder = {w.path for w in nocall if w.path.startswith(str(background_dir))}
    assert len(from_folder) == 4  # every background recording is used ...
    assert_no_leakage(pipe.samples)  # ... each in one split only, like every generated file
    generated = [w for w in nocall if w.path.startswith(str(tmp_path / "cache"))]
    assert len({w.path for w in generated if w.split == "train"}) == 8
    assert {w.split for w in generated} == {"train", "valid"}  # the test split stays the user's recordings
    # no-call is switched off: species only, as before
    off = build_pipeline(load_config(FitConfig, [*FAST, f"data.root={calls}", "audio.nocall.enabled=false"],
                                     preset_key="recipe", preset_dir="recipes"))
    assert off.background_class is None and BACKGROUND_CLASS not in off.classes


def test_generated_noise_is_cached_and_reproducible(tmp_path):
    a = synthetic_noise({"train": 2, "valid": 1}, seconds=1.0, sample_rate=8000, seed=5, cache=tmp_path)
    b = synthetic_noise({"train": 2, "valid": 1}, seconds=1.0, sample_rate=8000, seed=5, cache=tmp_path)
    assert [s.sha256 for s in a] == [s.sha256 for s in b] and len({s.sha256 for s in a}) == 3
    assert [s.split for s in a] == ["train", "train", "valid"] and all(s.label == BACKGROUND_CLASS for s in a)
    x, sr = sf.read(a[0].path, dtype="float32")
    assert sr == 8000 and len(x) == 8000 and 0 < np.abs(x).max() <= 1


def test_quiet_stretches_of_a_recording_become_nocall_windows(tmp_path):
    rng = np.random.default_rng(1)
    t = np.arange(SR * 3) / SR
    call = 0.5 * np.sin(2 * np.pi * 3000 * t) * (np.sin(2 * np.pi * 4 * t) > 0)
    x = np.concatenate([call, np.zeros(SR * 9)]) + rng.normal(0, 1e-4, SR * 12)
    p = tmp_path / "r.wav"
    sf.write(p, x.astype(np.float32), SR, subtype="FLOAT")
    levels = frame_levels(x, SR)
    assert quiet_mask(levels, [0.0, 2.0, 4.0, 6.0], 2.0, 25.0) == [False, False, True, True]
    windows = [Sample(str(p), "warbler", "train", str(p), start_s=s, end_s=s + 2.0) for s in (0.0, 2.0, 4.0, 6.0, 8.0)]
    out, n = relabel_quiet(windows, quiet_db=25.0, clip_seconds=2.0, sample_rate=SR, highpass_hz=None)
    assert n == 3 and [w.label for w in out] == ["warbler", "warbler", BACKGROUND_CLASS, BACKGROUND_CLASS,
                                                  BACKGROUND_CLASS]
    assert all(w.split == "train" and w.group == str(p) for w in out)  # split and group kept: no leakage


@pytest.fixture(scope="module")
def nocall_run(calls, background_dir, tmp_path_factory) -> Path:
    """A tiny call model trained on generated calls plus no-call windows (generated noise, a background folder)."""
    out = tmp_path_factory.mktemp("runs")
    args = [*FAST, f"data.root={calls}", f"output_dir={out}", f"data.background={background_dir}",
            "trainer.max_epochs=6", "data.batch_size=8", "optim.lr=0.02", "data.valid_fraction=0.25",
            "threshold.fpr=0.1", "threshold.presence_fpr=null", "test_after_fit=false"]  # species thresholds alone
    assert fit_main(args) == 0
    (run,) = list((out / "demo_calls").iterdir())
    return run


def test_trained_call_model_is_silent_on_noise_and_names_calls(nocall_run, noise_wav, tmp_path, capsys):
    meta = checkpoint_meta(nocall_run)
    assert meta["background_class"] == BACKGROUND_CLASS
    th = meta["thresholds"]
    assert th["target"] == "fpr" and th["target_value"] == 0.1 and len(th["values"]) == len(meta["classes"])
    assert th["values"][meta["classes"].index(BACKGROUND_CLASS)] is None
    m = json.loads((nocall_run / "eval" / "metrics.json").read_text())
    assert m["nocall/generated_silent"] >= 0.9  # newly generated noise: silent
    assert "thresholds.csv" in m["outputs"] and m["background_class"] == BACKGROUND_CLASS

    out = tmp_path / "noise.csv"
    assert predict_main([f"model={nocall_run}", f"input={noise_wav}", f"output={out}"]) == 0
    assert rows_of(out) == []  # default: nothing passes its threshold on noise, so no row
    said = " ".join(capsys.readouterr().err.split())
    assert "no window passed its species' threshold" in said and "always_top1=true" in said
    assert predict_main([f"model={nocall_run}", f"input={noise_wav}", f"output={out}", "always_top1=true"]) == 0
    guesses = rows_of(out)
    assert len(guesses) == 10 and BACKGROUND_CLASS not in {r["species"] for r in guesses}  # a best guess per window

    recordings = sorted({w.path for w in read_manifest(nocall_run / "manifest.csv")
                         if w.label != BACKGROUND_CLASS and w.split != "train"})
    named = 0
    for i, rec in enumerate(recordings):
        assert predict_main([f"model={nocall_run}", f"input={rec}", f"output={tmp_path / f'c{i}.csv'}"]) == 0
        rows = rows_of(tmp_path / f"c{i}.csv")
        assert BACKGROUND_CLASS not in {r["species"] for r in rows}
        named += bool(rows)
    assert named >= len(recordings) // 2, f"only {named} of {len(recordings)} call recordings gave a row"


def test_onnx_export_carries_the_thresholds_and_decides_the_same(nocall_run, noise_wav, tmp_path):
    from birdvision.exporting.metadata import read_metadata
    from birdvision.prediction.api import load

    out = tmp_path / "export"
    assert export_main([f"ckpt={nocall_run}", "format=onnx", f"output_dir={out}"]) == 0
    meta, ck = read_metadata(out / "model.onnx"), checkpoint_meta(nocall_run)
    assert meta["thresholds"] == ck["thresholds"] and meta["background_class"] == BACKGROUND_CLASS
    a, b = load(nocall_run), load(out / "model.onnx")
    assert np.array_equal(a.thresholds, b.thresholds, equal_nan=True) and a.background_class == b.background_class
    recs = sorted({w.path for w in read_manifest(nocall_run / "manifest.csv") if w.label != BACKGROUND_CLASS})[:3]
    windows = []
    for r in [noise_wav, *recs]:
        x = sf.read(r, dtype="float32")[0]
        x = x.mean(axis=1) if x.ndim == 2 else x
        windows += [x[i: i + a.input_shape[0]] for i in range(0, len(x) - a.input_shape[0] + 1, a.input_shape[0])]
    batch = np.stack(windows).astype(np.float32)
    pa, pb = a.predict_batch(batch), b.predict_batch(batch)
    # A probability within float noise of its threshold could flip; none is here, so the decisions are equal.
    margin = np.abs(pa - np.nan_to_num(a.thresholds, nan=-1)[None]).min()
    assert margin > 1e-4
    da, db = a.decide(pa, top_k=3), b.decide(pb, top_k=3)
    assert [[s for s, _ in r] for r in da] == [[s for s, _ in r] for r in db]
    assert any(da) and not all(da)  # some windows give rows, some (the noise) none


def test_call_presence_gives_call_windows_rows_and_travels_with_the_model(nocall_run, noise_wav, tmp_path):
    """Re-chosen with call presence on: windows where no species passes but 1 - p(no-call) does get their best
    species; the presence threshold is stored in the checkpoint and the export, and both engines apply it."""
    import shutil

    from birdvision.evaluation.evaluator import evaluate_checkpoint
    from birdvision.prediction.api import load

    run = tmp_path / "run"
    shutil.copytree(nocall_run, run)
    before = json.loads((nocall_run / "eval" / "metrics.json").read_text())
    th = {"fpr": 0.1, "precision": None, "presence_fpr": 0.01, "ood_far": 0.2, "ood_images": 0, "ood": None}
    m = evaluate_checkpoint(run, "valid", tmp_path / "ev", threshold=type("T", (), th)())
    stored = checkpoint_meta(run)["thresholds"]
    assert stored["presence"] is not None and stored["presence_fpr"] == 0.01 and "presence" not in \
        checkpoint_meta(nocall_run)["thresholds"]
    assert m["presence/threshold"] == stored["presence"] and 0 <= m["presence/call_windows_with_row"] <= 1
    assert export_main([f"ckpt={run}", "format=onnx", f"output_dir={tmp_path / 'export'}"]) == 0
    card = json.loads((tmp_path / "export" / "model.json").read_text())
    assert card["decisions"]["thresholds"]["presence"] == stored["presence"]
    assert card["decisions"]["background_class"] == BACKGROUND_CLASS

    recs = sorted({w.path for w in read_manifest(run / "manifest.csv") if w.label != BACKGROUND_CLASS})[:3]
    for engine_model in (run, tmp_path / "export" / "model.onnx"):
        p, old = load(engine_model), load(nocall_run)
        assert p.presence == stored["presence"] and old.presence is None
        bg = p.classes.index(BACKGROUND_CLASS)
        for rec in recs:
            y, sr = sf.read(rec, dtype="float32", always_2d=True)
            assert sr == p.preprocess["sample_rate"]  # generated at the model's rate: no resampling needed here
            y, n = y.mean(axis=1), p.input_shape[0]
            x = np.stack([y[i:i + n] for i in range(0, len(y) - n + 1, n)])
            probs = p.predict_batch(x)
            rows, rows_old = p.decide(probs, top_k=1), old.decide(old.predict_batch(x), top_k=1)
            for r, r_old, q in zip(rows, rows_old, probs, strict=True):
                if r_old:  # a species passing its threshold is written with or without presence
                    assert r
                present = 1 - q[bg] >= p.presence
                assert bool(r) == (bool(r_old) or present)  # presence adds exactly the windows it should
    assert before["nocall/generated_silent"] >= 0.9
