"""Photo mode at the data edge: photo samples -> decodability check -> train/valid/test datasets (or shards)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from birdvision.data.manifest import DataSourceError, Sample
from birdvision.data.photos.decode import ImageLoadError, load_rgb
from birdvision.data.photos.demo import make_demo_photos
from birdvision.data.photos.transforms import ImageDataset, eval_transform, train_transform
from birdvision.data.pipeline import Pipeline
from birdvision.data.sources import Discovery, discover
from birdvision.models import get_spec
from birdvision.spec import ImageSpec

log = logging.getLogger(__name__)

DEMO_PHOTOS = Path.home() / ".cache" / "birdvision" / "demo" / "photos"


def discover_photos(cfg: DictConfig) -> Discovery:
    """Photo samples under ``data.root`` (or the embedded demo photos), with the splits the folder brings."""
    root = cfg.data.root
    if root is None:
        root = make_demo_photos(DEMO_PHOTOS)
        log.info("no data.root given: using the embedded synthetic demo photos in %s", root)
    return discover(root, allow_outside_root=cfg.data.allow_outside_root)


def image_preprocess(cfg: DictConfig) -> ImageSpec:
    spec = get_spec(cfg.model.backbone)
    return ImageSpec(cfg.data.image_size or spec.input_size, spec.mean, spec.std, spec.interpolation)


def _train_transform(cfg: DictConfig, pre: ImageSpec):
    a = cfg.data.augment
    return train_transform(pre, hflip=a.hflip, perspective=a.perspective, rotation_deg=a.rotation_deg,
                           affine_translate=a.affine_translate, affine_scale=a.affine_scale)


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


def build_photo_datasets(cfg: DictConfig, found: Discovery, samples: list[Sample], classes: list[str]) -> Pipeline:
    """Datasets per split: training augmentation on train, the evaluation transform on valid and test."""
    pre = image_preprocess(cfg)
    idx = {c: i for i, c in enumerate(classes)}
    by = {s: [x for x in samples if x.split == s] for s in ("train", "valid", "test")}
    for split, chosen in by.items():
        _check_decodable(split, chosen)
    datasets = {
        "train": ImageDataset(by["train"], idx, _train_transform(cfg, pre)),
        "valid": ImageDataset(by["valid"], idx, eval_transform(pre)),
        "test": ImageDataset(by["test"], idx, eval_transform(pre)),
    }
    return Pipeline(samples, classes, datasets, pre, 3, found.skipped, found.origin)


def build_shard_pipeline(cfg: DictConfig) -> Pipeline:
    """Datasets streamed from ``data.shards`` (written by ``python -m birdvision.shards``)."""
    try:
        from birdvision.data.photos.shards import shard_datasets  # optional extra: litdata
    except ImportError as e:
        raise DataSourceError(str(e)) from None

    if cfg.data.mode != "image":
        raise DataSourceError("data.shards holds photos; spectrogram mode trains from recording folders")
    pre = image_preprocess(cfg)
    samples, classes, datasets = shard_datasets(cfg.data.shards, pre, _train_transform(cfg, pre), eval_transform(pre),
                                                seed=cfg.seed, manifest=cfg.data.manifest)
    return Pipeline(samples, classes, datasets, pre, 3, [], f"shards {cfg.data.shards}")
