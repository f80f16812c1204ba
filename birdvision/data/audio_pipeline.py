"""Spectrogram mode at the data edge: recordings -> grouped split -> windows -> datasets + mel frontend.

The order matters: recordings are split (grouped by recording, and by content hash so a
renamed copy joins its original) *before* windowing, channel splitting or augmentation,
so no piece of one recording can sit on both sides of a split. The datamodule checks it
again on the windows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from birdvision.data.audio import AudioError, discover_recordings
from birdvision.data.audio_augment import AudioAugmentConfig, WaveAugment
from birdvision.data.demo_calls import make_demo_calls
from birdvision.data.manifest import Sample
from birdvision.data.mel import MelFrontend, SpecAugment
from birdvision.data.sources import DataSourceError, Discovery
from birdvision.data.splits import assert_no_leakage, grouped_split
from birdvision.data.windows import AudioWindowDataset, make_windows

log = logging.getLogger(__name__)

DEMO_CALLS = Path.home() / ".cache" / "birdvision" / "demo" / "calls"


def discover_audio(cfg: DictConfig) -> Discovery:
    """Recording-level samples from ``data.root`` (or the synthetic demo calls), split by recording."""
    root = cfg.data.root
    if root is None:
        root = make_demo_calls(DEMO_CALLS)
        log.info("no data.root given: using the embedded synthetic demo calls in %s", root)
    if not Path(root).is_dir():
        raise DataSourceError(f"data.root {root} does not exist or is not a folder")
    try:
        samples, problems = discover_recordings(root)
    except AudioError as e:
        raise DataSourceError(str(e)) from None
    if not samples:
        raise DataSourceError(f"no readable recordings under {root} ({len(problems)} unreadable)")
    first_of: dict[str, str] = {}
    for s in samples:  # byte-identical copies of a recording form one group
        if s.sha256:
            s.group = first_of.setdefault(s.sha256, s.group)
    grouped_split(samples, valid_fraction=cfg.data.valid_fraction, test_fraction=cfg.data.test_fraction, seed=cfg.seed)
    skipped = [(p.path, p.reason) for p in problems]
    return Discovery(samples, skipped, f"{root} (recordings, split by recording seed={cfg.seed})")


def frontend_spec(cfg: DictConfig) -> dict[str, Any]:
    """The mel frontend's parameters for this config."""
    mel = OmegaConf.to_container(cfg.audio.mel, resolve=True)
    return MelFrontend(sample_rate=cfg.audio.sample_rate, **mel).spec()  # type: ignore[arg-type]


def audio_preprocess(cfg: DictConfig) -> dict[str, Any]:
    """The preprocessing spec stored with checkpoints and exports of call models."""
    a = cfg.audio
    return {
        "kind": "audio",
        "sample_rate": int(a.sample_rate),
        "clip_seconds": float(a.clip_seconds),
        "stereo": a.stereo,
        "highpass_hz": a.highpass_hz,
        "mel": frontend_spec(cfg),
        "in_chans": int(a.mel.in_chans),
    }


def build_audio_datasets(cfg: DictConfig, found: Discovery, recordings: list[Sample], classes: list[str]):
    """Windows per split, the training augmentation, and the frontend that runs on each batch."""
    from birdvision.data.pipeline import Pipeline

    a = cfg.audio
    windows: list[Sample] = []
    skipped = list(found.skipped)
    datasets = {}
    aug_cfg = AudioAugmentConfig.from_dict(OmegaConf.to_container(a.augment, resolve=True))  # type: ignore[arg-type]
    for split in ("train", "valid", "test"):
        recs = [r for r in recordings if r.split == split and r.start_s is None]
        pre_windowed = [r for r in recordings if r.split == split and r.start_s is not None]
        report = make_windows(
            recs, clip_seconds=a.clip_seconds, hop_seconds=a.hop_seconds if split == "train" else a.clip_seconds,
            sample_rate=a.sample_rate, min_window_dbfs=a.min_window_dbfs if split == "train" else None,
            highpass_hz=a.highpass_hz,
        )
        log.info("%s windows: %s", split, report.summary())
        skipped += [(p.path, p.reason) for p in report.problems]
        skipped += [(p, "shorter than a window: padded with silence") for p in report.padded]
        split_windows = report.windows + pre_windowed
        windows += split_windows
        datasets[split] = AudioWindowDataset(
            split_windows, classes, sample_rate=a.sample_rate, clip_seconds=a.clip_seconds, stereo=a.stereo,
            highpass_hz=a.highpass_hz, augment=WaveAugment(aug_cfg) if split == "train" and aug_cfg.enabled else None,
            cache_mb=a.cache_mb,
        )
        skipped += [(p.path, p.reason) for p in datasets[split].problems]
    assert_no_leakage(windows)
    spec_aug = SpecAugment(**aug_cfg.spec_augment_kwargs()) if aug_cfg.enabled else None
    pre = audio_preprocess(cfg)
    return Pipeline(
        windows, classes, datasets, pre, in_chans=pre["in_chans"], skipped=skipped, origin=found.origin,
        batch_transform=MelFrontend.from_spec(pre["mel"]), train_batch_transform=spec_aug,
    )


def audio_eval_dataset(samples: list[Sample], classes: list[str], preprocess: dict[str, Any]) -> AudioWindowDataset:
    """Deterministic windows for evaluation from a checkpoint's audio preprocessing spec."""
    return AudioWindowDataset(
        samples, classes, sample_rate=preprocess["sample_rate"], clip_seconds=preprocess["clip_seconds"],
        stereo=preprocess.get("stereo", "mix"), highpass_hz=preprocess.get("highpass_hz"), augment=None,
    )
