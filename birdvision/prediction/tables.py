"""Probabilities -> rows -> tables: the predictions CSV, merged runs and Raven selection tables."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from birdvision.runs.artifacts import spreadsheet_safe, write_text

AUDIO_COLUMNS = ["file", "start_s", "end_s", "species", "confidence"]
PHOTO_COLUMNS = ["file", "species", "confidence"]
RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Species", "Confidence"]


@dataclass(frozen=True)
class Row:
    """One prediction: a species for a photo, or for the time range ``[start_s, end_s)`` of a recording."""

    file: str
    species: str
    confidence: float
    start_s: float | None = None
    end_s: float | None = None


DEFAULT_MIN_CONFIDENCE = 0.1  # a species' threshold when neither the model nor the caller gives one


def top_rows(probs: np.ndarray, classes: Sequence[str], *, top_k: int, min_confidence: float = 0.0,
             always_top1: bool, thresholds: np.ndarray | None = None, skip: Sequence[int] = (),
             abstain: float | None = None, unknown: str | None = None, presence: float | None = None,
             background: int | None = None) -> list[list[tuple[str, float]]]:
    """Per input row of ``probs [B, K]``: the (species, confidence) pairs to write, best first.

    Up to ``top_k`` species that reach their threshold: ``thresholds[j]`` per class when given (NaN: no
    threshold, ``min_confidence`` instead), else ``min_confidence``. Classes in ``skip`` (the no-call class)
    are never written. An item whose best probability is under ``abstain`` passes nothing. With
    ``always_top1`` the best species is written first even when it does not pass (a best guess); otherwise an
    item that passes nothing gets one row ``unknown`` (photos; its confidence is the best probability) or,
    with ``unknown=None``, no row (a silent window), unless its call presence ``1 - probs[:, background]``
    reaches ``presence``: then its best species is written (a call whose species is uncertain).
    """
    probs = np.asarray(probs)
    n_classes = probs.shape[1]
    thr = np.full(n_classes, float(min_confidence))
    if thresholds is not None:
        thr = np.where(np.isnan(thresholds), thr, thresholds)
    ranked = probs.astype(np.float64, copy=True)
    skip = [int(j) for j in skip]
    ranked[:, skip] = -np.inf
    k = max(1, min(int(top_k), n_classes - len(skip)))
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :k]
    out = []
    for i, idx in enumerate(order):
        best = float(probs[i, idx[0]])
        accepted = abstain is None or best >= abstain
        picked = [(classes[j], float(probs[i, j])) for r, j in enumerate(idx)
                  if (accepted and probs[i, j] >= thr[j]) or (r == 0 and always_top1)]
        if not picked and presence is not None and background is not None and 1.0 - probs[i, background] >= presence:
            picked = [(classes[idx[0]], best)]
        if not picked and unknown is not None:
            picked = [(unknown, best)]
        out.append(picked)
    return out


def threshold_values(thresholds: dict | None) -> np.ndarray | None:
    """A stored ``thresholds`` dict's per-class ``values`` as floats in class order (``None`` -> NaN: no threshold
    of its own), or None when it has none: the one reader of that format."""
    values = thresholds.get("values") if isinstance(thresholds, dict) else None
    return np.array([np.nan if v is None else float(v) for v in values]) if values else None


def stored_decisions(probs: np.ndarray, classes: Sequence[str], thresholds: dict | None,
                     background: str | None) -> list[list[tuple[str, float]]]:
    """What predict writes for recording windows (top 1, no best guess) under a model's stored ``thresholds``
    dict (per-class ``values``, ``presence``) and no-call class: for measurements made outside a predictor."""
    bg = list(classes).index(background) if background in classes else None
    return top_rows(probs, classes, top_k=1, min_confidence=DEFAULT_MIN_CONFIDENCE, always_top1=False,
                    thresholds=threshold_values(thresholds), skip=[] if bg is None else [bg],
                    presence=(thresholds or {}).get("presence"), background=bg)


def merge_runs(rows: Iterable[Row], *, gap_s: float = 1e-6) -> list[Row]:
    """Join rows of one file and species whose time ranges touch or overlap (consecutive windows).

    The merged row spans the run and keeps its highest confidence. Output is sorted by file,
    start and descending confidence, like the unmerged table.
    """
    by_key: dict[tuple[str, str], list[Row]] = {}
    order: list[str] = []
    for r in rows:
        if r.file not in order:
            order.append(r.file)
        by_key.setdefault((r.file, r.species), []).append(r)
    merged: list[Row] = []
    for (_, _), rs in by_key.items():
        rs = sorted(rs, key=lambda r: r.start_s or 0.0)
        cur = rs[0]
        for r in rs[1:]:
            if (r.start_s or 0.0) <= (cur.end_s or 0.0) + gap_s:
                cur = replace(cur, end_s=max(cur.end_s or 0.0, r.end_s or 0.0),
                              confidence=max(cur.confidence, r.confidence))
            else:
                merged.append(cur)
                cur = r
        merged.append(cur)
    rank = {f: i for i, f in enumerate(order)}
    return sorted(merged, key=lambda r: (rank[r.file], r.start_s or 0.0, -r.confidence))


def _fmt_time(t: float | None) -> str:
    return "" if t is None else f"{t:.3f}"


def predictions_csv(rows: Sequence[Row], *, audio: bool, header: bool = True) -> str:
    """The predictions table as CSV text (times in seconds to the millisecond, confidence to 4 places).

    File names and species are spreadsheet-safe (:func:`birdvision.runs.artifacts.spreadsheet_safe`).
    ``header=False``: the rows only (a live stream appends them as windows complete).
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(AUDIO_COLUMNS if audio else PHOTO_COLUMNS)
    for r in rows:
        if audio:
            w.writerow([spreadsheet_safe(r.file), _fmt_time(r.start_s), _fmt_time(r.end_s), spreadsheet_safe(r.species),
                        f"{r.confidence:.4f}"])
        else:
            w.writerow([spreadsheet_safe(r.file), spreadsheet_safe(r.species), f"{r.confidence:.4f}"])
    return buf.getvalue()


def raven_table(rows: Sequence[Row], *, low_hz: float, high_hz: float) -> str:
    """A Raven Pro selection table (tab-separated) for recording rows.

    Times are per recording; when the rows come from more than one file a ``Begin Path``
    column (a standard Raven measurement) is added so each selection names its recording.
    """
    files = list(dict.fromkeys(r.file for r in rows))
    multi = len(files) > 1
    lines = ["\t".join(RAVEN_COLUMNS + (["Begin Path"] if multi else []))]
    for i, r in enumerate(rows, 1):
        cells = [str(i), "Spectrogram 1", "1", _fmt_time(r.start_s), _fmt_time(r.end_s), f"{low_hz:.1f}",
                 f"{high_hz:.1f}", spreadsheet_safe(r.species), f"{r.confidence:.4f}"]
        if multi:
            cells.append(spreadsheet_safe(r.file))
        lines.append("\t".join(" ".join(c.replace("\t", " ").splitlines()) for c in cells))
    return "\n".join(lines) + "\n"


def raven_band(preprocess: dict) -> dict[str, float]:
    """``low_hz`` / ``high_hz`` of a Raven selection: the band a spectrogram model hears (mel range, high-pass)."""
    mel = preprocess.get("mel") or {}
    low = max(float(mel.get("f_min_hz", 0.0)), float(preprocess.get("highpass_hz") or 0.0))
    return {"low_hz": low, "high_hz": float(mel.get("f_max_hz", int(preprocess["sample_rate"]) / 2))}


def write_table(path: str | Path, text: str) -> Path:
    """Write a table atomically (a reader never sees half a file)."""
    return write_text(path, text)
