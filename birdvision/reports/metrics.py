"""Classification metrics from logits and labels: accuracy, confusion matrix, per-class table, confused pairs.

Everything is derived from one confusion matrix so the per-class table, the macro
averages and the ranked list of confused pairs can never disagree with each other.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from birdvision.runs.artifacts import for_people, spreadsheet_safe, write_text


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose true class is among the ``k`` highest logits (k is capped at the class count)."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    # argpartition is O(n) per row; ties are broken arbitrarily, as with torch.topk.
    top = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` = number of samples of true class ``t`` predicted as ``p``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return cm


@dataclass
class ClassRow:
    """One line of the per-class table."""

    index: int
    label: str
    support: int
    predicted: int
    precision: float
    recall: float
    f1: float
    most_confused_with: str
    confused_count: int


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a, dtype=np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def per_class(cm: np.ndarray, classes: list[str]) -> list[ClassRow]:
    """Support, precision, recall, F1 and the class most often predicted instead, for every class.

    A class never predicted gets precision 0 (as scikit-learn's ``zero_division=0``); the
    most-confused-with column names the off-diagonal maximum of the class's row, empty when
    the class has no errors.
    """
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted.astype(np.float64))
    recall = _safe_div(tp, support.astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows = []
    for i, name in enumerate(classes):
        j = int(np.argmax(off[i])) if len(classes) > 1 else 0
        count = int(off[i, j]) if len(classes) > 1 else 0
        rows.append(ClassRow(i, name, int(support[i]), int(predicted[i]), float(precision[i]), float(recall[i]),
                             float(f1[i]), classes[j] if count else "", count))
    return rows


# Metric keys are ``stage/metric`` everywhere (as Lightning logs them during fit): the stage of a split is
# train, val or test. Evaluation files written before this naming used bare names (``top1``, ``macro_f1``).
STAGES = {"train": "train", "valid": "val", "test": "test"}
LEGACY_NAMES = {"acc": "top1", "acc5": "top5", "precision": "macro_precision", "recall": "macro_recall",
                "f1": "macro_f1", "acc_species": "top1_species"}


def metric_key(split: str, name: str) -> str:
    """``stage/name`` for a split's metric: ``metric_key("valid", "acc") == "val/acc"``."""
    return f"{STAGES.get(split, split)}/{name}"


def split_metric(m: dict, name: str):
    """A split metric from an evaluation's ``metrics.json``, under its ``stage/name`` key or, in a file written
    before that naming, its old bare name; None when absent."""
    key = metric_key(str(m.get("split", "test")), name)
    return m[key] if key in m else m.get(LEGACY_NAMES.get(name, name))


def macro_scores(rows: list[ClassRow]) -> dict[str, float]:
    """Unweighted means over the classes present in the evaluated split.

    Classes with no sample in the split are left out: a 525-class model checked on a
    36-species subset should not be scored zero on 489 classes it was never shown.
    """
    present = [r for r in rows if r.support > 0]
    if not present:
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    return {
        "precision": float(np.mean([r.precision for r in present])),
        "recall": float(np.mean([r.recall for r in present])),
        "f1": float(np.mean([r.f1 for r in present])),
    }


@dataclass
class ConfusedPair:
    """``count`` samples of ``true`` were predicted as ``predicted``."""

    true: str
    predicted: str
    count: int
    fraction_of_true: float


def confused_pairs(cm: np.ndarray, classes: list[str], limit: int = 50) -> list[ConfusedPair]:
    """The off-diagonal cells in decreasing order of count (ties: higher fraction of the true class first)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    support = cm.sum(axis=1)
    pairs = [ConfusedPair(classes[a], classes[b], int(off[a, b]), float(off[a, b] / support[a])) for a, b in zip(t, p, strict=True)]
    pairs.sort(key=lambda x: (-x.count, -x.fraction_of_true, x.true, x.predicted))
    return pairs[:limit]


# ----------------------------------------------------------------------------- tables


def csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows as CSV text; the header comes from ``columns`` or the first row's keys.

    Text cells are spreadsheet-safe (a class named ``=cmd|...`` is no formula), see
    :func:`birdvision.runs.artifacts.spreadsheet_safe`.
    """
    buf = io.StringIO()
    cols = columns or (list(rows[0]) if rows else [])
    if cols:
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows({k: spreadsheet_safe(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _fmt(v: object) -> str:
    """A Markdown cell: HTML escaped (Markdown renders raw HTML), no ``|`` or line break that would end it."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    text = html.escape(for_people(v), quote=False)
    return " ".join(text.splitlines()).replace("|", "\\|")


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table; floats to three decimals."""
    if not rows:
        return "_(none)_\n"
    cols = columns or list(rows[0])
    lines = ["| " + " | ".join(_fmt(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], stem: Path, title: str = "", columns: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.md`` atomically (the CSV keeps its header even with no rows)."""
    csv_path = write_text(stem.with_suffix(".csv"), csv_text(rows, columns))
    md = (f"# {_fmt(title)}\n\n" if title else "") + markdown_table(rows)
    md_path = write_text(stem.with_suffix(".md"), md)
    return csv_path, md_path


def columns_of(row_type: type) -> list[str]:
    """Column names of a row dataclass."""
    return [f.name for f in fields(row_type)]


def rows_as_dicts(rows: list) -> list[dict]:
    """Dataclass rows as dicts (for the table writers)."""
    return [asdict(r) for r in rows]
