"""Prediction on new data: photos, or long recordings window by window (``python -m birdvision.predict``).

``api`` is the one model API (:func:`~birdvision.prediction.api.load`, also ``birdvision.load``) over the
:class:`~birdvision.prediction.predictor.Predictor` of two engines, ``onnx_engine`` (exports, no PyTorch)
and ``torch_engine`` (checkpoints). ``options`` holds the schema, ``inputs`` finds the files, ``outputs``
checks every output path before work and writes the run log's header; ``grid`` streams a recording into
fixed windows without ever holding it whole, ``prefetch`` decodes ahead of the model in a thread,
``journal`` remembers finished files so a folder run can resume, ``tables`` turns probabilities into rows
(CSV, merged runs, Raven selection tables) and ``run`` ties them together for files. ``species`` restricts
answers to a species list (numpy only, reusable by apps); ``stream`` predicts raw PCM from standard input
(``input=-``) or a sound device (``mic``), writing each window's rows as it completes.
"""

from __future__ import annotations


class PredictError(ValueError):
    """A user mistake: no model, no input, nothing to predict, an impossible option."""
