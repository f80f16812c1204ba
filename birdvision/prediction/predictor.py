"""One prediction API for checkpoints and exported models: :func:`load` -> :class:`Predictor`.

``load`` takes a ``.ckpt``, a run folder or an exported ``.onnx`` / ``.ort`` file and
returns a predictor that gives the same answer whichever it was: every engine gets the
same decoded input (photos resized once with PIL to the model's size as uint8, or
float32 waveform windows at the spec's sample rate) and returns
``softmax(logits / temperature)``.

The engines live beside this module: :mod:`~birdvision.prediction.onnx_engine` (ONNX
Runtime, numpy, Pillow and soundfile only: an exported model is run without importing
PyTorch) and :mod:`~birdvision.prediction.torch_engine` (checkpoints, and bare exports
whose mel frontend must run outside the graph). This module imports neither engine
until :func:`load` picks one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from birdvision.prediction.tables import top_rows

EXPORT_SUFFIXES = (".onnx", ".ort")
DEFAULT_MIN_CONFIDENCE = 0.1  # a species' threshold when neither the model nor the caller gives one
UNKNOWN = "unknown"  # the answer for a photo the model abstains on


class InferenceError(ValueError):
    """An input the model cannot take (wrong type, shape or dtype) or a file that is not a model."""


def clip_samples(preprocess: dict[str, Any]) -> int:
    """Samples per waveform window of an audio spec."""
    return int(round(float(preprocess["clip_seconds"]) * int(preprocess["sample_rate"])))


def _as_numpy(x: Any) -> Any:
    """A torch tensor as a numpy array (without importing torch: a tensor can only exist if torch is loaded)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


class Predictor:
    """Classify photos or waveform windows; subclasses supply :meth:`_forward` (the engine).

    ``classes``: species names in output order; ``preprocess``: the spec the model was trained
    with; ``engine``: ``"torch"`` or ``"onnxruntime"``; ``input_shape``: one input row's shape
    (``(H, W, 3)`` uint8, or ``(T,)`` float32); ``source``: the model file.
    """

    engine = "?"

    def __init__(self, *, source: Path, classes: list[str], preprocess: dict[str, Any], temperature: float,
                 metadata: dict[str, Any] | None = None) -> None:
        self.source = Path(source)
        self.classes, self.preprocess, self.temperature = list(classes), dict(preprocess), float(temperature)
        self.metadata = metadata or {}
        # Decisions chosen on validation after training (absent from older models): the no-call class is
        # never reported; a species is reported at or above its threshold; a photo is "unknown" below abstain.
        self.background_class: str | None = self.metadata.get("background_class") or None
        self._skip = [self.classes.index(self.background_class)] if self.background_class in self.classes else []
        th = self.metadata.get("thresholds") or {}
        values = th.get("values") if isinstance(th, dict) else None
        self.thresholds: np.ndarray | None = (np.array([np.nan if v is None else float(v) for v in values])
                                              if values else None)
        ab = self.metadata.get("abstain") or {}
        self.abstain_threshold: float | None = float(ab["threshold"]) if isinstance(ab, dict) and "threshold" in ab else None
        if self.is_audio:
            self.input_shape: tuple[int, ...] = (clip_samples(self.preprocess),)
        else:
            s = int(self.preprocess["size"])
            self.input_shape = (s, s, 3)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source.name}, engine={self.engine}, {len(self.classes)} classes, "
                f"input {self.input_shape})")

    @property
    def is_audio(self) -> bool:
        """Whether the model takes waveform windows (spectrogram mode)."""
        return self.preprocess.get("kind") == "audio"

    @property
    def input_dtype(self) -> type:
        return np.float32 if self.is_audio else np.uint8

    # ------------------------------------------------------------------ public API
    def predict(self, item: Any, top_k: int = 5) -> list[tuple[str, float]]:
        """The ``top_k`` (species, probability) pairs for one photo / waveform window (a path or an array), by
        probability alone (no thresholds; the no-call class left out): see :meth:`decide` for what predict writes."""
        probs = self.predict_batch([item])[0]
        order = [i for i in np.argsort(-probs) if i not in self._skip][: max(1, int(top_k))]
        return [(self.classes[i], float(probs[i])) for i in order]

    def decide(self, probs: np.ndarray, *, top_k: int, min_confidence: float | None = None,
               always_top1: bool | None = None) -> list[list[tuple[str, float]]]:
        """What predict writes for each row of ``probs`` (from :meth:`predict_batch`): the same step for every engine.

        A species is reported when its probability reaches its threshold: ``min_confidence`` for every class
        when given, else the class's threshold stored with the model (chosen on validation data), else
        :data:`DEFAULT_MIN_CONFIDENCE`. The no-call class is never reported. ``always_top1`` (default: false for
        recordings, true for photos) writes the best species even when nothing passes. Otherwise a window where
        nothing passes gets no row, and a photo gets one :data:`UNKNOWN` row, as does a photo whose best
        probability is under the model's abstention threshold.
        """
        audio = self.is_audio
        return top_rows(
            probs, self.classes, top_k=top_k, always_top1=(not audio) if always_top1 is None else bool(always_top1),
            min_confidence=DEFAULT_MIN_CONFIDENCE if min_confidence is None else float(min_confidence),
            thresholds=self.thresholds if min_confidence is None else None, skip=self._skip,
            abstain=None if audio else self.abstain_threshold, unknown=None if audio else UNKNOWN)

    def predict_batch(self, batch: np.ndarray | Sequence[Any]) -> np.ndarray:
        """Probabilities ``[B, num_classes]`` for a batch.

        ``batch`` is an array already in the model's input form (uint8 ``[B, H, W, 3]`` at
        the model's size, or float32 ``[B, T]`` waveform windows at the spec's sample rate),
        or a sequence of items (paths, PIL images, arrays) that are prepared one by one.
        """
        raw = self._as_batch(batch)
        if len(raw) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return self._forward(raw)

    def prepare(self, item: Any) -> np.ndarray:
        """One item -> one input row (decode, resize with the model's filter, or load a recording)."""
        if self.is_audio:
            return self._prepare_wave(item)
        return self._prepare_image(item)

    # ------------------------------------------------------------------ the engine
    def _forward(self, raw: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ input handling
    def _as_batch(self, batch: Any) -> np.ndarray:
        batch = _as_numpy(batch)
        if isinstance(batch, np.ndarray):
            return self._check_array(batch)
        if isinstance(batch, (str, Path, Image.Image)):
            raise InferenceError("predict_batch takes a sequence of items or a batch array; use predict() for one item")
        if not isinstance(batch, Sequence):
            raise InferenceError(f"expected an array or a list of items, got {type(batch).__name__}")
        rows = [self.prepare(x) for x in batch]
        return np.stack(rows) if rows else np.zeros((0, *self.input_shape), dtype=self.input_dtype)

    def _check_array(self, a: np.ndarray) -> np.ndarray:
        want = (f"float32 waveform windows [B, {self.input_shape[0]}] "
                f"({self.preprocess.get('clip_seconds')} s at {self.preprocess.get('sample_rate')} Hz)"
                if self.is_audio else f"uint8 RGB photos [B, {self.input_shape[0]}, {self.input_shape[1]}, 3]")
        if a.ndim != 1 + len(self.input_shape) or tuple(a.shape[1:]) != self.input_shape:
            hint = " (pass file paths or PIL images to have photos resized)" if not self.is_audio else (
                " (use birdvision.predict for long recordings, window by window)")
            raise InferenceError(f"expected {want}; got an array of shape {tuple(a.shape)}{hint}")
        if self.is_audio:
            if not np.issubdtype(a.dtype, np.floating):
                raise InferenceError(f"expected {want}; got dtype {a.dtype} (scale integer PCM to [-1, 1] floats)")
            return np.ascontiguousarray(a, dtype=np.float32)
        if a.dtype != np.uint8:
            raise InferenceError(f"expected {want}; got dtype {a.dtype} (normalisation happens inside the model)")
        return np.ascontiguousarray(a)

    def _prepare_image(self, item: Any) -> np.ndarray:
        from birdvision.data.image_io import load_rgb, resize_uint8

        size, interp = int(self.preprocess["size"]), str(self.preprocess.get("interpolation", "bilinear"))
        if isinstance(item, (str, Path)):
            return resize_uint8(load_rgb(item, draft_size=size), size, interp)
        if isinstance(item, Image.Image):
            return resize_uint8(item, size, interp)
        item = _as_numpy(item)
        if isinstance(item, np.ndarray):
            if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
                raise InferenceError(f"expected a uint8 RGB photo [H, W, 3]; got {item.dtype} array of shape {item.shape}")
            if item.shape[:2] == (size, size):
                return np.ascontiguousarray(item)
            return resize_uint8(Image.fromarray(item), size, interp)
        raise InferenceError(f"expected a photo (path, PIL image or uint8 [H, W, 3] array); got {type(item).__name__}")

    def _prepare_wave(self, item: Any) -> np.ndarray:
        n = self.input_shape[0]
        sr = int(self.preprocess["sample_rate"])
        if isinstance(item, (str, Path)):
            from birdvision.data.audio import load as load_audio

            # [1, T] with stereo="mix": the same downmix and high-pass as training windows.
            w = load_audio(item, sr, stereo="mix", highpass_hz=self.preprocess.get("highpass_hz"))[0]
            if len(w) > n:
                raise InferenceError(
                    f"{item}: {len(w) / sr:.1f} s is longer than the model's {n / sr:g} s window; "
                    "use birdvision.predict for long recordings (window by window)"
                )
            return np.pad(w, (0, n - len(w)))
        item = _as_numpy(item)
        if isinstance(item, np.ndarray):
            if item.ndim != 1 or item.shape[0] != n or not np.issubdtype(item.dtype, np.floating):
                raise InferenceError(
                    f"expected a mono float waveform of {n} samples ({n / sr:g} s at {sr} Hz); "
                    f"got {item.dtype} array of shape {item.shape}"
                )
            return item.astype(np.float32)
        raise InferenceError(f"expected a recording path or a float32 waveform [T]; got {type(item).__name__}")


def load(path: str | Path, *, threads: int = 0, providers: list[str] | None = None, spinning: bool = True) -> Predictor:
    """A :class:`Predictor` from a checkpoint, a run folder, or an exported ``.onnx`` / ``.ort`` file.

    Exports whose preprocessing is in the graph (``model.onnx``, ``model.int8.onnx``, ``.ort``) and bare
    photo exports run on ONNX Runtime without PyTorch; checkpoints and bare spectrogram exports (their mel
    frontend runs outside the graph) load PyTorch. ``threads=0`` picks the intra-op thread count for this
    machine (:func:`birdvision.exporting.runtime.default_threads`); ``spinning=False`` stops ONNX Runtime's
    idle workers busy-waiting (predict sets it while another thread decodes the next batch).
    """
    p = Path(path).expanduser()
    if p.suffix.lower() in EXPORT_SUFFIXES:
        from birdvision.prediction.onnx_engine import load_export

        return load_export(p, threads=threads, providers=providers, spinning=spinning)
    from birdvision.prediction.torch_engine import load_checkpoint

    return load_checkpoint(p, threads=threads)
