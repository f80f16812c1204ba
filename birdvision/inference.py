"""One prediction API for checkpoints and exported models: ``birdvision.inference.load(path)``.

``load`` takes a ``.ckpt``, a run folder or an exported ``.onnx`` / ``.ort`` file and
returns a :class:`Predictor` that gives the same answer whichever it was (see
:mod:`birdvision.prediction.predictor`). Loading an export imports ONNX Runtime, not PyTorch.

    >>> p = load("runs/effnet_b0/20250101-120000")
    >>> p.predict("robin.jpg", top_k=3)
    [('EUROPEAN ROBIN', 0.91), ...]
    >>> p.predict_batch(windows)  # float32 [B, T] for spectrogram models -> [B, K] probabilities
"""

from __future__ import annotations

from birdvision.prediction.predictor import EXPORT_SUFFIXES, InferenceError, Predictor, load

__all__ = ["EXPORT_SUFFIXES", "InferenceError", "Predictor", "load"]
