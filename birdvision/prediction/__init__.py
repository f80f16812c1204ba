"""Prediction on new data: photos, or long recordings window by window (``python -m birdvision.predict``).

``options`` holds the schema, ``inputs`` finds the files, ``windows`` streams a recording
into fixed windows without ever holding it whole, ``tables`` turns probabilities into
rows (CSV, merged runs, Raven selection tables) and ``run`` ties them to a
:class:`birdvision.inference.Predictor` (PyTorch checkpoint or exported ONNX alike).
"""

from __future__ import annotations


class PredictError(ValueError):
    """A user mistake: no model, no input, nothing to predict, an impossible option."""
