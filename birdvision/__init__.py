"""birdvision: fine-tune bird photo and bird-call classifiers and ship them to phones and Jetsons."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path: Any, **kwargs: Any):
    """A predictor for a checkpoint, a run folder or an exported ONNX model: ``load(p).predict(x, top_k=5)``.

    Imported lazily so ``import birdvision`` stays cheap.
    """
    from birdvision.prediction.api import load as _load

    return _load(path, **kwargs)
