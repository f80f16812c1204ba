"""Streamed shards of a photo manifest with LitData: write once, train from a folder or object storage.

Why LitData (Lightning's own streaming engine) rather than WebDataset: it is made for the trainer
we already use, splits the stream across DDP ranks and dataloader workers by itself, reads
local folders and ``s3://``/``gs://`` URLs alike, and its ``StreamingDataLoader`` has a
``state_dict`` that Lightning stores in every checkpoint, so a run killed mid-epoch resumes
mid-epoch without serving a sample twice or skipping one (WebDataset has no loader state).

Layout of a shard set ``OUT/``: ``OUT/<split>/`` is one LitData dataset per split (chunks plus
``index.json``); ``OUT/shards.json`` holds the class list, the manifest digest, the sample
counts and the format version; ``OUT/manifest.csv`` is the manifest the shards were cut from.
Each item is ``{"index", "label", "data"}``: the photo's encoded bytes as they were on disk
(decoded at training time exactly like a folder's files, so accuracy does not depend on the
source) and its position in the split's sample list.

Shuffling: a stream can only shuffle locally (LitData permutes chunk order and, by default, only
windows of 256 items inside a chunk), so a split written in class order gave training batches of
a handful of neighbouring species: measured on the real photos, a head-only epoch reached 37%
valid accuracy from shards against 67% from folders. The training split is therefore written in
a seeded random order, and read with a full in-chunk permutation every epoch.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import random
from pathlib import Path
from typing import Any

import torch

try:
    from litdata import StreamingDataLoader, StreamingDataset
    from litdata.streaming.writer import BinaryWriter
except ImportError as e:  # the [shards] extra
    raise ImportError("shards need LitData: pip install -e \".[shards]\" (or pip install litdata)") from e

from birdvision.console import progress_bar
from birdvision.data.manifest import DataSourceError, Sample, class_list, manifest_digest, write_manifest
from birdvision.data.photos.decode import ImageLoadError, load_rgb
from birdvision.runs.artifacts import write_json

log = logging.getLogger(__name__)

# A full permutation inside each chunk, not the 256-item windows LitData >= 0.2.7x uses by default
# (older releases permute whole chunks and have no such argument).
_FULL_ITEM_SHUFFLE = ({"item_shuffle_window": 0}
                      if "item_shuffle_window" in inspect.signature(StreamingDataset.__init__).parameters else {})

SHARDS_META = "shards.json"
FORMAT = 1
SPLITS = ("train", "valid", "test")


def write_shards(samples: list[Sample], output: str | Path, *, chunk_mb: int = 64, seed: int = 0) -> dict:
    """Cut the active samples of a manifest into per-split LitData shards under ``output``; returns the metadata.

    The training split is written in a random order drawn from ``seed`` (see the module's note on
    shuffling); ``manifest.csv`` lists each split in the order of its items. Written in this process with LitData's chunk writer (its ``optimize`` spawns worker processes
    for transforms we do not need: the items are the files' bytes).
    """
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataSourceError(f"output={out} exists and is not an empty folder: shards are written into a new one")
    active = [s for s in samples if s.active]
    classes = class_list(active)
    idx = {c: i for i, c in enumerate(classes)}
    counts: dict[str, int] = {}
    written: list[Sample] = []
    with progress_bar() as bar:
        task = bar.add_task("writing shards", total=len(active))
        for split in SPLITS:
            part = [s for s in active if s.split == split]
            if split == "train":
                random.Random(seed).shuffle(part)
            writer, n = None, 0
            for s in part:
                bar.advance(task)
                try:
                    data = Path(s.path).read_bytes()
                    load_rgb(io.BytesIO(data))  # a photo that does not decode never enters a shard
                except (OSError, ImageLoadError) as e:
                    log.warning("left out of the shards: %s (%s)", s.path, e)
                    continue
                if writer is None:
                    (out / split).mkdir(parents=True, exist_ok=True)
                    writer = BinaryWriter(str(out / split), chunk_bytes=f"{chunk_mb}MB")
                writer.add_item(n, {"index": n, "label": idx[s.label], "data": data})
                written.append(s)
                n += 1
            if writer is not None:
                writer.done()
                writer.merge()
            counts[split] = n
    if class_list(written) != classes:
        raise DataSourceError(f"classes {sorted(set(classes) - set(class_list(written)))} have no readable photo left")
    active = written
    write_manifest(out / "manifest.csv", active)
    meta = {"format": FORMAT, "mode": "image", "classes": classes, "manifest_digest": manifest_digest(active),
            "counts": counts, "train_order_seed": seed}
    write_json(out / SHARDS_META, meta)
    return meta


def read_shards_meta(shards: str) -> dict:
    """The metadata of a shard set (local folder or URL), checked."""
    if "://" in shards:
        import fsspec

        try:
            with fsspec.open(f"{shards.rstrip('/')}/{SHARDS_META}", "r") as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise DataSourceError(f"data.shards={shards}: cannot read {SHARDS_META} ({e})") from None
    else:
        p = Path(shards).expanduser() / SHARDS_META
        if not p.is_file():
            raise DataSourceError(f"data.shards={shards}: no {SHARDS_META} (write shards with python -m birdvision.shards)")
        try:
            meta = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataSourceError(f"data.shards={shards}: {SHARDS_META} is damaged ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("classes"), list):
        raise DataSourceError(f"data.shards={shards}: {SHARDS_META} is not a birdvision shard set of format {FORMAT}")
    return meta


def check_chunks(split_dir: str) -> None:
    """A local split's chunk files are all there and whole (sizes from its ``index.json``): a shard cut
    short is an error before training, not a crash mid-epoch. Remote splits are left to LitData."""
    if "://" in split_dir:
        return
    d = Path(split_dir)
    try:
        chunks = json.loads((d / "index.json").read_text(encoding="utf-8"))["chunks"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataSourceError(f"{d}: no readable index.json ({type(e).__name__}); write the shards again") from None
    for c in chunks:
        f = d / c["filename"]
        size = f.stat().st_size if f.is_file() else -1
        if size != c["chunk_bytes"]:
            what = "is missing" if size < 0 else f"is cut short ({size} of {c['chunk_bytes']} bytes)"
            raise DataSourceError(f"shard {f} {what}; write the shards again")


class ShardDataset(StreamingDataset):
    """One split of a shard set: ``(image tensor, label, index)`` per item, decoded and transformed here.

    The index is the item's position in the split's sample list (``manifest.csv`` beside the shards),
    so a run can account for every sample it saw.
    """

    streamed = True  # the datamodule gives it LitData's loader

    def __init__(self, input_dir: str, transform: Any, labels: list[int], *, shuffle: bool, seed: int):
        check_chunks(input_dir)
        super().__init__(input_dir, shuffle=shuffle, seed=seed, drop_last=False, **_FULL_ITEM_SHUFFLE)
        self.image_transform = transform
        self._labels = labels

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, int, int]:
        item = super().__getitem__(index)
        try:
            img = load_rgb(io.BytesIO(item["data"]))
        except ImageLoadError as e:
            raise ImageLoadError(f"shard item {item['index']} ({self.input_dir.path or self.input_dir.url}): {e}") from None
        return self.image_transform(img), int(item["label"]), int(item["index"])

    @property
    def labels(self) -> list[int]:
        """The class index of every item, by item index (not stream order): for class counts."""
        return self._labels


def shard_loader(ds: ShardDataset, *, batch_size: int, num_workers: int, drop_last: bool) -> StreamingDataLoader:
    """A loader whose position Lightning saves in every checkpoint (mid-epoch resume)."""
    return StreamingDataLoader(ds, batch_size=batch_size, num_workers=num_workers, drop_last=drop_last,
                               pin_memory=torch.cuda.is_available())


def shard_datasets(shards: str, pre: Any, train_tf: Any, eval_tf: Any, *, seed: int,
                   manifest: str | None = None) -> tuple[list[Sample], list[str], dict[str, Any]]:
    """(samples, classes, datasets per split) from a shard set, refusing one cut from another manifest."""
    from birdvision.data.manifest import read_manifest

    meta = read_shards_meta(shards)
    local = "://" not in shards
    samples = read_manifest(Path(shards).expanduser() / "manifest.csv") if local else []
    digest = meta["manifest_digest"]
    if local and manifest_digest(samples) != digest:
        raise DataSourceError(f"data.shards={shards}: manifest.csv does not match {SHARDS_META} (digest); "
                              "write the shards again")
    if manifest:
        given = read_manifest(manifest)
        if manifest_digest([s for s in given if s.active]) != digest:
            raise DataSourceError(f"data.shards={shards} were cut from another manifest than data.manifest={manifest}")
    classes = list(meta["classes"])
    if local and class_list(samples) != classes:
        raise DataSourceError(f"data.shards={shards}: the class list in {SHARDS_META} does not match its manifest")
    idx = {c: i for i, c in enumerate(classes)}
    base = shards.rstrip("/")
    datasets: dict[str, Any] = {}
    for split in SPLITS:
        labels = [idx[s.label] for s in samples if s.split == split]
        if not meta["counts"].get(split):
            datasets[split] = []
            continue
        datasets[split] = ShardDataset(f"{base}/{split}", train_tf if split == "train" else eval_tf, labels,
                                       shuffle=split == "train", seed=seed)
    return samples, classes, datasets
