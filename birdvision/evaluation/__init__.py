"""Evaluating a checkpoint: the library behind ``python -m birdvision.evaluate`` and fit's final evaluation.

``samples`` finds what to evaluate (the run's own manifest, or data given) and checks its labels, ``logits``
runs the network once over a dataset, ``decisions`` chooses and measures what predict acts on (abstention on
photos, silence on generated noise for calls), and ``evaluator`` ties them together and writes the tables,
plots and ``metrics.json`` through :mod:`birdvision.reports`, which never sees a model.
"""

from __future__ import annotations


class EvaluationError(ValueError):
    """Data that cannot be evaluated with a checkpoint (unknown labels, an empty split, ...)."""
