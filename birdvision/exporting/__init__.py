"""Export machinery behind ``python -m birdvision.export``: ONNX graphs, variants, parity gate, TensorRT.

Modules, in the order data flows through them:

- ``samples``: real inputs for the parity gate and INT8 calibration (the run's validation split);
- ``graphs``: the exported network plus small hand-built pre/post-processing graphs, composed;
- ``metadata``: class names, preprocessing spec, digest, temperature in ``metadata_props``;
- ``variants``: INT8 (static QDQ), FP16 and ORT-format files derived from the FP32 network;
- ``parity``: PyTorch vs ONNX Runtime on the same inputs, thresholds, ``parity*.json``;
- ``tensorrt``: engine build where TensorRT and a GPU exist, else a ready-to-run bundle;
- ``phone``: LiteRT ``.tflite`` and ExecuTorch ``.pte`` (optional extras), FP32 and PT2E INT8, gated in their own
  runtimes;
- ``app_parity``: ``model.onnx`` fed each platform's own decode and resize, against ``birdvision.predict``;
- ``pipeline``: the orchestration the CLI calls.
"""

from __future__ import annotations


class ExportError(ValueError):
    """A user-facing export problem (bad format name, no samples, unusable input)."""


class ParityError(RuntimeError):
    """An exported file disagrees with its checkpoint beyond the configured thresholds."""


FORMATS = ("onnx", "int8", "fp16", "ort", "tensorrt", "tflite", "pte", "tflite_int8", "pte_int8", "all")

__all__ = ["FORMATS", "ExportError", "ParityError"]
