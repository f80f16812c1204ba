"""Writing artefacts that matter (checkpoints, manifests, exports, reports) atomically, and their text.

A reader never sees half a file: everything is written to a temporary file in the
same folder and renamed over the target, which POSIX guarantees to be atomic.

File names are bytes on Linux and need not be valid UTF-8; Python hands such names over
with surrogate escapes (``b"bad\\xff.jpg"`` -> ``"bad\\udcff.jpg"``). Text artefacts are
written with ``errors="surrogateescape"`` and read back with :func:`open_text`, so a CSV
holds the exact bytes of the name on disk and reads back to the same path; JSON keeps
its ``\\udcff`` escapes (which read back the same); HTML and Markdown show U+FFFD
(:func:`for_people`). CSV cells meant for spreadsheets cannot start a formula
(:func:`spreadsheet_safe`); birdvision's own readers undo that (:func:`from_spreadsheet`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)

# errno -> what a user should read when a write fails (the only OSErrors turned into one-line errors).
WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is too large for this file system",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "the name is too long",
}


class OutputError(OSError):
    """An output path that cannot be written: a folder where a file belongs (or the reverse),
    a read-only or full disk. An ``OSError``, so code that already handles write failures still does."""


def write_error(e: OSError, path: str | os.PathLike | None = None) -> OutputError | None:
    """A one-line :class:`OutputError` for a failed write of ``path``, or None when ``e`` is not a failure
    of space or permission (:data:`WRITE_ERRNOS`). Without ``path`` the error's own file is named."""
    if isinstance(e, OutputError):
        return e
    if e.errno not in WRITE_ERRNOS:
        return None
    reason = f"{WRITE_ERRNOS[e.errno]} ({e.strerror or os.strerror(e.errno)})"
    if path is not None:
        text = f"cannot write {path}: {reason}"
    else:  # raised somewhere else: it may be a read, so no verb is assumed
        text = f"{e.filename}: {reason}" if e.filename is not None else reason
    out = OutputError(text)
    out.errno = e.errno
    return out


def _existing_ancestor(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_folder(folder: Path, what: str) -> None:
    """Create and remove a hidden file in ``folder``: the one honest test of writability (ACLs, read-only
    mounts, root squash all answer it)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".birdvision-write-test-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        reason = WRITE_ERRNOS.get(e.errno or 0, e.strerror or str(e))
        raise OutputError(f"{what} cannot be written: {reason} in {folder}") from None
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on this platform / file system
        return
    if st.f_blocks > 0 and st.f_bavail == 0:  # a real file system reporting no space left for us
        raise OutputError(f"{what} cannot be written: the disk is full (0 bytes free in {folder})")


def check_output_dir(path: str | os.PathLike, *, key: str = "output_dir") -> Path:
    """Refuse, before any work, an output folder that cannot be written; creates nothing.

    ``key`` names the option in the message (``output_dir=PATH is a file, not a folder``).
    """
    p = Path(path).expanduser()
    what = f"{key}={p}"
    with _stat_errors(what):
        if p.exists() and not p.is_dir():
            raise OutputError(f"{what} is a file, not a folder")
        base = _existing_ancestor(p)
        if not base.is_dir():
            raise OutputError(f"{what} cannot be created: {base} is a file, not a folder")
        _probe_folder(base, what)
    return p


def check_output_file(path: str | os.PathLike, *, key: str = "output", label: str | None = None) -> Path:
    """Refuse, before any work, an output file path that cannot be written (a folder, a path under a file,
    a read-only folder); creates nothing. Messages start with ``key=PATH``, or with ``label`` when given."""
    p = Path(path).expanduser()
    what = label or f"{key}={p}"
    if str(path).strip() == "" or p.name in ("", ".", ".."):
        raise OutputError(f"{key}={path!r} is not a file name")
    with _stat_errors(what):
        if p.is_dir():
            raise OutputError(f"{what} is a folder; give a file path such as {p / 'NAME'}")
        if p.exists() and not p.is_file():
            raise OutputError(f"{what} exists and is not a regular file")
        base = _existing_ancestor(p.parent)
        if not base.is_dir():
            raise OutputError(f"{what} cannot be created: {base} is a file, not a folder")
        _probe_folder(base, what)
    return p


@contextlib.contextmanager
def _stat_errors(what: str) -> Iterator[None]:
    """Looking at a path can fail too (a folder we may not enter): one line, like a failed write."""
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        reason = WRITE_ERRNOS.get(e.errno or 0, e.strerror or str(e))
        raise OutputError(f"{what} cannot be written: {reason} ({e.filename})") from None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    On an exception the temporary file is removed and ``target`` is left untouched. A write
    that fails for want of space or permission (:data:`WRITE_ERRNOS`) becomes an
    :class:`OutputError` naming ``target``, not the temporary file.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise (write_error(e, target) or e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; artefacts should read like any file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as e:
        # Only failures of this write are renamed (no file named, or the temporary / target path);
        # an error about another file raised inside the block passes through unchanged.
        if e.filename not in (None, str(tmp_path), str(target)):
            raise
        raise (write_error(e, target) or e) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left in ``folder`` when a process was killed
    mid-write (``.NAME.XXXXXXXX.tmp``); call it only while holding the folder (e.g. its run lock)."""
    d = Path(folder)
    if not d.is_dir():
        return []
    stale = [p for p in d.glob(".*.tmp") if p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8; file-name surrogate escapes as the original bytes) to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")
    return Path(target)


def open_text(path: str | os.PathLike):  # noqa: ANN201 - a text file object
    """Open a UTF-8 text file (a CSV) for reading: a BOM (Excel) is dropped, bytes that are not UTF-8 become surrogate escapes.

    File names written by :func:`write_text` read back to the very same ``str`` (and so the
    same path on disk); a third-party CSV in another encoding does not stop the reader.
    """
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def for_people(text: object) -> str:
    """``text`` for HTML and Markdown: a file name's undecodable bytes shown as U+FFFD."""
    s = str(text)
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate that is no file-name escape
        return s.encode("utf-8", "replace").decode("utf-8")


# Cells starting with these are formulas (or become one) in Excel, LibreOffice and Google
# Sheets; OWASP's advice is a leading single quote, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def spreadsheet_safe(cell: object) -> str:
    """A CSV cell that a spreadsheet shows as text: ``'`` before a formula start (numbers stay numbers).

    A cell that already starts with ``'`` before a formula start (or a second ``'``) gets
    one more, so :func:`from_spreadsheet` gives back exactly the original.
    """
    s = "" if cell is None else str(cell)
    if s.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(s):
        return "'" + s
    if s.startswith("'") and s[1:2] and (s[1:2] in FORMULA_STARTS or s[1] == "'"):
        return "'" + s
    return s


def from_spreadsheet(cell: str) -> str:
    """Undo :func:`spreadsheet_safe` (also on a hand-written ``'=...``); any other cell is kept as it is."""
    if cell.startswith("'") and cell[1:2] and (cell[1:2] in FORMULA_STARTS or cell[1] == "'"):
        return cell[1:]
    return cell


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json(target: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()
