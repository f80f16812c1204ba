"""What is in the data folder: every file with its label and split, and layout problems.

Unlike training's folder walk, the audit looks at every file, whatever its suffix (a
``.txt`` in a species folder is reported as unreadable, not skipped), and also at files
on disk that ``birds.csv`` does not list, so nothing leaves the data set unreported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from birdvision.checks.policy import AuditError
from birdvision.data.sources import SPLIT_NAMES, DataSourceError, read_birds_csv

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Candidate:
    """One file to audit: where it is, what it is labelled, which split it is in."""

    path: str  # absolute
    rel: str  # relative to the data root, POSIX separators (how decisions name files)
    label: str
    split: str  # "" until a grouped split is made


@dataclass
class LayoutIssue:
    """A problem found by looking at the folder tree alone (no decoding)."""

    path: str
    issue: str  # missing_file | unlisted | stray_file | unreadable (folders that cannot be listed)
    label: str = ""
    split: str = ""
    detail: str = ""


@dataclass
class Inventory:
    """The data set as found on disk."""

    root: Path
    layout: str  # birds525 | split_folders | class_folders
    candidates: list[Candidate]
    issues: list[LayoutIssue] = field(default_factory=list)
    folders: set[tuple[str, str]] = field(default_factory=set)  # (label, split) of every species folder
    hidden_files: int = 0

    @property
    def has_splits(self) -> bool:
        """Whether the data comes with its own train/valid/test assignment."""
        return self.layout != "class_folders"


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _files_under(folder: Path, inv: Inventory) -> list[Path]:
    """All non-hidden files below ``folder``; unlistable folders are reported, not skipped."""
    out: list[Path] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        inv.issues.append(
            LayoutIssue(str(folder), "unreadable", detail=f"cannot list folder ({e.strerror or e})")
        )
        return out
    for e in entries:
        if e.name.startswith("."):
            inv.hidden_files += 1
            continue
        p = Path(e.path)
        if e.is_dir(follow_symlinks=True):
            out += _files_under(p, inv)
        else:
            out.append(p)
    return out


def _walk_split(inv: Inventory, folder: Path, split: str, listed: set[str] | None) -> None:
    """Species folders below ``folder``; with ``listed`` (birds.csv), only files it does not list."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        inv.issues.append(
            LayoutIssue(str(folder), "unreadable", split=split, detail=f"cannot list folder ({e})")
        )
        return
    for e in entries:
        if e.name.startswith("."):
            inv.hidden_files += 1
            continue
        p = Path(e.path)
        if not e.is_dir(follow_symlinks=True):
            if split or p.suffix.lower() in IMAGE_SUFFIXES:
                inv.issues.append(
                    LayoutIssue(
                        str(p), "stray_file", split=split, detail="file outside any species folder: no label"
                    )
                )
            continue
        inv.folders.add((p.name, split))
        for f in _files_under(p, inv):
            rel = _rel(inv.root, f)
            if listed is not None:
                if rel in listed:
                    continue
                inv.issues.append(
                    LayoutIssue(str(f), "unlisted", p.name, split, "on disk but not listed in birds.csv")
                )
            inv.candidates.append(Candidate(str(f), rel, p.name, split))


def _read_birds_csv(inv: Inventory, csv_path: Path) -> set[str]:
    listed: set[str] = set()
    try:
        rows = read_birds_csv(csv_path)
    except DataSourceError as e:
        raise AuditError(str(e)) from None
    for row in rows:
        if not row.rel or not row.label or row.split is None:
            raise AuditError(
                f"{csv_path}:{row.lineno}: need filepaths, labels and a data set of train/valid/test, "
                f"got {row.rel!r}, {row.label!r}, {row.raw_split!r}"
            )
        listed.add(row.rel)
        p = inv.root / row.rel
        if not p.is_file():
            inv.issues.append(LayoutIssue(str(p), "missing_file", row.label, row.split, "listed in birds.csv"))
            continue
        inv.candidates.append(Candidate(str(p), row.rel, row.label, row.split))
        inv.folders.add((p.parent.name, row.split))
    return listed


def take_inventory(root: str | os.PathLike) -> Inventory:
    """Find every file under ``root``: BIRDS-525 (``birds.csv``), split folders, or class folders."""
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise AuditError(f"data.root {root} does not exist")
    if not root.is_dir():
        raise AuditError(f"data.root {root} is not a folder")
    try:
        split_dirs = {}
        for p in sorted(root.iterdir()):
            if p.is_dir() and p.name.lower() in SPLIT_NAMES:
                split_dirs.setdefault(SPLIT_NAMES[p.name.lower()], p)
    except OSError as e:
        raise AuditError(f"cannot list data.root {root}: {e}") from None
    csv_path = root / "birds.csv"
    if csv_path.is_file():
        inv = Inventory(root, "birds525", [])
        listed = _read_birds_csv(inv, csv_path)
        for split, p in split_dirs.items():
            _walk_split(inv, p, split, listed)
    elif split_dirs:
        inv = Inventory(root, "split_folders", [])
        for split, p in split_dirs.items():
            _walk_split(inv, p, split, None)
    else:
        inv = Inventory(root, "class_folders", [])
        _walk_split(inv, root, "", None)
    if not inv.candidates and not inv.issues:
        raise AuditError(
            f"no files found under {root}: expected birds.csv, train/valid/test folders, or species folders"
        )
    return inv
