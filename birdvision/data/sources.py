"""Turn what the user points at (a manifest, BIRDS-525, a class-folder tree, nothing) into samples.

Training always works from a list of :class:`Sample` (a manifest); this module is the one
place that walks folders, and it reports everything it leaves out.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from birdvision.data.images import IMAGE_SUFFIXES
from birdvision.data.manifest import SPLITS, ManifestError, Sample, read_manifest
from birdvision.data.splits import grouped_split

log = logging.getLogger(__name__)


class DataSourceError(ValueError):
    """The data folder or manifest cannot be used as given."""


@dataclass
class Discovery:
    """Samples found plus the files left out, each with a reason."""

    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    origin: str = ""


SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


def _split_name(name: str) -> str | None:
    return SPLIT_NAMES.get(name.lower())


@dataclass
class BirdsCsvRow:
    """One row of BIRDS-525's ``birds.csv`` (``split`` is None when its data set is unknown)."""

    lineno: int
    rel: str
    label: str
    raw_split: str
    split: str | None


def read_birds_csv(csv_path: Path) -> list[BirdsCsvRow]:
    """The rows of a ``birds.csv`` (``class id, filepaths, labels, data set, scientific name``)."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in reader.fieldnames or []}
            need = ("filepaths", "labels", "data set")
            if any(c not in cols for c in need):
                raise DataSourceError(f"{csv_path}: expected columns {need}, found {list(cols)}")
            rows = []
            for lineno, row in enumerate(reader, start=2):
                rel = (row[cols["filepaths"]] or "").strip().replace("\\", "/")
                raw = (row[cols["data set"]] or "").strip()
                rows.append(BirdsCsvRow(lineno, rel, (row[cols["labels"]] or "").strip(), raw, _split_name(raw)))
            return rows
    except (OSError, UnicodeDecodeError) as e:
        raise DataSourceError(f"cannot read {csv_path}: {e}") from None


def _from_birds_csv(root: Path, csv_path: Path) -> Discovery:
    samples, skipped = [], []
    for row in read_birds_csv(csv_path):
        p = root / row.rel
        if row.split is None:
            skipped.append((str(p), f"unknown split {row.raw_split!r} in birds.csv"))
        elif not p.is_file():
            skipped.append((str(p), "listed in birds.csv but missing on disk"))
        else:
            samples.append(Sample(str(p), row.label, row.split, group=str(p)))
    listed = {s.path for s in samples} | {p for p, _ in skipped}
    for split in SPLITS:
        for p in sorted((root / split).glob("*/*")) if (root / split).is_dir() else []:
            if p.suffix.lower() in IMAGE_SUFFIXES and str(p) not in listed:
                skipped.append((str(p), "on disk but not listed in birds.csv"))
    return Discovery(samples, skipped, f"{csv_path} (BIRDS-525 index)")


def _walk_classes(folder: Path, split: str, suffixes: set[str], skipped: list) -> list[Sample]:
    out = []
    for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in cls.iterdir() if p.is_file())
        n0 = len(out)
        for p in files:
            if p.suffix.lower() in suffixes:
                out.append(Sample(str(p), cls.name, split, group=str(p)))
            elif not p.name.startswith("."):
                skipped.append((str(p), f"not a {'/'.join(sorted(suffixes))} file"))
        if len(out) == n0:
            skipped.append((str(cls), "class folder has no usable files"))
    return out


def discover(
    root: str | Path,
    *,
    suffixes: set[str] | None = None,
    valid_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> Discovery:
    """Samples under ``root``: BIRDS-525 (``birds.csv``), split folders, or one class-folder tree."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataSourceError(f"data.root {root} does not exist or is not a folder")
    suffixes = suffixes or IMAGE_SUFFIXES
    if (root / "birds.csv").is_file() and suffixes is IMAGE_SUFFIXES:
        d = _from_birds_csv(root, root / "birds.csv")
    else:
        skipped: list = []
        split_dirs = {s: p for p in root.iterdir() if p.is_dir() and (s := _split_name(p.name))}
        if split_dirs:
            samples = []
            for split, p in sorted(split_dirs.items()):
                samples += _walk_classes(p, split, suffixes, skipped)
            d = Discovery(samples, skipped, f"{root} (split folders)")
        else:
            samples = _walk_classes(root, "", suffixes, skipped)
            grouped_split(samples, valid_fraction=valid_fraction, test_fraction=test_fraction, seed=seed)
            d = Discovery(samples, skipped, f"{root} (class folders, grouped split seed={seed})")
    if not d.samples:
        raise DataSourceError(f"no usable files found under {root}")
    return d


def from_manifest(path: str | Path, *, valid_fraction: float, test_fraction: float, seed: int) -> Discovery:
    """Samples from a manifest CSV; rows without a split are split here, grouped."""
    try:
        samples = read_manifest(path)
    except ManifestError as e:
        raise DataSourceError(str(e)) from None
    dropped = [(s.path, f"status=dropped in {path}") for s in samples if not s.active]
    active = [s for s in samples if s.active]
    if any(not s.split for s in active):
        if any(s.split for s in active):
            raise DataSourceError(f"{path}: some rows have a split and some do not; give all or none")
        grouped_split(active, valid_fraction=valid_fraction, test_fraction=test_fraction, seed=seed)
    return Discovery(active, dropped, f"{path} (manifest)")


def check_splits(samples: list[Sample]) -> list[str]:
    """Problems that make training meaningless (missing splits, classes absent from train)."""
    problems = []
    by_split = {s: {x.label for x in samples if x.split == s} for s in SPLITS}
    for s in ("train", "valid"):
        if not by_split[s]:
            problems.append(f"the {s} split is empty")
    missing = sorted((by_split["valid"] | by_split["test"]) - by_split["train"])
    if missing:
        problems.append(f"{len(missing)} class(es) appear in valid/test but not in train: {missing[:5]}")
    return problems
