"""The one place that splits: grouped and stratified, so every group (a recording, a duplicate cluster) lands
in one split, and the one place that checks splits (leakage, missing splits, classes absent from train).

Discovery (:mod:`birdvision.data.sources`, :mod:`birdvision.data.audio.pipeline`) only reads the splits a
data set already has; :func:`assign_splits` deals the rest, for training, the audit and shards alike."""

from __future__ import annotations

import random
from collections import defaultdict

from birdvision.data.manifest import SPLITS, DataSourceError, Sample


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


def join_copies(samples: list[Sample]) -> None:
    """Put byte-identical files (equal ``sha256``) in one group, in place: a renamed copy joins its original."""
    first_of: dict[str, str] = {}
    for s in samples:
        if s.sha256:
            first = first_of.setdefault(s.sha256, s.group or s.path)
            if first != (s.group or s.path):  # a copy: a sample without copies keeps its group as it was
                s.group = first


def assign_splits(samples: list[Sample], *, valid_fraction: float, test_fraction: float, seed: int,
                  where: str = "", regroup: bool = False) -> str:
    """Give every sample without a split one, grouped (copies joined first); with ``regroup`` re-deal them all.

    Returns what was done, for the data's origin line ("" when the data brought its own splits).
    Samples that mix rows with and without a split are refused: dealing only some would let a
    group sit on both sides.
    """
    unsplit = [s for s in samples if not s.split]
    if not regroup and not unsplit:
        return ""
    if not regroup and len(unsplit) != len(samples):
        raise DataSourceError(f"{where or 'the data'}: some samples have a split and some do not; give all or none")
    join_copies(samples)
    try:
        grouped_split(samples, valid_fraction=valid_fraction, test_fraction=test_fraction, seed=seed)
    except ValueError as e:
        raise DataSourceError(f"data.valid_fraction/test_fraction: {e}") from None
    return f"grouped split seed={seed}"


def split_problems(samples: list[Sample]) -> list[str]:
    """Problems that make training meaningless (missing splits, classes absent from train)."""
    problems = []
    by_split = {s: {x.label for x in samples if x.split == s} for s in SPLITS}
    for s in ("train", "valid"):
        if not by_split[s]:
            problems.append(f"the {s} split is empty")
    missing = sorted((by_split["valid"] | by_split["test"]) - by_split["train"])
    if missing:
        problems.append(f"{len(missing)} class(es) appear in valid/test but not in train: {missing[:5]}")
    return problems


def check_splits(samples: list[Sample], origin: str) -> None:
    """Raise when a group leaks across splits (:class:`LeakageError`) or the splits cannot train a model
    (:class:`DataSourceError`, every problem in one line)."""
    assert_no_leakage(samples)
    problems = split_problems(samples)
    if problems:
        raise DataSourceError(f"{origin}: " + "; ".join(problems))
