"""Exported models on ONNX Runtime, without PyTorch: the engine ``predict`` uses for ``.onnx`` / ``.ort`` files.

Imports onnxruntime, numpy, Pillow and soundfile only (decoding helpers come from
:mod:`birdvision.data.photos.decode` and :mod:`birdvision.data.audio.io`), so a predict run from an
exported model starts in well under a second: ``tests/test_archive_predict.py`` checks
that neither torch nor lightning is loaded. Inputs are exactly what the parity gate fed
the file: decoded uint8 photos at their own size (the graph resizes and normalises;
photos of different sizes run in separate batches) or float32 waveforms. Exports whose
graph has no preprocessing (``model.bare.onnx``) need the resize or the mel frontend
outside the graph, in PyTorch; :func:`load_export` hands those to
:mod:`birdvision.prediction.torch_engine`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from birdvision.prediction.predictor import Predictor
from birdvision.runs.checkpoint import CheckpointError


class OnnxPredictor(Predictor):
    """A birdvision export on an ONNX Runtime session (``engine="onnxruntime"``)."""

    engine = "onnxruntime"

    def __init__(self, *, session: Any, input_kind: str, **kw: Any) -> None:
        # photos of any size for graphs that resize; fixed-size uint8 graphs (older exports) get Pillow-resized photos
        kw.setdefault("resizes", input_kind != "uint8_nhwc")
        super().__init__(**kw)
        self._session, self._input_kind = session, input_kind
        self._input_name = session.get_inputs()[0].name

    @property
    def precision(self) -> str:
        return str(self.metadata.get("precision", "fp32"))

    def _forward(self, raw: np.ndarray | list[np.ndarray]) -> np.ndarray:
        from birdvision.data.photos.decode import batches_by_size

        n = len(raw)
        try:
            parts = [self._session.run(None, {self._input_name: b})[0]
                     for _, b in batches_by_size(raw, max(1, n))]  # one run per photo size
            out = np.concatenate([np.asarray(x, dtype=np.float32) for x in parts])
        except Exception as e:  # noqa: BLE001 - inputs were checked, so a failure here is the model file's
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            raise CheckpointError(f"{self.source}: ONNX Runtime cannot run this model ({first[:200]})") from None
        if out.shape != (n, len(self.classes)):
            raise CheckpointError(f"{self.source}: the model returned shape {out.shape} for {n} inputs, "
                                  f"but its metadata lists {len(self.classes)} classes")
        return out
