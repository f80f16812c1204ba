"""Grouped, stratified splitting: every group (a recording, a duplicate cluster) lands in one split."""

from __future__ import annotations

import random
from collections import defaultdict

from birdvision.data.manifest import Sample


class LeakageError(AssertionError):
    """A group has samples in more than one split."""


def grouped_split(
    samples: list[Sample],
    *,
    valid_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> list[Sample]:
    """Assign ``split`` to every sample so that groups stay whole and each class is spread.

    Groups are dealt per class (a group's class is its most common label), largest first,
    each to the split furthest below its target share. A class with three or more groups
    always gets one in train, valid and test (otherwise its metrics would be undefined); a
    class with two gets train plus the larger evaluation split; one group goes to train.
    Samples are modified in place and returned.
    """
    if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise ValueError("valid_fraction and test_fraction must be in [0, 1) and sum below 1")
    rng = random.Random(seed)
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.group or s.path].append(s)
    by_class: dict[str, list[str]] = defaultdict(list)
    for g, members in groups.items():
        labels = [m.label for m in members]
        # sorted(): on a tie (one photo under two species) set order would vary with PYTHONHASHSEED,
        # and so would the split of the same data with the same seed.
        by_class[max(sorted(set(labels)), key=labels.count)].append(g)
    targets = {"train": 1 - valid_fraction - test_fraction, "valid": valid_fraction, "test": test_fraction}
    for label in sorted(by_class):
        gs = by_class[label]
        rng.shuffle(gs)
        gs.sort(key=lambda g: -len(groups[g]))
        total = sum(len(groups[g]) for g in gs)
        counts = {k: 0 for k in targets}
        # Guarantee evaluation splits a group each when the class has enough groups:
        # a class missing from valid/test makes its metrics silently undefined.
        order = []
        if len(gs) >= 3 and valid_fraction > 0 and test_fraction > 0:
            order = ["train", "valid", "test"]
        elif len(gs) == 2 and (valid_fraction > 0 or test_fraction > 0):
            order = ["train", "valid" if valid_fraction >= test_fraction else "test"]
        for i, g in enumerate(gs):
            if i < len(order):
                split = order[i]
            else:
                split = max(targets, key=lambda k: targets[k] * total - counts[k])
            counts[split] += len(groups[g])
            for m in groups[g]:
                m.split = split
    return samples


def assert_no_leakage(samples: list[Sample]) -> None:
    """Raise :class:`LeakageError` when any group has active samples in two splits."""
    seen: dict[str, str] = {}
    for s in samples:
        if not s.active:
            continue
        g = s.group or s.path
        if seen.setdefault(g, s.split) != s.split:
            raise LeakageError(
                f"group {g!r} appears in splits {seen[g]!r} and {s.split!r}: pieces of one "
                "source on both sides of a split would inflate the metrics"
            )
