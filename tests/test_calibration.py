"""Calibration maths on hand-made numbers: ECE, reliability bins, temperature fitting."""

import numpy as np
import pytest

from birdvision.reports.calibration import (
    crossfit_ece,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
    softmax,
)


def test_ece_hand_computed():
    # Two samples at confidence 0.95 (one right, one wrong), two at 0.65 (both right), 10 bins:
    # bin (0.9, 1.0]: accuracy 0.5, confidence 0.95 -> gap 0.45, half the samples -> 0.225
    # bin (0.6, 0.7]: accuracy 1.0, confidence 0.65 -> gap 0.35, half the samples -> 0.175
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.65, 0.35]])
    labels = np.array([0, 1, 1, 0])
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.4)
    bins = reliability_bins(probs, labels, n_bins=10)
    assert bins.count.tolist() == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert bins.accuracy[9] == pytest.approx(0.5) and bins.confidence[6] == pytest.approx(0.65)


def test_perfectly_calibrated_and_edges():
    # Confidence 1.0 belongs to the last bin, 0.5 exactly to the bin it closes, (0.4, 0.5].
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    labels = np.array([0, 1])  # the 0.5 tie predicts class 0: wrong
    bins = reliability_bins(probs, labels, n_bins=10)
    assert bins.count[9] == 1 and bins.count[4] == 1
    assert bins.ece == pytest.approx(0.5 * 0 + 0.5 * 0.5)


def test_softmax_and_nll_match_definitions():
    logits = np.array([[2.0, 0.0, -1.0]])
    p = softmax(logits, 2.0)
    e = np.exp([1.0, 0.0, -0.5])
    assert p[0] == pytest.approx(e / e.sum())
    assert nll(logits, np.array([0]), 2.0) == pytest.approx(-np.log(p[0, 0]))


def _overconfident(n=2000, k=10, true_t=3.0, seed=0):
    """Labels drawn from softmax(z): z is calibrated, logits = z * true_t are over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, k))
    z[np.arange(n), rng.integers(0, k, n)] += 2.0
    p = softmax(z)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return z * true_t, labels


def test_temperature_scaling_lowers_nll_and_ece_without_changing_predictions():
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert t > 1.5  # over-confident logits need softening
    assert nll(logits, labels, t) < nll(logits, labels) - 0.1
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, t), labels)
    assert after < before / 2
    assert (softmax(logits, t).argmax(1) == logits.argmax(1)).all()


def test_temperature_recovers_the_true_scale():
    logits, labels = _overconfident(n=4000, true_t=3.0, seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)


def test_temperature_without_samples_is_identity():
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)) == 1.0


def test_crossfit_tells_a_shifted_calibration_split_from_an_uncalibratable_model():
    # "valid" over-confident by 3, "test" already calibrated: valid's temperature over-softens test
    val_logits, val_labels = _overconfident(n=2000, true_t=3.0, seed=2)
    test_logits, test_labels = _overconfident(n=2000, true_t=1.0, seed=3)
    t_valid = fit_temperature(val_logits, val_labels)
    ece_raw = expected_calibration_error(softmax(test_logits), test_labels)
    ece_valid_t = expected_calibration_error(softmax(test_logits, t_valid), test_labels)
    ece_cross, t_cross = crossfit_ece(test_logits, test_labels)
    assert ece_valid_t > ece_raw + 0.05  # the shifted temperature hurts
    assert t_cross == pytest.approx(1.0, abs=0.15) and ece_cross < ece_valid_t / 2  # one fitted within test does not
    # on over-confident test logits the cross-fit recovers their own scale
    over_logits, over_labels = _overconfident(n=2000, true_t=3.0, seed=4)
    ece_over, t_over = crossfit_ece(over_logits, over_labels)
    assert t_over == pytest.approx(3.0, rel=0.15)
    assert ece_over < expected_calibration_error(softmax(over_logits), over_labels) / 2
    assert crossfit_ece(test_logits[:3], test_labels[:3]) is None
