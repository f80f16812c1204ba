"""Listing data folders that may hold anything: the one place that walks them, and says what it leaves out.

The audit's inventory, training's data sources (photo folders, recordings) and predict's
input folders all list files here. Symlinks are followed, but a link that loops
(``a -> b -> a``, a link to itself) or that leads back to a folder the walk is already in
(a link to ``..``, to ``/``) is left out with a reason, as is anything that is not a
regular file (a FIFO would block the first read forever; sockets and devices are no
data) and a folder that cannot be listed. Hidden entries (a leading dot) are counted,
never listed. Names that are not valid UTF-8 arrive as surrogate escapes and are kept as
they are (:mod:`birdvision.runs.artifacts` says how they are written).

Lists of files (``birds.csv``, a manifest) must name files inside their data root:
:func:`outside_root` resolves symlinks and ``..`` before it compares.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Listing:
    """Folders and regular files found, and what was left out as ``(path, reason)``."""

    dirs: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    hidden: int = 0


def _special(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO/named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def _kind(path: str) -> tuple[str, str]:
    """``("dir" | "file" | "skip", reason)`` for one path, following symlinks, without opening it."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "skip", "symlink loop (the link leads back to itself)"
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return "skip", f"broken symlink (to {target!r}, which does not exist)"
        return "skip", f"cannot inspect ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return "dir", ""
    if stat.S_ISREG(st.st_mode):
        return "file", ""
    return "skip", f"not a regular file ({_special(st.st_mode)})"


def file_problem(path: str | os.PathLike) -> str | None:
    """Why a listed path cannot be read as a data file (missing, a folder, a FIFO, a loop), or None."""
    p = os.fspath(path)
    if not os.path.lexists(p):
        return "missing on disk"
    kind, reason = _kind(p)
    if kind == "dir":
        return "a folder, not a file"
    return reason or None


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _list(folder: Path, real: str, ancestors: tuple[str, ...], out: Listing) -> list[tuple[Path, str]]:
    """One level of ``folder`` into ``out``; returns the sub-folders with their real paths."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        out.skipped.append((str(folder), f"cannot list folder ({e.strerror or e})"))
        return []
    subdirs = []
    for e in entries:
        if e.name.startswith("."):
            out.hidden += 1
            continue
        p = Path(e.path)
        kind, reason = _kind(e.path)
        if kind == "skip":
            out.skipped.append((e.path, reason))
        elif kind == "file":
            out.files.append(p)
        else:
            sub_real = os.path.realpath(e.path) if e.is_symlink() else os.path.join(real, e.name)
            if sub_real in ancestors or _within(real, sub_real):
                out.skipped.append((e.path, f"symlink to {sub_real}, a folder this walk is already in (a loop)"))
                continue
            subdirs.append((p, sub_real))
    return subdirs


def list_folder(folder: str | os.PathLike) -> Listing:
    """The sub-folders and regular files directly in ``folder`` (sorted by name), and what was left out."""
    folder = Path(folder)
    out = Listing()
    real = os.path.realpath(folder)
    out.dirs = [p for p, _ in _list(folder, real, (real,), out)]
    return out


def walk_files(folder: str | os.PathLike) -> Listing:
    """Every regular file below ``folder`` at any depth (sorted, depth first), and what was left out."""
    folder = Path(folder)
    out = Listing()

    def visit(d: Path, real: str, ancestors: tuple[str, ...]) -> None:
        for sub, sub_real in _list(d, real, ancestors, out):
            visit(sub, sub_real, (*ancestors, sub_real))

    real = os.path.realpath(folder)
    visit(folder, real, (real,))
    return out


@dataclass
class ClassTree:
    """A folder of class folders: the folder's own listing (its loose files have no label) and, per class
    folder, every file below it at any depth. Nothing is filtered by suffix: each caller decides what counts."""

    top: Listing
    classes: dict[Path, Listing]

    @property
    def hidden(self) -> int:
        return self.top.hidden + sum(c.hidden for c in self.classes.values())


def class_tree(folder: str | os.PathLike) -> ClassTree:
    """Every class folder directly in ``folder`` walked to any depth: the one walk of a class-folder tree
    (photo sources, recordings, the audit's inventory)."""
    top = list_folder(folder)
    return ClassTree(top, {cls: walk_files(cls) for cls in top.dirs})


def outside_root(path: str | os.PathLike, root: str | os.PathLike) -> str | None:
    """Where ``path`` really is (symlinks and ``..`` resolved) when that is outside ``root``, else None."""
    real = os.path.realpath(path)
    return None if _within(real, os.path.realpath(root)) else real
