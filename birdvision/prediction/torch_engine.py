"""Checkpoints on PyTorch (``engine="torch"``), and bare exports whose resize or mel frontend runs here.

The checkpoint path of ``predict``: the model is rebuilt from its checkpoint (read as data,
never as code) and gets the same decoded inputs as the exports; spectrogram inputs go
through the checkpoint's own mel frontend, photos through the evaluation transform
(:func:`birdvision.data.photos.transforms.photo_tensor`: antialiased resize, ``(x / 255 - mean) / std``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdvision.prediction.onnx_engine import OnnxPredictor
from birdvision.prediction.predictor import Predictor
from birdvision.runs.checkpoint import CheckpointError, open_checkpoint
from birdvision.spec import from_dict as spec_from_dict


def _input_maker(source: Path, preprocess: dict[str, Any]) -> Callable[[Any], torch.Tensor]:
    """The spec's raw -> network input (frontend built once); a spec that cannot be built names the file."""
    try:
        return spec_from_dict(preprocess).input_maker()
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{source}: its preprocessing spec cannot be built ({e})") from None


class TorchPredictor(Predictor):
    """A checkpoint's BirdClassifier in eval mode."""

    engine = "torch"

    def __init__(self, *, model: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self._model = model
        self._make_input = _input_maker(self.source, self.preprocess)

    def _forward(self, raw: np.ndarray | list[np.ndarray]) -> np.ndarray:
        x = self._make_input(raw)  # the parity gate's arithmetic: resize and normalise photos, or the mel frontend
        with torch.inference_mode():
            return self._model.predict_proba(x).float().numpy()


class BareOnnxPredictor(OnnxPredictor):
    """A bare export (``input_kind="mel"`` or ``"float_nchw"``): the mel frontend, or the photo resize and
    normalisation, runs here in PyTorch; photos of any size are resized to one batch."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._make_input = _input_maker(self.source, self.preprocess)

    def _forward(self, raw: np.ndarray | list[np.ndarray]) -> np.ndarray:
        return super()._forward(self._make_input(raw).numpy())


def load_checkpoint(path: str | Path, *, threads: int = 0) -> TorchPredictor:
    """A :class:`TorchPredictor` from a ``.ckpt`` or a run folder (its best checkpoint)."""
    checkpoint = open_checkpoint(Path(path).expanduser())  # read once
    ckpt, meta, model = checkpoint.path, checkpoint.meta, checkpoint.classifier()
    if threads > 0:
        torch.set_num_threads(threads)
    return TorchPredictor(source=ckpt, classes=meta["classes"], preprocess=meta["preprocess"],
                          temperature=float(meta.get("temperature", 1.0)), model=model, metadata=meta)
