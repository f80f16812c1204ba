"""From a fit config to a :class:`~birdvision.data.pipeline.Pipeline`: find the samples, split, check, build.

The only module that knows both modes: it discovers samples (a manifest, or the mode's folder
discovery), deals the splits the data does not bring (:func:`birdvision.data.splits.assign_splits`,
the one place that splits), checks them (:func:`birdvision.data.splits.check_splits`), and hands the
samples to the photo or the audio builder.
"""

from __future__ import annotations

from omegaconf import DictConfig

from birdvision.data.audio.pipeline import build_audio_datasets, discover_audio
from birdvision.data.manifest import DataSourceError, Sample, class_list
from birdvision.data.photos.pipeline import build_photo_datasets, build_shard_pipeline, discover_photos
from birdvision.data.pipeline import Pipeline
from birdvision.data.sources import Discovery, from_manifest, manifest_root
from birdvision.data.splits import assign_splits, check_splits

MODES = ("image", "audio")


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
    """Samples for the configured mode from a manifest, a folder, or the embedded demo, every one with a split."""
    d = cfg.data
    if d.mode not in MODES:
        raise DataSourceError(f"data.mode must be 'image' or 'audio', got {d.mode!r}")
    if d.manifest:
        found = from_manifest(d.manifest, root=None if d.allow_outside_root else manifest_root(d.manifest, d.root))
    elif d.mode == "audio":
        found = discover_audio(cfg)
    else:
        found = discover_photos(cfg)
    dealt = assign_splits(found.samples, valid_fraction=d.valid_fraction, test_fraction=d.test_fraction,
                          seed=cfg.seed, where=found.origin)
    if dealt:
        found.origin = f"{found.origin[:-1]}, {dealt})" if found.origin.endswith(")") else f"{found.origin} ({dealt})"
    return found


def build_pipeline(cfg: DictConfig) -> Pipeline:
    """Discover, split and check the data, then build datasets for the configured mode."""
    if cfg.data.shards:
        return build_shard_pipeline(cfg)
    found = discover_samples(cfg)
    samples = _cap(found.samples, cfg.data.max_per_class)
    check_splits(samples, found.origin)
    build = build_audio_datasets if cfg.data.mode == "audio" else build_photo_datasets
    return build(cfg, found, samples, class_list(samples))
