"""data.balance: class-balanced sampling and effective-number loss weights on an imbalanced training split."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from birdvision.data.balance import balanced_sampler, class_counts, effective_number_weights
from birdvision.data.manifest import DataSourceError
from birdvision.fit import main
from tests.conftest import fit_args


def test_effective_number_weights_sit_between_none_and_inverse_frequency():
    counts = [100, 10]
    w = effective_number_weights(counts, 0.99)
    assert sum(w) == pytest.approx(2.0) and w[1] > w[0]
    ratio = w[1] / w[0]
    assert 1.0 < ratio < 10.0  # not flat, not full inverse frequency
    assert effective_number_weights(counts, 1e-6) == pytest.approx([1.0, 1.0], abs=1e-4)
    inv = effective_number_weights(counts, 1 - 1e-9)
    assert inv[1] / inv[0] == pytest.approx(10.0, rel=1e-3)


def test_balanced_sampler_draws_classes_equally():
    labels = [0] * 90 + [1] * 10
    torch.manual_seed(0)
    drawn = Counter(labels[i] for _ in range(20) for i in balanced_sampler(labels, class_counts(labels, ["a", "b"])))
    assert abs(drawn[0] - drawn[1]) / (drawn[0] + drawn[1]) < 0.05


def test_a_class_without_training_samples_is_an_error():
    with pytest.raises(DataSourceError, match="1 class\\(es\\) have no training samples \\(c\\)"):
        class_counts([0, 1, 1], ["a", "b", "c"])


@pytest.mark.parametrize("mode", ["sampler", "loss"])
def test_fit_records_the_balance_and_trains(mode, demo_photos: Path, tmp_path: Path):
    assert main(fit_args(demo_photos, tmp_path, "trainer.max_epochs=1", f"data.balance={mode}")) == 0
    (rd,) = list((tmp_path / "demo").iterdir())
    s = json.loads((rd / "summary.json").read_text())
    assert s["balance"] == mode and s["balance/train_min_count"] == s["balance/train_max_count"] == 12
    hp = torch.load(rd / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert (hp["class_weights"] is not None) == (mode == "loss")
