"""Decision thresholds on generated scores: FPR and precision targets, fallbacks, AUROC, abstention."""

import numpy as np
import pytest

from birdvision.data.photos.ood import KINDS, ood_image, ood_images
from birdvision.reports.thresholds import (
    abstention_table,
    auroc,
    choose_abstention,
    choose_thresholds,
    measure_thresholds,
    threshold_for_fpr,
    threshold_for_precision,
)


def scores_of(n: int, k: int, seed: int, background: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs of a noisy classifier: the true class gets a boost of varying size."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(0, 1.0, (n, k))
    z[np.arange(n), labels] += rng.uniform(0, 4, n)
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), labels


def test_auroc_by_hand_with_ties():
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1.0], [1.0]) == 0.5  # a tie counts half
    assert auroc([2, 1], [1, 0]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert auroc([], [1.0]) is None


def test_fpr_rule_by_hand():
    # 10 negatives 0.0..0.9, target 10%: one negative may pass, so t lies above 0.8 and below the next score (0.9).
    neg = np.arange(10) / 10
    t = threshold_for_fpr(np.r_[neg, 0.95], np.r_[np.zeros(10, bool), True], 0.1)
    assert t == pytest.approx(0.85)
    assert threshold_for_fpr(np.array([0.5]), np.array([True]), 0.1) is None  # no negatives: no rule
    # nothing scores above the highest negative: stricter (halfway to 1), never laxer
    assert threshold_for_fpr(np.array([0.9, 0.9]), np.array([False, True]), 0.01) == pytest.approx(0.95)


def test_precision_rule_by_hand():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([1, 1, 0, 1, 0], bool)
    # precision at each cut: 1, 1, 2/3, 3/4, 3/5 -> target 0.75 keeps the top four: t between 0.6 and 0.5
    assert threshold_for_precision(s, y, 0.75) == pytest.approx(0.55)
    assert threshold_for_precision(s, y, 1.0) == pytest.approx(0.75)
    assert threshold_for_precision(s, np.zeros(5, bool), 0.5) is None


def test_fpr_target_is_honoured_on_held_out_items():
    k = 8
    valid, test = scores_of(4000, k, 1), scores_of(4000, k, 2)
    chosen = choose_thresholds(*valid, [f"c{i}" for i in range(k)], fpr=0.01)
    assert chosen["basis"] == ["class"] * k
    _, on_valid = measure_thresholds(*valid, [f"c{i}" for i in range(k)], chosen)
    rows, on_test = measure_thresholds(*test, [f"c{i}" for i in range(k)], chosen)
    assert on_valid["fpr_max"] <= 0.01  # by construction
    assert on_test["fpr_pooled"] <= 0.02 and on_test["fpr_max"] <= 0.025  # and close on new items
    assert 0.2 < on_test["recall_macro"] < 1.0
    # a stricter target gives higher thresholds
    strict = choose_thresholds(*valid, [f"c{i}" for i in range(k)], fpr=0.001)
    assert all(a > b for a, b in zip(strict["values"], chosen["values"], strict=True))


def test_precision_target_on_held_out_items():
    k = 5
    chosen = choose_thresholds(*scores_of(3000, k, 3), list("abcde"), fpr=None, precision=0.9)
    assert chosen["target"] == "precision"
    rows, _ = measure_thresholds(*scores_of(3000, k, 4), list("abcde"), chosen)
    assert all(r.precision is not None and r.precision >= 0.85 for r in rows)


def test_class_without_validation_positives_falls_back_to_the_global_threshold():
    probs, labels = scores_of(600, 4, 5)
    labels[labels == 2] = 0  # no validation item of class "c"
    chosen = choose_thresholds(probs, labels, list("abcd"), fpr=0.01)
    assert chosen["positives"][2] == 0 and chosen["basis"][2] == "global"
    assert chosen["values"][2] == chosen["global"] is not None
    rows, summary = measure_thresholds(probs, labels, list("abcd"), chosen)
    row = next(r for r in rows if r.class_name == "c")
    assert row.recall is None and row.note == "global: no validation positives"  # 0 positives: no 0/0
    assert summary["classes_global"] == 1
    # precision cannot be checked without positives either
    chosen = choose_thresholds(probs, labels, list("abcd"), fpr=None, precision=0.8)
    assert chosen["basis"][2] == "global"
    # nothing at all to choose on: every class without a threshold, nothing raised
    empty = choose_thresholds(np.zeros((0, 4)), np.zeros(0, int), list("abcd"), fpr=0.01)
    assert empty["values"] == [None] * 4 and empty["global"] is None
    assert measure_thresholds(probs, labels, list("abcd"), empty)[1]["classes_without_threshold"] == 4


def test_background_class_has_no_threshold_and_counts_as_negative():
    probs, labels = scores_of(1000, 4, 6)
    chosen = choose_thresholds(probs, labels, ["a", "b", "nocall", "d"], fpr=0.05, background="nocall")
    assert chosen["values"][2] is None and chosen["basis"][2] == "background"
    rows, summary = measure_thresholds(probs, labels, ["a", "b", "nocall", "d"], chosen)
    assert [r.class_name for r in rows] == ["a", "b", "d"]
    assert rows[0].negatives == int(np.sum(labels != 0))  # no-call items are negatives of every species
    assert 0 <= summary["background_silent"] <= 1 and summary["background_items"] == int(np.sum(labels == 2))


def test_generated_ood_images_are_deterministic_and_distinct():
    a, b = ood_image("stripes", 3, 48), ood_image("stripes", 3, 48)
    assert a.dtype == np.uint8 and a.shape == (48, 48, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, ood_image("stripes", 4, 48))
    imgs, kinds = ood_images(2, 32, seed=7)
    assert imgs.shape == (2 * len(KINDS), 32, 32, 3) and kinds.count("clouds") == 2
    with pytest.raises(ValueError, match="unknown OOD image kind"):
        ood_image("birds", 0)


def test_abstention_threshold_meets_its_false_accept_target():
    rng = np.random.default_rng(0)
    known, ood = rng.beta(8, 2, 400), rng.beta(2, 5, 400)
    chosen = choose_abstention(known, ood, 0.05, ood_source="generated")
    assert chosen["score"] == "max_prob" and np.mean(ood >= chosen["threshold"]) <= 0.05
    rows, aurocs = abstention_table(known, known > 0.5, {"generated": ood}, [("chosen", chosen["threshold"])])
    assert rows[0]["generated_accepted"] <= 0.05 and rows[0]["known_accepted"] > 0.8
    assert aurocs["generated"] > 0.9
    assert choose_abstention(known, np.zeros(0), 0.05, ood_source="none") is None


def test_call_presence_gives_a_weak_species_model_rows_for_calls_and_keeps_noise_silent():
    """A species model near chance still knows a call from an empty window: presence = 1 - p(no-call)."""
    from birdvision.prediction.tables import top_rows

    rng = np.random.default_rng(3)
    classes = ["a", "b", "c", "d", "nocall"]

    def windows(n: int, call: bool) -> np.ndarray:
        z = rng.normal(0, 0.3, (n, 5))  # species columns: no real preference (a weak model)
        z[:, 4] += -2.0 + rng.normal(0, 0.3, n) if call else 3.0 + rng.normal(0, 0.3, n)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    val = np.concatenate([windows(200, True), windows(200, False)])
    labels = np.concatenate([rng.integers(0, 4, 200), np.full(200, 4)])
    chosen = choose_thresholds(val, labels, classes, fpr=0.01, background="nocall")
    assert chosen["presence"] is not None and chosen["presence_items"] == {"calls": 200, "nocall": 200}
    thr = np.array([np.nan if v is None else v for v in chosen["values"]])
    calls, noise = windows(100, True), windows(100, False)
    for presence, want_rows in ((None, False), (chosen["presence"], True)):
        rows = top_rows(calls, classes, top_k=1, always_top1=False, thresholds=thr, skip=[4], presence=presence,
                        background=4)
        share = np.mean([bool(r) for r in rows])
        assert (share > 0.95) if want_rows else (share < 0.5)  # species thresholds alone stay silent on most calls
        assert all(r[0][0] != "nocall" for r in rows if r)
        quiet = top_rows(noise, classes, top_k=1, always_top1=False, thresholds=thr, skip=[4], presence=presence,
                         background=4)
        assert np.mean([not r for r in quiet]) >= 0.97
    assert "presence" not in choose_thresholds(val[:200, :4], labels[:200], classes[:4], fpr=0.01)
