"""Cached embeddings: content keys, the cache file, the head, and no side effects on training randomness."""

from __future__ import annotations

from pathlib import Path

import torch

from birdvision.data.manifest import Sample
from birdvision.models import create_model
from birdvision.spec import from_dict as spec_from_dict
from birdvision.training.embeddings import EmbeddingCache, choose_head, embed, item_keys, model_digest


def _dataset(root: Path):
    samples = [Sample(str(p), p.parent.name, "train") for p in sorted((root / "train").glob("*/*.jpg"))]
    classes = sorted({s.label for s in samples})
    spec = {"kind": "image", "size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear"}
    return spec_from_dict(spec).eval_dataset(samples, classes), classes, spec


def test_cold_and_warm_cache_give_the_same_embeddings_and_leave_the_rng_alone(demo_photos: Path, tmp_path: Path):
    ds, classes, spec = _dataset(demo_photos)
    net = create_model("test_tiny", len(classes)).eval()
    cold = EmbeddingCache(tmp_path, model_digest(net, "test_tiny", spec))
    torch.manual_seed(0)
    x1, y1 = embed(net, "test_tiny", ds, cold)
    after_cold = torch.rand(4)
    warm = EmbeddingCache(tmp_path, model_digest(net, "test_tiny", spec))
    assert warm.loaded == len(ds)
    torch.manual_seed(0)
    x2, y2 = embed(net, "test_tiny", ds, warm)
    after_warm = torch.rand(4)
    torch.testing.assert_close(x1, x2)
    assert torch.equal(y1, y2) and x1.shape == (len(ds), 16)
    # a fine-tuning run that follows sees the same random stream either way
    torch.testing.assert_close(after_cold, after_warm)


def test_keys_are_content_not_names_and_weights_change_the_digest(demo_photos: Path, tmp_path: Path):
    ds, classes, spec = _dataset(demo_photos)
    keys = item_keys(ds)
    assert len(set(keys)) == len(keys) and all(len(k) == 64 for k in keys)
    net = create_model("test_tiny", len(classes))
    d1 = model_digest(net, "test_tiny", spec)
    with torch.no_grad():
        net.classifier[1].weight.add_(1.0)  # the head does not change an embedding
    assert model_digest(net, "test_tiny", spec) == d1
    with torch.no_grad():
        net.features[0].weight.add_(1.0)
    assert model_digest(net, "test_tiny", spec) != d1
    assert model_digest(net, "test_tiny", {**spec, "size": 64}) != model_digest(net, "test_tiny", spec)


def test_damaged_cache_is_rebuilt_not_trusted(tmp_path: Path):
    (tmp_path / "abc.pt").write_bytes(b"not a torch file")
    assert EmbeddingCache(tmp_path, "abc").rows == {}


def test_head_separates_separable_embeddings():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 3
    y = torch.arange(3).repeat_interleave(20)
    x = centres[y] + torch.randn(60, 8, generator=g)
    head = choose_head((x, y), (x[::2], y[::2]), 3)
    assert ((x @ head["weight"].T + head["bias"]).argmax(1) == y).float().mean() > 0.95
    assert len(head["tried"]) >= 3 and head["l2"] in [t["l2"] for t in head["tried"]]
