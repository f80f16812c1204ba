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


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    On an exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; artefacts should read like any file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
