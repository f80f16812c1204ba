"""Calibration: expected calibration error, reliability bins, and temperature scaling.

A classifier fine-tuned with cross-entropy is usually over-confident: among predictions
made with 90 % confidence, fewer than 90 % are right. Temperature scaling (Guo et al.,
2017) divides every logit by one scalar ``T`` fitted on held-out data; it cannot change
which class wins (accuracy is untouched) but makes the confidences honest, which matters
when a phone app shows "93 % Song Sparrow" or thresholds low-confidence calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, computed stably in float64."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes at ``temperature``."""
    if len(labels) == 0:
        return float("nan")
    t = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return float(F.cross_entropy(t, torch.as_tensor(labels, dtype=torch.long)))


@dataclass
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram; empty bins have count 0 and NaN means."""

    edges: np.ndarray  # n_bins + 1 edges from 0 to 1
    count: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray

    @property
    def ece(self) -> float:
        """Count-weighted mean gap between accuracy and confidence over non-empty bins."""
        n = self.count.sum()
        if n == 0:
            return float("nan")
        used = self.count > 0
        gaps = np.abs(self.accuracy[used] - self.confidence[used])
        return float(np.sum(self.count[used] * gaps) / n)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """Bin predictions by their top-1 confidence into ``n_bins`` equal-width bins ``(lo, hi]``.

    The first bin also holds a confidence of exactly 0 (impossible for a softmax, but it
    keeps every sample in some bin). 15 bins is the usual choice since Guo et al.
    """
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right=True: a confidence equal to an edge belongs to the bin it closes, so 1.0 is in the last bin.
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
    return ReliabilityBins(edges, count, acc, mean_conf)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE: sum over bins of (bin share of samples) x |bin accuracy - bin mean confidence|."""
    return reliability_bins(probs, labels, n_bins).ece


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, max_iter: int = 200) -> float:
    """The temperature minimising the NLL of ``labels`` under ``softmax(logits / T)``, by LBFGS.

    The search runs over ``log T`` so ``T`` stays positive without a constraint; the NLL is
    convex in ``1/T``, so LBFGS with a line search finds the optimum from ``T = 1``. With no
    samples, or a degenerate result, 1.0 (no change) is returned.
    """
    if len(labels) == 0:
        return 1.0
    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    # Perfectly separable data drives T towards 0 (ever sharper is ever better); keep it sane.
    if not math.isfinite(t):
        return 1.0
    return float(min(max(t, 0.01), 100.0))


def crossfit_ece(logits: np.ndarray, labels: np.ndarray, *, folds: int = 2, seed: int = 0) -> tuple[float, float] | None:
    """(ECE, mean temperature) when each fold of the evaluated items is scaled by a temperature fitted on the
    other folds: what temperature scaling achieves when its calibration data is drawn like these items.

    A diagnostic only (nothing fitted here is stored or used for decisions): beside the ECE under the
    temperature fitted on valid, it tells a domain shift between valid and the evaluated split (valid's
    temperature hurts, an in-split one helps) from a model temperature scaling cannot help. ``None`` when
    there are fewer than ``2 * folds`` items.
    """
    n = len(labels)
    if n < 2 * folds:
        return None
    fold = np.random.default_rng(seed).permutation(n) % folds
    scaled = np.empty_like(np.asarray(logits, np.float64))
    temps = []
    for k in range(folds):
        t = fit_temperature(logits[fold != k], labels[fold != k])
        scaled[fold == k] = logits[fold == k] / t
        temps.append(t)
    return expected_calibration_error(softmax(scaled), labels), float(np.mean(temps))
