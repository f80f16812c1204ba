"""What is in the data folder: every file with its label and split, and layout problems.

Unlike training's folder walk, the audit looks at every file, whatever its suffix (a
``.txt`` in a species folder is reported as unreadable, not skipped), and also at files
on disk that ``birds.csv`` does not list, so nothing leaves the data set unreported.
Folders are listed by :mod:`birdvision.data.files`: symlink loops, FIFOs and folders that
cannot be listed are ``unreadable`` findings. A ``birds.csv`` row that resolves outside
the data root is an ``outside_root`` finding and is never read (unless
``data.allow_outside_root=true``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from birdvision.checks.policy import AuditError
from birdvision.data.files import Listing, class_tree, file_problem, list_folder, outside_root
from birdvision.data.manifest import DataSourceError
from birdvision.data.photos.decode import IMAGE_SUFFIXES
from birdvision.data.sources import check_label, read_birds_csv, split_folders


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
    issue: str  # missing_file | outside_root | unlisted | stray_file | unreadable (loops, FIFOs, unlistable folders)
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


def _skipped(inv: Inventory, listing: Listing, split: str, label: str = "") -> None:
    """Entries the folder listing left out (loops, FIFOs, unlistable folders) become findings."""
    inv.hidden_files += listing.hidden
    for path, why in listing.skipped:
        inv.issues.append(LayoutIssue(path, "unreadable", label, split, why))


def _label(folder: Path) -> str:
    try:
        check_label(folder.name, f"species folder {str(folder)!r}")
    except DataSourceError as e:
        raise AuditError(str(e)) from None
    return folder.name


def _walk_split(inv: Inventory, folder: Path, split: str, listed: set[str] | None) -> None:
    """Species folders below ``folder``; with ``listed`` (birds.csv), only files it does not list."""
    tree = class_tree(folder)
    _skipped(inv, tree.top, split)
    for p in tree.top.files:
        if split or p.suffix.lower() in IMAGE_SUFFIXES:
            inv.issues.append(
                LayoutIssue(str(p), "stray_file", split=split, detail="file outside any species folder: no label")
            )
    for p, walk in tree.classes.items():
        label = _label(p)
        inv.folders.add((label, split))
        _skipped(inv, walk, split, label)
        for f in walk.files:
            rel = _rel(inv.root, f)
            if listed is not None:
                if rel in listed:
                    continue
                inv.issues.append(
                    LayoutIssue(str(f), "unlisted", label, split, "on disk but not listed in birds.csv")
                )
            inv.candidates.append(Candidate(str(f), rel, label, split))


def _read_birds_csv(inv: Inventory, csv_path: Path, allow_outside_root: bool) -> set[str]:
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
        real = None if allow_outside_root else outside_root(p, inv.root)
        if real is not None:  # never read: not even hashed
            inv.issues.append(LayoutIssue(
                str(p), "outside_root", row.label, row.split,
                f"listed in birds.csv, resolves to {real} outside data.root (data.allow_outside_root=true allows it)",
            ))
            continue
        problem = file_problem(p)
        if problem:
            inv.issues.append(LayoutIssue(str(p), "missing_file", row.label, row.split, f"listed in birds.csv, {problem}"))
            continue
        inv.candidates.append(Candidate(str(p), row.rel, row.label, row.split))
        inv.folders.add((p.parent.name, row.split))
    return listed


def take_inventory(root: str | os.PathLike, *, allow_outside_root: bool = False) -> Inventory:
    """Find every file under ``root``: BIRDS-525 (``birds.csv``), split folders, or class folders."""
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise AuditError(f"data.root {root} does not exist")
    if not root.is_dir():
        raise AuditError(f"data.root {root} is not a folder")
    top = list_folder(root)
    if top.skipped and top.skipped[0][0] == str(root):
        raise AuditError(f"cannot list data.root {root}: {top.skipped[0][1]}")
    try:
        split_dirs = split_folders(root, top.dirs)
    except DataSourceError as e:
        raise AuditError(str(e)) from None
    csv_path = root / "birds.csv"
    if csv_path.is_file():
        inv = Inventory(root, "birds525", [])
        listed = _read_birds_csv(inv, csv_path, allow_outside_root)
        for split, p in split_dirs.items():
            _walk_split(inv, p, split, listed)
    elif split_dirs:
        inv = Inventory(root, "split_folders", [])
        for split, p in split_dirs.items():
            _walk_split(inv, p, split, None)
    else:
        inv = None
    if inv is not None:
        inv.issues += [LayoutIssue(path, "unreadable", detail=why) for path, why in top.skipped]
    else:
        inv = Inventory(root, "class_folders", [])
        _walk_split(inv, root, "", None)
    if not inv.candidates and not inv.issues:
        raise AuditError(
            f"no files found under {root}: expected birds.csv, train/valid/test folders, or species folders"
        )
    return inv
