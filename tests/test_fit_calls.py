"""Spectrogram mode end to end through the same fit CLI, on generated calls."""

import json
from pathlib import Path

import pytest
import torch

from birdvision.data.manifest import read_manifest
from birdvision.fit import main
from birdvision.runs.checkpoint import checkpoint_meta, load_classifier
from birdvision.spec import from_dict as spec_from_dict


@pytest.fixture(scope="module")
def calls_run(tmp_path_factory) -> Path:
    from birdvision.data.audio.demo import make_demo_calls

    root = make_demo_calls(tmp_path_factory.mktemp("calls"), n_species=3, recordings_per_species=5, seconds=4)
    out = tmp_path_factory.mktemp("runs")
    args = [
        "recipe=demo_calls", f"data.root={root}", f"output_dir={out}", "model.backbone=test_tiny",
        "trainer.max_epochs=1", "data.num_workers=0", "audio.stereo=split", "data.batch_size=8",
    ]
    assert main(args) == 0
    (run,) = list((out / "demo_calls").iterdir())
    return run


def test_no_recording_in_two_splits(calls_run: Path):
    windows = read_manifest(calls_run / "manifest.csv")
    assert all(w.start_s is not None and w.end_s is not None for w in windows)
    split_of: dict[str, set] = {}
    for w in windows:
        split_of.setdefault(w.group, set()).add(w.split)
    assert all(len(s) == 1 for s in split_of.values())
    assert {w.split for w in windows} == {"train", "valid", "test"}


def test_audio_checkpoint_runs_from_its_spec(calls_run: Path):
    meta = checkpoint_meta(calls_run / "checkpoints" / "last.ckpt")
    pre = meta["preprocess"]
    assert pre["kind"] == "audio" and pre["mel"]["n_mels"] == 64 and meta["in_chans"] == 1
    frontend = spec_from_dict(pre).frontend()
    model = load_classifier(calls_run)
    wave = torch.randn(2, int(pre["sample_rate"] * pre["clip_seconds"])) * 0.1
    probs = model.predict_proba(frontend(wave))
    assert probs.shape == (2, len(meta["classes"]))
    s = json.loads((calls_run / "summary.json").read_text())
    assert s["mode"] == "audio" and s["epochs_completed"] == 1
