"""Real inputs for the parity gate and INT8 calibration, decoded once and shared by both engines.

Every photo is decoded once, in full (:func:`~birdvision.data.photos.decode.load_rgb`), to a
``uint8 [H, W, 3]`` array at its own size. PyTorch resizes and normalises that array with
the evaluation transform, and ONNX Runtime gets the same array (the graph resizes and
normalises: so the gate also proves the in-graph resize equals the training one) or
PyTorch's normalised tensor (bare models). Photos larger than :data:`MAX_SIDE_FACTOR`
times the model's size are first reduced by an integer box filter to bound memory
(256 phone photos would take 9 GB); both engines see the reduced array, so the gate
still compares the two resizes on the same pixels. Spectrogram models get the same
waveform windows on both sides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from birdvision.data.manifest import ManifestError, Sample, read_manifest
from birdvision.data.photos.decode import IMAGE_SUFFIXES, ImageLoadError, as_rgb_array, load_rgb
from birdvision.exporting import ExportError
from birdvision.runs.folders import run_dir_of
from birdvision.spec import AudioSpec
from birdvision.spec import from_dict as spec_from_dict

log = logging.getLogger(__name__)

MAX_SIDE_FACTOR = 4  # parity / calibration photos keep at most 4x the model's size per side


@dataclass
class InputSet:
    """Decoded model inputs with their labels (-1 where a sample's label is not a model class)."""

    inputs: np.ndarray | list[np.ndarray]  # uint8 [H, W, 3] photos at their own sizes, or float32 [N, T] waveforms
    labels: np.ndarray  # int64 [N]
    paths: list[str]
    origin: str

    def __len__(self) -> int:
        return len(self.labels)


def _folder_samples(folder: Path, classes: list[str]) -> list[Sample]:
    """Photos under a folder; a parent folder named like a class gives the label."""
    if (folder / "manifest.csv").is_file():
        return read_manifest(folder / "manifest.csv")
    known = set(classes)
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(Sample(path=str(p), label=p.parent.name if p.parent.name in known else ""))
    return out


def find_samples(ckpt: Path, *, split: str, data: str | None, classes: list[str]) -> tuple[list[Sample], str]:
    """Samples to use: ``data`` (a folder or a manifest) or the run's manifest rows of ``split``."""
    try:
        if data:
            p = Path(data).expanduser()
            if p.is_dir():
                samples = _folder_samples(p, classes)
            elif p.is_file():
                samples = read_manifest(p)
            else:
                raise ExportError(f"{data} does not exist (expected a folder of photos or a manifest CSV)")
            if any(s.split == split for s in samples):
                samples = [s for s in samples if s.split == split]
            origin = str(p)
        else:
            run = run_dir_of(ckpt) or ckpt.parent  # a loose checkpoint: the manifest beside it
            manifest = run / "manifest.csv"
            if not manifest.is_file():
                raise ExportError(f"{run} has no manifest.csv to take {split} samples from; pass parity.data=FOLDER")
            samples = [s for s in read_manifest(manifest) if s.split == split]
            origin = f"{manifest} (split={split})"
    except ManifestError as e:
        raise ExportError(str(e)) from None
    return [s for s in samples if s.active], origin


def spread(samples: list[Sample], n: int) -> list[Sample]:
    """``n`` samples evenly spaced over the list (manifests are sorted by class, so classes are covered)."""
    if n <= 0 or n >= len(samples):
        return list(samples)
    idx = np.unique(np.linspace(0, len(samples) - 1, n).round().astype(int))
    return [samples[i] for i in idx]


def load_inputs(samples: list[Sample], classes: list[str], preprocess: dict[str, Any], origin: str) -> InputSet:
    """Decode samples into model inputs; unreadable photos are skipped with a warning."""
    idx = {c: i for i, c in enumerate(classes)}
    spec = spec_from_dict(preprocess)
    if spec.is_audio:
        return _load_audio(samples, classes, spec, origin)
    cap = MAX_SIDE_FACTOR * spec.size
    arrays, labels, paths = [], [], []
    for s in samples:
        try:
            img = load_rgb(s.path)
        except ImageLoadError as e:
            log.warning("skipping unreadable photo: %s", e)
            continue
        factor = -(-max(img.size) // cap)
        arrays.append(as_rgb_array(img.reduce(factor) if factor > 1 else img))
        labels.append(idx.get(s.label, -1))
        paths.append(s.path)
    if not arrays:
        raise ExportError(f"no readable photos in {origin}")
    return InputSet(arrays, np.asarray(labels, dtype=np.int64), paths, origin)


def _load_audio(samples: list[Sample], classes: list[str], spec: AudioSpec, origin: str) -> InputSet:
    """Waveform windows through the project's own evaluation dataset (same windowing as training)."""
    known = [s for s in samples if s.label in classes]
    if not known:
        raise ExportError(f"no samples in {origin} carry one of the model's classes")
    ds = spec.eval_dataset(known, classes)
    xs, ys = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        xs.append(np.asarray(x, dtype=np.float32).reshape(-1))
        ys.append(int(y))
    return InputSet(np.stack(xs), np.asarray(ys, dtype=np.int64), [s.path for s in known][: len(xs)], origin)


def input_set(ckpt: Path, meta: dict[str, Any], *, split: str, data: str | None, n: int, purpose: str) -> InputSet:
    """``n`` decoded inputs for ``purpose`` (parity or calibration); an empty set is an error."""
    samples, origin = find_samples(ckpt, split=split, data=data, classes=list(meta["classes"]))
    if not samples:
        raise ExportError(
            f"the {purpose} set is empty: no samples in {origin}; "
            f"pass {purpose}.data=FOLDER_OR_MANIFEST with photos of the model's classes"
        )
    return load_inputs(spread(samples, n), list(meta["classes"]), dict(meta["preprocess"]), origin)
