"""Class balance for imbalanced training splits: a class-balanced sampler or a class-weighted loss.

``data.balance=sampler`` draws each training batch with probability inversely proportional to
the class's count (with replacement, as many draws per epoch as training samples); under DDP
Lightning wraps it in its distributed sampler wrapper, so every rank draws its own share.
``data.balance=loss`` weights the cross-entropy with the effective number of samples
(Cui et al., CVPR 2019): ``w_c = (1 - beta) / (1 - beta ** n_c)``, normalised to mean 1, so a
class with 10x the samples does not get 10x the say while beta -> 0 gives no weighting and
beta -> 1 gives inverse frequency.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from birdvision.data.manifest import DataSourceError

BALANCE_MODES = ("none", "sampler", "loss")


def class_counts(labels: Sequence[int], classes: Sequence[str]) -> list[int]:
    """Training items per class (photos, or windows in spectrogram mode), in class order; a class
    without any is an error: there is nothing to balance it with."""
    counts = Counter(labels)
    empty = [c for i, c in enumerate(classes) if counts.get(i, 0) == 0]
    if empty:
        raise DataSourceError(f"data.balance: {len(empty)} class(es) have no training samples ({', '.join(empty[:5])}): "
                              "nothing to balance; remove them or add samples")
    return [counts[i] for i in range(len(classes))]


def effective_number_weights(counts: Sequence[int], beta: float) -> list[float]:
    """Per-class loss weights from the effective number of samples, normalised to mean 1."""
    n = torch.tensor(counts, dtype=torch.float64)
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return (w * len(counts) / w.sum()).tolist()


def balanced_sampler(labels: Sequence[int], counts: Sequence[int]) -> WeightedRandomSampler:
    """Each sample drawn with probability 1 / (its class's count): every class equally likely per draw."""
    per_sample = torch.tensor([1.0 / counts[y] for y in labels], dtype=torch.float64)
    return WeightedRandomSampler(per_sample, num_samples=len(labels), replacement=True)
