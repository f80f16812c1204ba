"""One prediction API for checkpoints and exported models: ``birdvision.inference.load(path)``.

``load`` takes a ``.ckpt``, a run folder or an exported ``.onnx`` / ``.ort`` file and
returns a :class:`Predictor` that gives the same answer whichever it was: both engines
get the same decoded input (photos resized once with PIL to the model's size as uint8,
or float32 waveform windows at the spec's sample rate), and both return
``softmax(logits / temperature)``.

    >>> p = load("runs/effnet_b0/20250101-120000")
    >>> p.predict("robin.jpg", top_k=3)
    [('EUROPEAN ROBIN', 0.91), ...]
    >>> p.predict_batch(windows)  # float32 [B, T] for spectrogram models -> [B, K] probabilities
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from birdvision.checkpoint import CheckpointError, checkpoint_meta, load_classifier
from birdvision.data.images import load_rgb
from birdvision.exporting.graphs import clip_samples, is_audio, mel_frontend
from birdvision.exporting.samples import resize_uint8
from birdvision.runs import find_checkpoint

EXPORT_SUFFIXES = (".onnx", ".ort")


class InferenceError(ValueError):
    """An input the model cannot take (wrong type, shape or dtype) or a file that is not a model."""


class Predictor:
    """Classify photos or waveform windows with a checkpoint (PyTorch) or an export (ONNX Runtime).

    ``classes``: species names in output order; ``preprocess``: the spec the model was trained
    with; ``engine``: ``"torch"`` or ``"onnxruntime"``; ``input_shape``: one input row's shape
    (``(H, W, 3)`` uint8, or ``(T,)`` float32).
    """

    def __init__(self, *, source: Path, engine: str, classes: list[str], preprocess: dict[str, Any],
                 temperature: float, model: Any, input_kind: str, metadata: dict[str, Any] | None = None) -> None:
        self.source, self.engine = source, engine
        self.classes, self.preprocess, self.temperature = list(classes), dict(preprocess), float(temperature)
        self.metadata = metadata or {}
        self._model, self._input_kind = model, input_kind
        try:
            self._frontend = mel_frontend(self.preprocess) if is_audio(self.preprocess) else None
        except (ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{source}: its mel frontend spec cannot be built ({e})") from None
        if self._frontend is not None:
            self.input_shape: tuple[int, ...] = (clip_samples(self.preprocess),)
        else:
            s = int(self.preprocess["size"])
            self.input_shape = (s, s, 3)

    def __repr__(self) -> str:
        return f"Predictor({self.source.name}, engine={self.engine}, {len(self.classes)} classes, input {self.input_shape})"

    @property
    def is_audio(self) -> bool:
        """Whether the model takes waveform windows (spectrogram mode)."""
        return self._frontend is not None

    # ------------------------------------------------------------------ public API
    def predict(self, item: Any, top_k: int = 5) -> list[tuple[str, float]]:
        """The ``top_k`` (species, probability) pairs for one photo / waveform window (a path or an array)."""
        probs = self.predict_batch([item])[0]
        order = np.argsort(-probs)[: max(1, int(top_k))]
        return [(self.classes[i], float(probs[i])) for i in order]

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

    # ------------------------------------------------------------------ input handling
    def _as_batch(self, batch: Any) -> np.ndarray:
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().cpu().numpy()
        if isinstance(batch, np.ndarray):
            return self._check_array(batch)
        if isinstance(batch, (str, Path, Image.Image)):
            raise InferenceError("predict_batch takes a sequence of items or a batch array; use predict() for one item")
        if not isinstance(batch, Sequence):
            raise InferenceError(f"expected an array or a list of items, got {type(batch).__name__}")
        rows = [self.prepare(x) for x in batch]
        return np.stack(rows) if rows else np.zeros((0, *self.input_shape), dtype=self._dtype)

    @property
    def _dtype(self) -> type:
        return np.float32 if self.is_audio else np.uint8

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
        size, interp = int(self.preprocess["size"]), str(self.preprocess.get("interpolation", "bilinear"))
        if isinstance(item, (str, Path)):
            return resize_uint8(load_rgb(item, draft_size=size), size, interp)
        if isinstance(item, Image.Image):
            return resize_uint8(item, size, interp)
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
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
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
        if isinstance(item, np.ndarray):
            if item.ndim != 1 or item.shape[0] != n or not np.issubdtype(item.dtype, np.floating):
                raise InferenceError(
                    f"expected a mono float waveform of {n} samples ({n / sr:g} s at {sr} Hz); "
                    f"got {item.dtype} array of shape {item.shape}"
                )
            return item.astype(np.float32)
        raise InferenceError(f"expected a recording path or a float32 waveform [T]; got {type(item).__name__}")

    # ------------------------------------------------------------------ engines
    def _net_inputs(self, raw: np.ndarray) -> np.ndarray:
        """Same arithmetic as the parity gate: normalise the uint8 photo, or run the mel frontend."""
        if self._frontend is not None:
            with torch.no_grad():
                return self._frontend(torch.from_numpy(raw)).numpy()
        x = torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(self.preprocess["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess["std"], dtype=torch.float32).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous().numpy()

    def _forward(self, raw: np.ndarray) -> np.ndarray:
        if self.engine == "torch":
            with torch.inference_mode():
                return self._model.predict_proba(torch.from_numpy(self._net_inputs(raw))).float().numpy()
        feed = raw if self._input_kind in ("uint8_nhwc", "waveform") else self._net_inputs(raw)
        name = self._model.get_inputs()[0].name
        try:
            out = np.asarray(self._model.run(None, {name: feed})[0], dtype=np.float32)
        except Exception as e:  # noqa: BLE001 - inputs were checked, so a failure here is the model file's
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            raise CheckpointError(f"{self.source}: ONNX Runtime cannot run this model ({first[:200]})") from None
        if out.shape != (len(raw), len(self.classes)):
            raise CheckpointError(f"{self.source}: the model returned shape {out.shape} for {len(raw)} inputs, "
                                  f"but its metadata lists {len(self.classes)} classes")
        return out


def load(path: str | Path, *, threads: int = 0, providers: list[str] | None = None) -> Predictor:
    """A :class:`Predictor` from a checkpoint, a run folder, or an exported ``.onnx`` / ``.ort`` file."""
    p = Path(path).expanduser()
    if p.suffix.lower() in EXPORT_SUFFIXES:
        return _load_export(p, threads=threads, providers=providers)
    ckpt = find_checkpoint(p)
    meta = checkpoint_meta(ckpt)
    model = load_classifier(ckpt)
    if threads > 0:
        torch.set_num_threads(threads)
    return Predictor(source=ckpt, engine="torch", classes=meta["classes"], preprocess=meta["preprocess"],
                     temperature=float(meta.get("temperature", 1.0)), model=model, input_kind="torch", metadata=meta)


def _load_export(p: Path, *, threads: int, providers: list[str] | None) -> Predictor:
    from birdvision.exporting.runtime import open_export

    session, meta = open_export(p, threads=threads, providers=providers)
    return Predictor(source=p, engine="onnxruntime", classes=meta["classes"], preprocess=meta["preprocess"],
                     temperature=float(meta.get("temperature", 1.0)), model=session, input_kind=meta["input_kind"],
                     metadata=meta)
