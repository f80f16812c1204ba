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

from birdvision.data.audio.augment import WaveAugment, augment_config, spec_augment_kwargs
from birdvision.data.audio.background import (
    BACKGROUND_CLASS,
    background_folder,
    relabel_quiet,
    synthetic_counts,
    synthetic_noise,
)
from birdvision.data.audio.demo import make_demo_calls
from birdvision.data.audio.io import AudioError, discover_recordings
from birdvision.data.audio.mel import MelFrontend, SpecAugment
from birdvision.data.audio.windows import AudioWindowDataset, make_windows
from birdvision.data.manifest import DataSourceError, Sample
from birdvision.data.pipeline import Pipeline
from birdvision.data.sources import Discovery
from birdvision.data.splits import assert_no_leakage, assign_splits
from birdvision.spec import AudioSpec

log = logging.getLogger(__name__)

DEMO_CALLS = Path.home() / ".cache" / "birdvision" / "demo" / "calls"


def discover_audio(cfg: DictConfig) -> Discovery:
    """Recording-level samples from ``data.root`` (or the synthetic demo calls), not yet split (byte-identical
    copies are joined into one group when the split is dealt, :func:`birdvision.data.splits.assign_splits`)."""
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
    skipped = [(p.path, p.reason) for p in problems]
    return Discovery(samples, skipped, f"{root} (recordings)")


def frontend_spec(cfg: DictConfig) -> dict[str, Any]:
    """The mel frontend's parameters for this config."""
    mel = OmegaConf.to_container(cfg.audio.mel, resolve=True)
    return MelFrontend(sample_rate=cfg.audio.sample_rate, **mel).spec()  # type: ignore[arg-type]


def audio_preprocess(cfg: DictConfig) -> AudioSpec:
    """The preprocessing spec stored with checkpoints and exports of call models."""
    a = cfg.audio
    return AudioSpec(sample_rate=int(a.sample_rate), clip_seconds=float(a.clip_seconds), mel=frontend_spec(cfg),
                     stereo=a.stereo, highpass_hz=a.highpass_hz, in_chans=int(a.mel.in_chans))


def _background_sources(cfg: DictConfig, recordings: list[Sample]) -> tuple[list[Sample], list[tuple[str, str]], bool]:
    """No-call recordings to add (a background folder, generated noise), what was skipped, and whether no-call
    windows are wanted at all: not when switched off, nor for a manifest that already holds no-call windows
    (a run's own manifest.csv, where they were made before)."""
    nc = cfg.audio.nocall
    if not nc.enabled or any(r.label == BACKGROUND_CLASS and r.start_s is not None for r in recordings):
        return [], [], nc.enabled
    extra: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    d = cfg.data
    if d.background:
        try:
            found, problems = background_folder(d.background)
        except AudioError as e:
            raise DataSourceError(str(e)) from None
        assign_splits(found, valid_fraction=d.valid_fraction, test_fraction=d.test_fraction, seed=cfg.seed,
                      where=f"data.background={d.background}")
        extra += found
        skipped += [(p.path, p.reason) for p in problems]
    if nc.synthetic:
        counts = synthetic_counts(nc.synthetic, d.valid_fraction, d.test_fraction)
        extra += synthetic_noise(counts, seconds=2 * cfg.audio.clip_seconds, sample_rate=cfg.audio.sample_rate,
                                 seed=cfg.seed)
    return extra, skipped, True


def build_audio_datasets(cfg: DictConfig, found: Discovery, recordings: list[Sample], classes: list[str]) -> Pipeline:
    """Windows per split (species windows, and no-call windows unless ``audio.nocall.enabled=false``), the
    training augmentation, and the frontend that runs on each batch."""
    a = cfg.audio
    skipped = list(found.skipped)
    aug_cfg = augment_config(OmegaConf.to_container(a.augment, resolve=True))  # type: ignore[arg-type]
    extra, bg_skipped, nocall = _background_sources(cfg, recordings)
    skipped += bg_skipped
    per_split: dict[str, list[Sample]] = {}
    plain: dict[str, list[Sample]] = {}  # the same windows without the quiet ones relabelled
    n_quiet = 0
    for split in ("train", "valid", "test"):
        hop = a.hop_seconds if split == "train" else a.clip_seconds
        recs = [r for r in recordings if r.split == split and r.start_s is None and r.label != BACKGROUND_CLASS]
        bg = [r for r in recordings + extra if r.split == split and r.start_s is None and r.label == BACKGROUND_CLASS]
        pre_windowed = [r for r in recordings if r.split == split and r.start_s is not None]
        report = make_windows(
            recs, clip_seconds=a.clip_seconds, hop_seconds=hop,
            sample_rate=a.sample_rate, min_window_dbfs=a.min_window_dbfs if split == "train" else None,
            highpass_hz=a.highpass_hz,
        )
        log.info("%s windows: %s", split, report.summary())
        skipped += [(p.path, p.reason) for p in report.problems]
        skipped += [(p, "shorter than a window: padded with silence") for p in report.padded]
        species = report.windows
        if nocall and a.nocall.quiet_db is not None and split == "train":
            species, n = relabel_quiet(species, quiet_db=a.nocall.quiet_db, clip_seconds=a.clip_seconds,
                                       sample_rate=a.sample_rate, highpass_hz=a.highpass_hz)
            n_quiet += n
        bg_report = make_windows(bg, clip_seconds=a.clip_seconds, hop_seconds=hop, sample_rate=a.sample_rate,
                                 highpass_hz=a.highpass_hz)
        skipped += [(p.path, p.reason) for p in bg_report.problems]
        per_split[split] = species + bg_report.windows + pre_windowed
        plain[split] = report.windows + pre_windowed
    background = None
    if nocall:
        counts = {s: sum(w.label == BACKGROUND_CLASS for w in ws) for s, ws in per_split.items()}
        if counts["train"]:
            background = BACKGROUND_CLASS
            classes = sorted(set(classes) | {BACKGROUND_CLASS})
            log.info("no-call class %r: %s windows (train/valid/test; %d quiet training windows relabelled, "
                     "%d background recordings added)", BACKGROUND_CLASS, "/".join(str(counts[s]) for s in per_split),
                     n_quiet, len(extra))
        else:
            log.warning("no no-call window for training (audio.nocall.quiet_db found none, no data.background, "
                        "audio.nocall.synthetic=0): the model has species classes only and names a species "
                        "for every window")
            per_split = plain
    windows: list[Sample] = []
    datasets = {}
    for split, split_windows in per_split.items():
        windows += split_windows
        datasets[split] = AudioWindowDataset(
            split_windows, classes, sample_rate=a.sample_rate, clip_seconds=a.clip_seconds, stereo=a.stereo,
            highpass_hz=a.highpass_hz, augment=WaveAugment(aug_cfg) if split == "train" and aug_cfg.enabled else None,
            cache_mb=a.cache_mb,
        )
        skipped += [(p.path, p.reason) for p in datasets[split].problems]
    assert_no_leakage(windows)
    spec_aug = SpecAugment(**spec_augment_kwargs(aug_cfg)) if aug_cfg.enabled else None
    pre = audio_preprocess(cfg)
    return Pipeline(
        windows, classes, datasets, pre, in_chans=pre.in_chans, skipped=skipped, origin=found.origin,
        batch_transform=pre.frontend(), train_batch_transform=spec_aug,
        background_class=background,
    )
