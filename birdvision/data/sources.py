"""Turn what the user points at (a manifest, BIRDS-525, a class-folder tree, nothing) into samples.

Training always works from a list of :class:`Sample` (a manifest); this module turns
folders into one (listing them through :mod:`birdvision.data.files`), and it reports
everything it leaves out. What a data set may not be is refused here, in one line: two
folders for one split (``val/`` beside ``valid/``), a class name that is no line of text.
A list of files (``birds.csv``, a manifest) may only name files inside its data root,
unless ``data.allow_outside_root=true``; entries outside are left out, never read.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from birdvision.data.files import class_tree, file_problem, list_folder, outside_root, walk_files
from birdvision.data.manifest import SPLITS, DataSourceError, ManifestError, Sample, label_problem, read_manifest
from birdvision.data.photos.decode import IMAGE_SUFFIXES
from birdvision.runs.artifacts import open_text

log = logging.getLogger(__name__)


@dataclass
class Discovery:
    """Samples found plus the files left out, each with a reason."""

    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    origin: str = ""


SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


def _split_name(name: str) -> str | None:
    return SPLIT_NAMES.get(name.lower())


def split_folders(root: Path, dirs: list[Path]) -> dict[str, Path]:
    """The split folders among ``dirs`` (``val/`` and ``validation/`` are ``valid``), by split.

    Two folders for one split (``val/`` and ``valid/``, ``train/`` and ``Train/``) are an
    error: using one would silently leave the other out.
    """
    found: dict[str, list[Path]] = {}
    for p in dirs:
        split = _split_name(p.name)
        if split:
            found.setdefault(split, []).append(p)
    for split, ps in found.items():
        if len(ps) > 1:
            names = " and ".join(f"{p.name}/" for p in sorted(ps))
            raise DataSourceError(f"both {names} exist under {root} (each would be the {split} split): merge them or remove one")
    return {s: ps[0] for s, ps in found.items()}


def check_label(label: str, where: str) -> None:
    """Raise :class:`DataSourceError` naming ``where`` when ``label`` cannot be a class name."""
    problem = label_problem(label)
    if problem:
        raise DataSourceError(f"{where}: class name {label!r} {problem}; rename it")


def _outside(path: Path, root: Path) -> str | None:
    real = outside_root(path, root)
    if real is None:
        return None
    return f"outside the data root {root} (really {real}); data.allow_outside_root=true would allow it"


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
        with open_text(csv_path) as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in reader.fieldnames or []}
            need = ("filepaths", "labels", "data set")
            if any(c not in cols for c in need):
                raise DataSourceError(f"{csv_path}: expected columns {need}, found {list(cols)}")
            rows = []
            for lineno, row in enumerate(reader, start=2):
                rel = (row[cols["filepaths"]] or "").strip().replace("\\", "/")
                raw = (row[cols["data set"]] or "").strip()
                label = (row[cols["labels"]] or "").strip()
                if label:
                    check_label(label, f"{csv_path}:{lineno}")
                rows.append(BirdsCsvRow(lineno, rel, label, raw, _split_name(raw)))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataSourceError(f"cannot read {csv_path}: {e}") from None


def _from_birds_csv(root: Path, csv_path: Path, allow_outside_root: bool) -> Discovery:
    samples, skipped = [], []
    for row in read_birds_csv(csv_path):
        p = root / row.rel
        if not row.rel or not row.label:
            skipped.append((str(p), f"birds.csv line {row.lineno}: empty filepaths or labels"))
        elif row.split is None:
            skipped.append((str(p), f"unknown split {row.raw_split!r} in birds.csv"))
        elif not allow_outside_root and (why := _outside(p, root)):
            skipped.append((str(p), f"listed in birds.csv, {why}"))
        elif problem := file_problem(p):
            skipped.append((str(p), f"listed in birds.csv but {problem}"))
        else:
            samples.append(Sample(str(p), row.label, row.split, group=str(p)))
    listed = {s.path for s in samples} | {p for p, _ in skipped}
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        walk = walk_files(root / split)
        skipped += walk.skipped
        for p in walk.files:
            if p.suffix.lower() in IMAGE_SUFFIXES and str(p) not in listed:
                skipped.append((str(p), "on disk but not listed in birds.csv"))
    return Discovery(samples, skipped, f"{csv_path} (BIRDS-525 index)")


def _walk_classes(folder: Path, split: str, suffixes: set[str], skipped: list) -> list[Sample]:
    """Files at any depth below each class folder in ``folder``, labelled by the class folder."""
    out = []
    tree = class_tree(folder)
    skipped += tree.top.skipped
    skipped += [(str(p), "a file outside any class folder has no label") for p in tree.top.files
                if p.suffix.lower() in suffixes]
    for cls, walk in tree.classes.items():
        check_label(cls.name, f"class folder {str(cls)!r}")
        skipped += walk.skipped
        n0 = len(out)
        for p in walk.files:
            if p.suffix.lower() in suffixes:
                out.append(Sample(str(p), cls.name, split, group=str(p)))
            else:
                skipped.append((str(p), f"not a {'/'.join(sorted(suffixes))} file"))
        if len(out) == n0:
            skipped.append((str(cls), "class folder has no usable files"))
    return out


def discover(
    root: str | Path,
    *,
    suffixes: set[str] | None = None,
    allow_outside_root: bool = False,
) -> Discovery:
    """Samples under ``root``: BIRDS-525 (``birds.csv``), split folders, or one class-folder tree.

    A class-folder tree has no splits: its samples come back with ``split=""`` for
    :func:`birdvision.data.splits.assign_splits` to deal."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataSourceError(f"data.root {root} does not exist or is not a folder")
    suffixes = suffixes or IMAGE_SUFFIXES
    split_dirs = split_folders(root, list_folder(root).dirs)
    if (root / "birds.csv").is_file() and suffixes is IMAGE_SUFFIXES:
        d = _from_birds_csv(root, root / "birds.csv", allow_outside_root)
    else:
        skipped: list = []
        if split_dirs:
            samples = []
            for split, p in sorted(split_dirs.items()):
                samples += _walk_classes(p, split, suffixes, skipped)
            d = Discovery(samples, skipped, f"{root} (split folders)")
        else:
            d = Discovery(_walk_classes(root, "", suffixes, skipped), skipped, f"{root} (class folders)")
    if not d.samples:
        raise DataSourceError(f"no usable files found under {root}{_why_none(d.skipped)}")
    return d


def _why_none(skipped: list[tuple[str, str]]) -> str:
    """`` (N left out, most for: REASON, e.g. PATH)`` for an error about finding nothing."""
    if not skipped:
        return ""
    reason, n = Counter(why for _, why in skipped).most_common(1)[0]
    example = next(p for p, why in skipped if why == reason)
    return f" ({len(skipped)} left out, {n} for: {reason}, e.g. {example!r})"


def manifest_root(manifest: str | Path, data_root: str | None) -> Path:
    """The folder a manifest's files must be in: ``data.root`` when given, else the data root
    recorded by the audit that wrote the manifest (its ``summary.json`` beside it), else the
    manifest's own folder."""
    if data_root:
        return Path(data_root).expanduser()
    folder = Path(manifest).expanduser().parent
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = None
    if isinstance(summary, dict) and "check" in summary and isinstance(summary.get("data_root"), str):
        return Path(summary["data_root"])
    return folder


def from_manifest(path: str | Path, *, root: Path | None = None) -> Discovery:
    """Samples from a manifest CSV (rows without a split keep ``split=""``).

    With ``root``, rows whose file is outside it (symlinks and ``..`` resolved) are left out
    unread; ``root=None`` trusts every row (manifests birdvision wrote into a run folder).
    """
    try:
        samples = read_manifest(path)
    except ManifestError as e:
        raise DataSourceError(str(e)) from None
    dropped = [(s.path, f"status=dropped in {path}") for s in samples if not s.active]
    active = [s for s in samples if s.active]
    if root is not None:
        outside = {s.path: why for s in active if (why := _outside(Path(s.path), root))}
        if outside and len(outside) == len({s.path for s in active}):
            first = next(iter(outside))
            raise DataSourceError(
                f"{path}: all {len(outside)} file(s) are outside the data root {root} (e.g. {first!r}): "
                "give data.root=FOLDER that holds them, or data.allow_outside_root=true"
            )
        dropped += [(p, f"listed in {path}, {why}") for p, why in outside.items()]
        active = [s for s in active if s.path not in outside]
    return Discovery(active, dropped, f"{path} (manifest)")
