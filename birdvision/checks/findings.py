"""Findings: one row per (file, issue) with the action taken, written as ``findings.csv``.

``findings.csv`` is for people and spreadsheets: text cells are spreadsheet-safe and
:func:`read_findings` undoes that (:mod:`birdvision.runs.artifacts`).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from birdvision.runs.artifacts import from_spreadsheet, open_text, spreadsheet_safe, write_text

COLUMNS = ("path", "split", "label", "issue", "score", "related_path", "action", "detail")


@dataclass
class Finding:
    """One issue about one file (or one class folder, for class-level issues).

    ``score`` is cleanvision's score for its property issues (lower is worse) and the
    similarity to ``related_path`` for duplicate issues (1.0 for identical pixels).
    ``action`` is what the audit did about it; ``detail`` says why in words.
    """

    path: str
    split: str
    label: str
    issue: str
    action: str
    score: float | None = None
    related_path: str = ""
    detail: str = ""


def findings_csv(findings: list[Finding]) -> str:
    """The findings as CSV text, in a stable order."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for f in sorted(findings, key=lambda f: (f.issue, f.split, f.label, f.path)):
        score = "" if f.score is None else f"{f.score:.4f}"
        w.writerow([spreadsheet_safe(c) for c in
                    (f.path, f.split, f.label, f.issue, score, f.related_path, f.action, f.detail)])
    return buf.getvalue()


def write_findings(path: str | os.PathLike, findings: list[Finding]) -> Path:
    """Atomically write ``findings.csv``."""
    return write_text(path, findings_csv(findings))


def read_findings(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a ``findings.csv`` as dicts (for tests and follow-up tools)."""
    with open_text(path) as f:
        return [{k: from_spreadsheet(v or "") for k, v in r.items()} for r in csv.DictReader(f)]
