"""Decision thresholds chosen on validation data: per-class thresholds for a target false-positive rate or
precision, the photo abstention threshold, and how both fare on held-out data.

A softmax probability is not a decision. "Report species *c* in this window" needs a threshold, and
one number for every class is wrong for most of them: a class the model confuses often needs a
higher one. Each species column is treated one-vs-rest on the validation items (windows or photos;
the no-call class's windows are negatives for every species):

- ``fpr``: the lowest threshold whose false-positive rate on the validation negatives is at most
  the target. With ``N`` negatives and target ``f``, at most ``floor(f N)`` negatives may score at
  or above it, so it must lie above the ``(floor(f N) + 1)``-th highest negative score ``s``; it is
  put halfway between ``s`` and the next score above ``s`` (of any item), which leaves every
  validation count the same as the tightest choice while keeping the widest margin.
- ``precision``: the lowest threshold at which the validation precision is at least the target
  (the largest set of top-scored items that is precise enough), halfway into the gap below it.

A class with no validation positives cannot be checked (its recall is unknown, its precision
undefined); it gets the **global** threshold, the same rule applied to all species columns pooled,
and the table says so. A target that cannot be met for a class (precision never reached, or its
negatives score as high as anything) falls back the same way. Nothing here divides by a count
without checking it.

Photo abstention scores a photo by its maximum probability after temperature scaling (measured
against the energy score and the maximum logit on the real photos: the AUROC against non-bird
images was 0.977 vs 0.872 and 0.908) and answers "unknown" below a threshold picked, by the same
``fpr`` rule, for a target false-accept rate on generated non-bird images (:mod:`birdvision.data.photos.ood`).

numpy only: ``predict`` applies the stored values without PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ABSTAIN_SCORE = "max_prob"  # max softmax(logits / temperature); the one score every engine's output gives


# ----------------------------------------------------------------------------- primitives


def auroc(pos: Sequence[float] | np.ndarray, neg: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve of ``pos`` scored above ``neg`` (ties count half); None when either is empty."""
    pos, neg = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    if not len(pos) or not len(neg):
        return None
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]  # average rank within ties
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def threshold_for_fpr(scores: np.ndarray, is_pos: np.ndarray, fpr: float) -> float | None:
    """The lowest threshold (``score >= t`` is a positive call) with at most ``fpr`` of the negatives above it,
    centred in the gap above the highest negative it excludes (up to 1 when nothing scores above it: a stricter
    threshold, never a laxer one); None without negatives."""
    scores, is_pos = np.asarray(scores, np.float64), np.asarray(is_pos, bool)
    neg = np.sort(scores[~is_pos])[::-1]
    if not len(neg):
        return None
    allowed = int(math.floor(fpr * len(neg) + 1e-9))
    if allowed >= len(neg):
        return None
    s = float(neg[allowed])
    above = scores[scores > s]
    # Nothing scores above that negative: the target still holds only above it (recall 0 on these items).
    return min(1.0, (s + (float(above.min()) if len(above) else 1.0)) / 2)


def threshold_for_precision(scores: np.ndarray, is_pos: np.ndarray, precision: float) -> float | None:
    """The lowest threshold whose precision is at least ``precision``, halfway into the gap below the items it
    keeps (cuts only between distinct scores); None when no cut with a true positive is precise enough."""
    scores, is_pos = np.asarray(scores, np.float64), np.asarray(is_pos, bool)
    if not is_pos.any():
        return None
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], is_pos[order]
    tp = np.cumsum(p)
    prec = tp / np.arange(1, len(s) + 1)
    boundary = np.r_[s[:-1] > s[1:], True]
    ok = np.flatnonzero(boundary & (prec >= precision - 1e-12) & (tp > 0))
    if not len(ok):
        return None
    i = int(ok[-1])
    return float(s[i]) if i + 1 == len(s) else (float(s[i]) + float(s[i + 1])) / 2


# ----------------------------------------------------------------------------- per-class thresholds


def _target(fpr: float | None, precision: float | None) -> tuple[str, float]:
    if precision is not None:
        return "precision", float(precision)
    if fpr is None:
        raise ValueError("threshold: give fpr or precision")
    return "fpr", float(fpr)


def choose_thresholds(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], *, fpr: float | None = 0.01,
                      precision: float | None = None, background: str | None = None,
                      split: str = "valid", presence_fpr: float | None = 0.01) -> dict[str, Any]:
    """Per-class thresholds on (calibrated) probabilities ``[N, K]`` of items with integer ``labels``.

    ``precision`` replaces ``fpr`` when given. Returns what checkpoints and exports store:
    ``values`` and ``basis`` per class in class order (``basis``: ``class``, ``global`` for the
    fallback, ``background`` for the no-call class, ``none`` when not even the global threshold exists),
    ``positives`` per class, and the ``global`` threshold.
    """
    kind, value = _target(fpr, precision)
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    k = len(classes)
    species = [c for c in range(k) if classes[c] != background]

    def pick(scores: np.ndarray, is_pos: np.ndarray) -> float | None:
        if kind == "fpr":
            return threshold_for_fpr(scores, is_pos, value)
        return threshold_for_precision(scores, is_pos, value)

    pooled = None
    if len(labels) and species:
        cols = np.asarray(species)
        pooled = pick(probs[:, cols].ravel(), (labels[:, None] == cols[None, :]).ravel())
    values: list[float | None] = [None] * k
    basis = ["none"] * k
    positives = [int(np.sum(labels == c)) for c in range(k)]
    for c in range(k):
        if c not in species:
            basis[c] = "background"
            continue
        t = pick(probs[:, c], labels == c) if positives[c] else None
        if t is not None:
            values[c], basis[c] = t, "class"
        elif pooled is not None:
            values[c], basis[c] = pooled, "global"
    out = {"target": kind, "target_value": value, "split": split, "items": int(len(labels)),
           "global": pooled, "values": values, "basis": basis, "positives": positives}
    if background in classes and presence_fpr is not None:
        # Call presence: 1 - p(no-call), at most ``presence_fpr`` of the no-call windows passing. A weak
        # species model still knows a call from an empty window; a window whose species all miss their thresholds
        # but whose presence passes gets its best species as a row (a call, species uncertain), not silence.
        bg = list(classes).index(background)
        is_call = labels != bg
        out["presence"] = (threshold_for_fpr(1.0 - probs[:, bg], is_call, float(presence_fpr))
                           if is_call.any() and (~is_call).any() else None)
        out["presence_fpr"] = float(presence_fpr)
        out["presence_items"] = {"calls": int(is_call.sum()), "nocall": int((~is_call).sum())}
    return out


def basis_note(basis: str, positives: int, target: str) -> str:
    """Why a class has the threshold it has, in words (for tables and logs)."""
    if basis == "class":
        return f"{target} on validation"
    if basis == "global":
        return ("global: no validation positives" if positives == 0
                else f"global: the {target} target cannot be met on this class's validation items")
    if basis == "background":
        return "no-call class: never reported"
    return "none: no threshold could be chosen (predict uses min_confidence 0.1)"


@dataclass
class ThresholdRow:
    """One species' threshold and how it does on the evaluated split."""

    class_name: str
    threshold: float | None
    basis: str
    valid_positives: int
    positives: int
    negatives: int
    true_positives: int
    false_positives: int
    precision: float | None
    recall: float | None
    fpr: float | None
    note: str


def measure_thresholds(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                       chosen: dict[str, Any]) -> tuple[list[ThresholdRow], dict[str, Any]]:
    """Precision, recall and false-positive rate of every species' threshold on held-out items, and the summary:
    pooled false-positive rate (all species' false positives over all their negatives), the largest one class
    has, macro recall, and for items of the no-call class the share that no species passes (silent)."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    values, basis = chosen["values"], chosen["basis"]
    rows: list[ThresholdRow] = []
    passed = np.zeros_like(probs, dtype=bool)
    fp_all = neg_all = 0
    for c, name in enumerate(classes):
        if basis[c] == "background":
            continue
        t = values[c]
        is_pos = labels == c
        call = probs[:, c] >= t if t is not None else np.zeros(len(labels), bool)
        passed[:, c] = call
        pos, neg = int(is_pos.sum()), int((~is_pos).sum())
        tp, fp = int((call & is_pos).sum()), int((call & ~is_pos).sum())
        fp_all, neg_all = fp_all + fp, neg_all + neg
        rows.append(ThresholdRow(
            name, t, basis[c], int(chosen["positives"][c]), pos, neg, tp, fp,
            tp / (tp + fp) if tp + fp else None, tp / pos if pos else None, fp / neg if neg else None,
            basis_note(basis[c], int(chosen["positives"][c]), chosen["target"])))
    recalls = [r.recall for r in rows if r.recall is not None]
    fprs = [r.fpr for r in rows if r.fpr is not None]
    summary: dict[str, Any] = {
        "target": chosen["target"], "target_value": chosen["target_value"], "items": int(len(labels)),
        "fpr_pooled": fp_all / neg_all if neg_all else None,
        "fpr_max": max(fprs) if fprs else None,
        "recall_macro": float(np.mean(recalls)) if recalls else None,
        "classes_global": sum(1 for r in rows if r.basis == "global"),
        "classes_without_threshold": sum(1 for r in rows if r.threshold is None),
    }
    bg = [c for c, b in enumerate(basis) if b == "background"]
    if bg and len(labels):
        is_bg = np.isin(labels, bg)
        silent = ~passed.any(axis=1)
        summary["background_items"] = int(is_bg.sum())
        summary["background_silent"] = float(silent[is_bg].mean()) if is_bg.any() else None
        named = passed[np.arange(len(labels)), labels] & ~is_bg
        summary["species_items"] = int((~is_bg).sum())
        summary["species_named"] = float(named[~is_bg].mean()) if (~is_bg).any() else None
    return rows, summary


def threshold_rows_as_dicts(rows: list[ThresholdRow]) -> list[dict[str, Any]]:
    """Rows for the CSV / Markdown table (rounded)."""
    out = []
    for r in rows:
        d = asdict(r)
        for k in ("threshold", "precision", "recall", "fpr"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 6 if k == "threshold" else 4)
        out.append(d)
    return out


THRESHOLD_COLUMNS = ["class_name", "threshold", "basis", "valid_positives", "positives", "negatives",
                     "true_positives", "false_positives", "precision", "recall", "fpr", "note"]


# ----------------------------------------------------------------------------- photo abstention


def abstain_scores(probs: np.ndarray) -> np.ndarray:
    """The abstention score of each photo: its largest calibrated probability."""
    probs = np.asarray(probs, np.float64)
    return probs.max(axis=1) if probs.size else np.zeros(len(probs))


def choose_abstention(known: np.ndarray, ood: np.ndarray, far: float, *, ood_source: str) -> dict[str, Any] | None:
    """The abstention threshold accepting at most ``far`` of the ``ood`` scores (validation photos' scores
    ``known`` only place it in its gap); None without OOD scores."""
    known, ood = np.asarray(known, np.float64), np.asarray(ood, np.float64)
    t = threshold_for_fpr(np.concatenate([known, ood]), np.r_[np.ones(len(known), bool), np.zeros(len(ood), bool)], far)
    if t is None:
        return None
    return {"score": ABSTAIN_SCORE, "threshold": t, "target": "ood_far", "target_value": float(far),
            "ood": ood_source, "ood_items": int(len(ood)), "known_items": int(len(known)),
            "known_accepted": float(np.mean(known >= t)) if len(known) else None}


def abstention_table(known: np.ndarray, known_correct: np.ndarray, ood_sets: dict[str, np.ndarray],
                     thresholds: list[tuple[str, float]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Accept/abstain rates at each ``(label, threshold)``: the known photos accepted, accuracy among them, and the
    share of every OOD set accepted (its false-accept rate); and the AUROC of the score per OOD set."""
    known, known_correct = np.asarray(known, np.float64), np.asarray(known_correct, bool)
    rows = []
    for label, t in thresholds:
        acc = known >= t
        row: dict[str, Any] = {"threshold": label, "value": round(float(t), 6),
                               "known_accepted": round(float(acc.mean()), 4) if len(known) else None,
                               "accuracy_accepted": round(float(known_correct[acc].mean()), 4) if acc.any() else None}
        for name, s in ood_sets.items():
            row[f"{name}_accepted"] = round(float(np.mean(np.asarray(s) >= t)), 4) if len(s) else None
        rows.append(row)
    aurocs = {name: auroc(known, s) for name, s in ood_sets.items()}
    return rows, aurocs
