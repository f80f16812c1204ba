"""Exported models on ONNX Runtime, without PyTorch: the engine ``predict`` uses for ``.onnx`` / ``.ort`` files.

Imports onnxruntime, numpy, Pillow and soundfile only (decoding helpers come from
:mod:`birdvision.data.image_io` and :mod:`birdvision.data.audio`), so a predict run from an
exported model starts in well under a second: ``tests/test_archive_predict.py`` checks
that neither torch nor lightning is loaded. Inputs are exactly what the parity gate fed
the file: uint8 photos or float32 waveforms for graphs with preprocessing inside; bare
photo graphs get ``(u8 / 255 - mean) / std`` computed here in float32, the arithmetic of the
training-time eval transform. Bare spectrogram graphs need the mel frontend outside the
graph; :func:`load_export` hands those to :mod:`birdvision.prediction.torch_engine`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from birdvision.checkpoint import CheckpointError
from birdvision.prediction.predictor import Predictor


class OnnxPredictor(Predictor):
    """A birdvision export on an ONNX Runtime session (``engine="onnxruntime"``)."""

    engine = "onnxruntime"

    def __init__(self, *, session: Any, input_kind: str, **kw: Any) -> None:
        super().__init__(**kw)
        self._session, self._input_kind = session, input_kind
        self._input_name = session.get_inputs()[0].name
        if input_kind == "float_nchw":
            self._scale = (1.0 / (255.0 * np.asarray(self.preprocess["std"], np.float64))).astype(np.float32)
            self._bias = (-np.asarray(self.preprocess["mean"], np.float64)
                          / np.asarray(self.preprocess["std"], np.float64)).astype(np.float32)

    @property
    def precision(self) -> str:
        return str(self.metadata.get("precision", "fp32"))

    def _feed(self, raw: np.ndarray) -> np.ndarray:
        if self._input_kind in ("uint8_nhwc", "waveform"):
            return raw
        # bare photo graph: the image_pre_graph's arithmetic (one multiply and one add per channel), NHWC -> NCHW
        x = raw.astype(np.float32) * self._scale + self._bias
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _forward(self, raw: np.ndarray) -> np.ndarray:
        try:
            out = np.asarray(self._session.run(None, {self._input_name: self._feed(raw)})[0], dtype=np.float32)
        except Exception as e:  # noqa: BLE001 - inputs were checked, so a failure here is the model file's
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            raise CheckpointError(f"{self.source}: ONNX Runtime cannot run this model ({first[:200]})") from None
        if out.shape != (len(raw), len(self.classes)):
            raise CheckpointError(f"{self.source}: the model returned shape {out.shape} for {len(raw)} inputs, "
                                  f"but its metadata lists {len(self.classes)} classes")
        return out


def load_export(path: str | Path, *, threads: int = 0, providers: list[str] | None = None,
                spinning: bool = True) -> Predictor:
    """A predictor for an exported ``.onnx`` / ``.ort`` file; one :class:`CheckpointError` for a bad file."""
    from birdvision.exporting.runtime import open_export

    p = Path(path).expanduser()
    session, meta = open_export(p, threads=threads, providers=providers, spinning=spinning)
    kw = dict(source=p, classes=meta["classes"], preprocess=meta["preprocess"],
              temperature=float(meta.get("temperature", 1.0)), metadata=meta)
    if meta["input_kind"] == "mel":
        from birdvision.prediction.torch_engine import FrontendOnnxPredictor

        return FrontendOnnxPredictor(session=session, input_kind="mel", **kw)
    return OnnxPredictor(session=session, input_kind=meta["input_kind"], **kw)
