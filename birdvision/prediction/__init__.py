"""Prediction on new data: photos, or long recordings window by window (``python -m birdvision.predict``).

``options`` holds the schema, ``inputs`` finds the files, ``predictor`` is the one model API
(:func:`~birdvision.prediction.predictor.load`) over two engines, ``onnx_engine`` (exports, no
PyTorch) and ``torch_engine`` (checkpoints); ``windows`` streams a recording into fixed
windows without ever holding it whole, ``prefetch`` decodes ahead of the model in a thread,
``journal`` remembers finished files so a folder run can resume, ``tables`` turns
probabilities into rows (CSV, merged runs, Raven selection tables) and ``run`` ties them together.
``species`` restricts answers to a species list (numpy only, reusable by apps); ``stream``
predicts raw PCM from standard input (``input=-``), writing each window's rows as it completes.
"""

from __future__ import annotations


class PredictError(ValueError):
    """A user mistake: no model, no input, nothing to predict, an impossible option."""
