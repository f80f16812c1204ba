"""Run folders made in a fraction of a second for the export, inference and bench tests.

A real ``fit`` is not needed to exercise export: a BirdClassifier saved with its
hyperparameters and a manifest beside it is exactly what ``fit`` leaves behind.
The head is scaled up so predictions are decisive (an untrained net's near-uniform
probabilities would make top-1 comparisons hinge on float noise).
"""

from __future__ import annotations

from pathlib import Path

import torch

from birdvision.data.manifest import class_list, manifest_digest, write_manifest
from birdvision.data.sources import discover
from birdvision.models import get_spec
from birdvision.spec import ImageSpec
from birdvision.training.module import BirdClassifier


def make_run(root: Path, photos: Path, *, backbone: str = "test_tiny", size: int = 32, temperature: float = 1.5,
             head_scale: float = 20.0, seed: int = 0) -> Path:
    """``root/checkpoints/best.ckpt`` + ``manifest.csv`` + ``classes.json`` for the photos under ``photos``."""
    torch.manual_seed(seed)
    samples = discover(photos).samples
    classes = class_list(samples)
    spec = get_spec(backbone)
    pre = ImageSpec(size, spec.mean, spec.std, spec.interpolation)
    model = BirdClassifier(backbone, classes, preprocess=pre.to_dict(), manifest_digest=manifest_digest(samples),
                           recipe="test", temperature=temperature).eval()
    head = dict(model.net.named_modules())[spec.classifier]
    with torch.no_grad():
        head.weight.mul_(head_scale)
    # Non-trivial BatchNorm statistics, so folding them into convolutions is exercised too.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)},
               root / "checkpoints" / "best.ckpt")
    write_manifest(root / "manifest.csv", samples)
    (root / "classes.json").write_text(str(classes).replace("'", '"'))
    return root
