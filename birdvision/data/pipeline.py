"""From a fit config to samples, class list, datasets and the preprocessing spec, per mode."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset

from birdvision.data.demo import make_demo_photos
from birdvision.data.images import (
    ImageDataset,
    ImageLoadError,
    ImagePreprocess,
    eval_transform,
    load_rgb,
    train_transform,
)
from birdvision.data.manifest import Sample, class_list
from birdvision.data.sources import DataSourceError, Discovery, check_splits, discover, from_manifest, manifest_root
from birdvision.data.splits import assert_no_leakage
from birdvision.models import get_spec

log = logging.getLogger(__name__)

DEMO_CACHE = Path.home() / ".cache" / "birdvision" / "demo"


@dataclass
class Pipeline:
    """What training needs from the data edge."""

    samples: list[Sample]
    classes: list[str]
    datasets: dict[str, Dataset]
    preprocess: dict[str, Any]
    in_chans: int = 3
    skipped: list[tuple[str, str]] = field(default_factory=list)
    origin: str = ""
    batch_transform: nn.Module | None = None
    train_batch_transform: nn.Module | None = None
    background_class: str | None = None  # the no-call class of spectrogram mode (never a prediction), if any


def _cap(samples: list[Sample], max_per_class: int | None) -> list[Sample]:
    if not max_per_class:
        return samples
    seen: dict[tuple[str, str], int] = {}
    out = []
    for s in samples:
        k = (s.split, s.label)
        if seen.get(k, 0) < max_per_class:
            seen[k] = seen.get(k, 0) + 1
            out.append(s)
    return out


def discover_samples(cfg: DictConfig) -> Discovery:
    """Samples for the configured mode from a manifest, a folder, or the embedded demo."""
    d = cfg.data
    kw = dict(valid_fraction=d.valid_fraction, test_fraction=d.test_fraction, seed=cfg.seed)
    if d.manifest:
        root = None if d.allow_outside_root else manifest_root(d.manifest, d.root)
        return from_manifest(d.manifest, **kw, root=root)
    if d.mode == "audio":
        from birdvision.data.audio_pipeline import discover_audio

        return discover_audio(cfg)
    root = d.root
    if root is None:
        root = make_demo_photos(DEMO_CACHE / "photos")
        log.info("no data.root given: using the embedded synthetic demo photos in %s", root)
    return discover(root, **kw, allow_outside_root=d.allow_outside_root)


def image_preprocess(cfg: DictConfig) -> ImagePreprocess:
    spec = get_spec(cfg.model.backbone)
    return ImagePreprocess(cfg.data.image_size or spec.input_size, spec.mean, spec.std, spec.interpolation)


def _check_decodable(split: str, samples: list[Sample]) -> None:
    """Fail before training when no photo of a split decodes (the dataset would have nothing to serve).

    Stops at the first photo that decodes, so a usable split costs one decode.
    """
    errors = []
    for s in samples:
        try:
            load_rgb(s.path, draft_size=64)  # whether it decodes: a reduced-scale decode reads the whole file too
            return
        except ImageLoadError as e:
            errors.append(str(e))
    if errors:
        raise DataSourceError(f"none of the {len(errors)} photo(s) of the {split} split can be decoded, e.g. {errors[0]}")


def build_pipeline(cfg: DictConfig) -> Pipeline:
    """Discover, check and split the data, then build datasets for the configured mode."""
    if cfg.data.mode not in ("image", "audio"):
        raise DataSourceError(f"data.mode must be 'image' or 'audio', got {cfg.data.mode!r}")
    if cfg.data.shards:
        return _shard_pipeline(cfg)
    found = discover_samples(cfg)
    samples = _cap(found.samples, cfg.data.max_per_class)
    assert_no_leakage(samples)
    problems = check_splits(samples)
    if problems:
        raise DataSourceError(f"{found.origin}: " + "; ".join(problems))
    classes = class_list(samples)
    if cfg.data.mode == "audio":
        from birdvision.data.audio_pipeline import build_audio_datasets

        return build_audio_datasets(cfg, found, samples, classes)
    pre = image_preprocess(cfg)
    idx = {c: i for i, c in enumerate(classes)}
    a = cfg.data.augment
    train_tf = train_transform(
        pre, hflip=a.hflip, perspective=a.perspective, rotation_deg=a.rotation_deg,
        affine_translate=a.affine_translate, affine_scale=a.affine_scale,
    )
    by = {s: [x for x in samples if x.split == s] for s in ("train", "valid", "test")}
    for split, chosen in by.items():
        _check_decodable(split, chosen)
    datasets = {
        "train": ImageDataset(by["train"], idx, train_tf),
        "valid": ImageDataset(by["valid"], idx, eval_transform(pre)),
        "test": ImageDataset(by["test"], idx, eval_transform(pre)),
    }
    return Pipeline(samples, classes, datasets, pre.spec(), 3, found.skipped, found.origin)


def _shard_pipeline(cfg: DictConfig) -> Pipeline:
    try:
        from birdvision.data.shards import shard_datasets
    except ImportError as e:
        raise DataSourceError(str(e)) from None

    if cfg.data.mode != "image":
        raise DataSourceError("data.shards holds photos; spectrogram mode trains from recording folders")
    pre = image_preprocess(cfg)
    a = cfg.data.augment
    train_tf = train_transform(pre, hflip=a.hflip, perspective=a.perspective, rotation_deg=a.rotation_deg,
                               affine_translate=a.affine_translate, affine_scale=a.affine_scale)
    samples, classes, datasets = shard_datasets(cfg.data.shards, pre, train_tf, eval_transform(pre), seed=cfg.seed,
                                                manifest=cfg.data.manifest)
    return Pipeline(samples, classes, datasets, pre.spec(), 3, [], f"shards {cfg.data.shards}")


def eval_dataset(samples: list[Sample], classes: list[str], preprocess: dict[str, Any]) -> Dataset:
    """A deterministic dataset for evaluation/prediction from a checkpoint's preprocessing spec.

    Image specs yield normalised tensors; audio specs yield waveform windows (the mel
    frontend, built from the same spec, runs on the batch).
    """
    idx = {c: i for i, c in enumerate(classes)}
    unknown = sorted({s.label for s in samples} - set(idx))
    if unknown:
        raise DataSourceError(
            f"{len(unknown)} label(s) are not among the model's {len(classes)} classes: {unknown[:5]}"
        )
    if preprocess.get("kind") == "audio":
        from birdvision.data.audio_pipeline import audio_eval_dataset

        return audio_eval_dataset(samples, classes, preprocess)
    pre = ImagePreprocess.from_spec(preprocess)
    return ImageDataset(samples, idx, eval_transform(pre))


def batch_transform_for(preprocess: dict[str, Any]) -> nn.Module | None:
    """The on-device transform a preprocessing spec needs (the mel frontend for audio), else None."""
    if preprocess.get("kind") == "audio":
        from birdvision.data.mel import MelFrontend

        return MelFrontend.from_spec(preprocess["mel"])
    return None
