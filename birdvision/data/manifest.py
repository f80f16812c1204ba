"""The manifest: one row per sample, the hand-off between the audit and training.

Columns: ``path,label,split,group,sha256,status[,start_s,end_s]``. ``group`` ties
together everything that must stay on one side of a split (a recording, a photo and
its duplicates). ``status`` is ``ok``, ``flagged`` or ``dropped``; training reads
every row that is not ``dropped``. Relative paths are resolved against the folder
that holds the manifest.

Paths are written as the exact bytes of the name on disk and cells that a spreadsheet
would run as a formula get a leading ``'``; :func:`read_manifest` undoes both
(:mod:`birdvision.runs.artifacts`), so a manifest always reads back to the samples written.
A label must be a line of text (:func:`label_problem`): it ends up in ``labels.txt``,
one class per line, on every device that runs an export.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from birdvision.runs.artifacts import from_spreadsheet, open_text, spreadsheet_safe, write_text

SPLITS = ("train", "valid", "test")
STATUSES = ("ok", "flagged", "dropped")
COLUMNS = ("path", "label", "split", "group", "sha256", "status", "start_s", "end_s")
REQUIRED = ("path", "label")


class DataSourceError(ValueError):
    """The data folder or manifest cannot be used as given (raised anywhere at the data edge)."""


class ManifestError(ValueError):
    """A manifest that cannot be read or does not make sense."""


@dataclass
class Sample:
    """One training example: a file (or a time range of one) with its label and split."""

    path: str
    label: str
    split: str = ""
    group: str = ""
    sha256: str = ""
    status: str = "ok"
    start_s: float | None = None
    end_s: float | None = None

    @property
    def active(self) -> bool:
        """Whether training should use this sample."""
        return self.status != "dropped"


_NOT_IN_A_LINE = {"Cc": "a control character (newline, tab, ...)", "Cf": "an invisible format character",
                  "Zl": "a line separator", "Zp": "a paragraph separator"}


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a class name, or None.

    Control and format characters (newline, tab, zero-width, bidi overrides) and line or
    paragraph separators would shift or split the one-class-per-line ``labels.txt``;
    undecodable bytes cannot be written as UTF-8 in an export; surrounding spaces are
    stripped by every CSV reader, so a folder ``"WREN "`` would read back as another class.
    """
    if not label.strip():
        return "is empty"
    if label != label.strip():
        return "starts or ends with white space"
    for ch in label:
        cat = unicodedata.category(ch)
        if cat == "Cs":
            return "is not valid UTF-8 (a folder or file name in another encoding?)"
        if cat in _NOT_IN_A_LINE:
            return f"contains U+{ord(ch):04X}, {_NOT_IN_A_LINE[cat]}"
    return None


def _float_or_none(value: str | None) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    return float(value)


def read_manifest(path: str | os.PathLike) -> list[Sample]:
    """Read a manifest CSV; relative paths are taken relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    with open_text(path) as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ManifestError(
                f"{path}: missing column(s) {missing}; a manifest needs at least "
                f"'path,label' and may have {','.join(COLUMNS)}"
            )
        samples = []
        for lineno, row in enumerate(reader, start=2):
            row = {k.strip(): from_spreadsheet((v or "").strip()) for k, v in row.items() if k}
            if not row.get("path") or not row.get("label"):
                raise ManifestError(f"{path}:{lineno}: empty path or label")
            problem = label_problem(row["label"])
            if problem:
                raise ManifestError(f"{path}:{lineno}: label {row['label']!r} {problem}")
            p = Path(row["path"])
            if not p.is_absolute():
                p = path.parent / p
            status = row.get("status") or "ok"
            if status not in STATUSES:
                raise ManifestError(f"{path}:{lineno}: status {status!r} is not one of {STATUSES}")
            split = row.get("split", "")
            if split == "val":
                split = "valid"
            if split and split not in SPLITS:
                raise ManifestError(f"{path}:{lineno}: split {split!r} is not one of {SPLITS}")
            try:
                start, end = _float_or_none(row.get("start_s")), _float_or_none(row.get("end_s"))
            except ValueError as e:
                raise ManifestError(f"{path}:{lineno}: start_s/end_s must be numbers ({e})") from None
            samples.append(
                Sample(
                    path=str(p),
                    label=row["label"],
                    split=split,
                    group=row.get("group") or str(p),
                    sha256=row.get("sha256", ""),
                    status=status,
                    start_s=start,
                    end_s=end,
                )
            )
    if not samples:
        raise ManifestError(f"{path}: the manifest has no rows")
    return samples


def _rows_csv(samples: list[Sample]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for s in samples:
        writer.writerow(
            [
                spreadsheet_safe(s.path),
                spreadsheet_safe(s.label),
                s.split,
                spreadsheet_safe(s.group),
                s.sha256,
                s.status,
                "" if s.start_s is None else f"{s.start_s:.6g}",
                "" if s.end_s is None else f"{s.end_s:.6g}",
            ]
        )
    return buf.getvalue()


def write_manifest(path: str | os.PathLike, samples: list[Sample]) -> Path:
    """Atomically write ``samples`` as a manifest CSV.

    Relative sample paths are relative to the working directory, but a manifest's relative
    paths are read relative to its own folder: they are written absolute.
    """
    return write_text(path, _rows_csv(_absolute(samples)))


def _absolute(samples: list[Sample]) -> list[Sample]:
    """``samples`` with absolute paths, as a manifest stores them (and its digest counts them), whatever the
    working directory the data root was given from."""
    return [s if os.path.isabs(s.path) else dataclasses.replace(s, path=os.path.abspath(s.path)) for s in samples]


def manifest_digest(samples: list[Sample]) -> str:
    """A short digest of the samples training sees, stored with every checkpoint and export."""
    active = sorted((s for s in _absolute(samples) if s.active), key=lambda s: (s.path, s.start_s or 0.0))
    return hashlib.sha256(_rows_csv(active).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def class_list(samples: list[Sample]) -> list[str]:
    """The sorted list of labels of the active samples."""
    return sorted({s.label for s in samples if s.active})
