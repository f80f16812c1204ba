"""Shared fixtures: small generated photo sets and the real-data location (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("BIRDVISION_OFFLINE", "1")  # never try to download weights in tests

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture(scope="session", autouse=True)
def _nocall_cache(tmp_path_factory):
    """Generated no-call recordings go to a temporary folder shared by the session, not ~/.cache."""
    import birdvision.data.audio.background as background

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(background, "SYNTHETIC_CACHE", tmp_path_factory.mktemp("nocall-cache"))
        yield


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata`` beside the checkout; tests using it skip when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is not present")
    return REALDATA


@pytest.fixture(scope="session")
def demo_photos(tmp_path_factory) -> Path:
    """A small synthetic BIRDS-525-style photo set (3 species, 32 px)."""
    from birdvision.data.photos.demo import make_demo_photos

    return make_demo_photos(tmp_path_factory.mktemp("demo"), n_species=3, per_split=(12, 4, 4), size=32)


def fit_args(root: Path, out: Path, *extra: str) -> list[str]:
    """Arguments for a seconds-long fit with the tiny test backbone."""
    return [
        "recipe=demo", f"data.root={root}", f"output_dir={out}", "model.backbone=test_tiny", "model.pretrained=false",
        "data.image_size=32", "data.num_workers=0", "trainer.max_epochs=2", "data.batch_size=8", *extra,
    ]


def tiny_calls_classifier(sample_rate: int = 16000):
    """A tiny spectrogram classifier (1-s windows, mel frontend, 3 classes) with a sharpened head, so its
    answers differ clearly between inputs; seeded, so every call builds the same weights."""
    import torch

    from birdvision.data.audio.mel import MelFrontend
    from birdvision.training.module import BirdClassifier

    mel = MelFrontend(sample_rate=sample_rate, n_fft=512, hop_length=256, n_mels=32, f_min_hz=50, f_max_hz=8000).spec()
    spec = {"kind": "audio", "sample_rate": sample_rate, "clip_seconds": 1.0, "stereo": "mix", "highpass_hz": 300.0,
            "mel": mel, "in_chans": 1}
    torch.manual_seed(0)
    m = BirdClassifier("test_tiny", ["a", "b", "c"], in_chans=1, preprocess=spec)
    with torch.no_grad():
        m.net.classifier[1].weight.mul_(40.0)
    return m
