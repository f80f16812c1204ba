"""One prediction API for checkpoints and exported models: :func:`load` -> :class:`Predictor`.

``load`` takes a ``.ckpt``, a run folder or an exported ``.onnx`` / ``.ort`` file and
returns a predictor that gives the same answer whichever it was: every engine gets the
same decoded input (photos decoded in full as uint8 RGB at their own size, which the
engine resizes with the one antialiased resize, inside the graph for ``model.onnx``; or
float32 waveform windows at the spec's sample rate) and returns
``softmax(logits / temperature)``. Exports from before the resize moved into the graph
take photos at the model's size; for those, photos are resized here with Pillow.

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

from birdvision.prediction.tables import DEFAULT_MIN_CONFIDENCE, threshold_values, top_rows
from birdvision.spec import from_dict as spec_from_dict

EXPORT_SUFFIXES = (".onnx", ".ort")
UNKNOWN = "unknown"  # the answer for a photo the model abstains on


class InferenceError(ValueError):
    """An input the model cannot take (wrong type, shape or dtype) or a file that is not a model."""


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
    (``(None, None, 3)`` uint8 photos of any size, ``(size, size, 3)`` for an engine that does not
    resize, or ``(T,)`` float32); ``source``: the model file.
    """

    engine = "?"

    def __init__(self, *, source: Path, classes: list[str], preprocess: dict[str, Any], temperature: float,
                 metadata: dict[str, Any] | None = None, resizes: bool = True) -> None:
        self.source = Path(source)
        self.classes, self.preprocess, self.temperature = list(classes), dict(preprocess), float(temperature)
        self.spec = spec_from_dict(self.preprocess)
        self.metadata = metadata or {}
        self.species_mask: np.ndarray | None = None  # restrict_species(): the listed classes
        self.species_renormalise = True
        self.resizes = bool(resizes) and not self.is_audio  # the engine takes photos of any size
        # Decisions chosen on validation after training (absent from older models): the no-call class is
        # never reported; a species is reported at or above its threshold; a photo is "unknown" below abstain.
        self.background_class: str | None = self.metadata.get("background_class") or None
        self._skip = [self.classes.index(self.background_class)] if self.background_class in self.classes else []
        th = self.metadata.get("thresholds") or {}
        self.thresholds: np.ndarray | None = threshold_values(th)
        presence = th.get("presence") if isinstance(th, dict) else None
        self.presence: float | None = float(presence) if presence is not None and self._skip else None
        ab = self.metadata.get("abstain") or {}
        self.abstain_threshold: float | None = float(ab["threshold"]) if isinstance(ab, dict) and "threshold" in ab else None
        if self.is_audio:
            self.input_shape: tuple[int | None, ...] = self.spec.raw_input_shape()
        elif self.resizes:
            self.input_shape = (None, None, 3)
        else:
            s = int(self.preprocess["size"])
            self.input_shape = (s, s, 3)

    def __repr__(self) -> str:
        listed = "" if self.species is None else f", {len(self.species)} listed"
        return (f"{type(self).__name__}({self.source.name}, engine={self.engine}, {len(self.classes)} classes{listed}, "
                f"input {self.input_shape})")

    @property
    def is_audio(self) -> bool:
        """Whether the model takes waveform windows (spectrogram mode)."""
        return self.spec.is_audio

    @property
    def input_dtype(self) -> type:
        return np.dtype(self.spec.raw_dtype).type

    @property
    def species(self) -> list[str] | None:
        """The classes a species list restricts answers to (model order), or None when unrestricted."""
        if self.species_mask is None:
            return None
        return [self.classes[i] for i in np.flatnonzero(self.species_mask) if i not in self._skip]

    # ------------------------------------------------------------------ public API
    def restrict_species(self, species: str | Path | Sequence[str] | None, *, renormalise: bool = True) -> Predictor:
        """Answer only with the listed species (a species list file, or names); ``None`` lifts the restriction.

        Names match classes ignoring case, whitespace and ``_``/``-``; an unknown name raises
        :class:`~birdvision.prediction.species.SpeciesListError` naming the closest class. ``predict_batch``
        then gives 0 to every species off the list and, with ``renormalise`` (default), divides by the
        listed species' total so each row sums to 1 over the list (see :mod:`birdvision.prediction.species`).
        A no-call model's background class stays in that total (listed, never reported): otherwise an empty
        window's mass would move onto the listed species and silence would become a call.
        Returns the predictor itself.
        """
        from birdvision.prediction.species import load_species_list

        mask = None if species is None else load_species_list(species, self.classes)
        if mask is not None:
            mask[self._skip] = True
        self.species_mask = mask
        self.species_renormalise = bool(renormalise)
        return self

    def skipped(self) -> list[int]:
        """Class indices never written: the no-call class and, with a species list, every species off it."""
        off = [] if self.species_mask is None else np.flatnonzero(~self.species_mask).tolist()
        return sorted(set(self._skip) | set(off))

    def predict(self, item: Any, top_k: int = 5) -> list[tuple[str, float]]:
        """The ``top_k`` (species, probability) pairs for one photo / waveform window (a path or an array), by
        probability alone (no thresholds; the no-call class and species off a species list left out): see
        :meth:`decide` for what predict writes."""
        probs = self.predict_batch([item])[0]
        skip = set(self.skipped())
        order = [i for i in np.argsort(-probs, kind="stable") if i not in skip][: max(1, int(top_k))]
        return [(self.classes[i], float(probs[i])) for i in order]

    def decide(self, probs: np.ndarray, *, top_k: int, min_confidence: float | None = None,
               always_top1: bool | None = None) -> list[list[tuple[str, float]]]:
        """What predict writes for each row of ``probs`` (from :meth:`predict_batch`): the same step for every engine.

        A species is reported when its probability reaches its threshold: ``min_confidence`` for every class
        when given, else the class's threshold stored with the model (chosen on validation data), else
        :data:`DEFAULT_MIN_CONFIDENCE`. The no-call class is never reported. With the model's thresholds, a
        window of a no-call model where no species passes but the call presence (``1 - p(no-call)``) reaches the
        model's ``presence`` threshold gets its best species: a call, species uncertain. ``always_top1`` (default: false for
        recordings, true for photos) writes the best species even when nothing passes. Otherwise a window where
        nothing passes gets no row, and a photo gets one :data:`UNKNOWN` row, as does a photo whose best
        probability is under the model's abstention threshold.
        """
        audio = self.is_audio
        return top_rows(
            probs, self.classes, top_k=top_k, always_top1=(not audio) if always_top1 is None else bool(always_top1),
            min_confidence=DEFAULT_MIN_CONFIDENCE if min_confidence is None else float(min_confidence),
            thresholds=self.thresholds if min_confidence is None else None, skip=self.skipped(),
            abstain=None if audio else self.abstain_threshold, unknown=None if audio else UNKNOWN,
            presence=self.presence if min_confidence is None else None, background=self._skip[0] if self._skip else None)

    def predict_batch(self, batch: np.ndarray | Sequence[Any]) -> np.ndarray:
        """Probabilities ``[B, num_classes]`` for a batch.

        ``batch`` is an array already in the model's input form (decoded uint8 RGB photos
        ``[B, H, W, 3]``, any H and W unless the engine takes only the model's size, or float32
        ``[B, T]`` waveform windows at the spec's sample rate), or a sequence of items (paths,
        PIL images, arrays of any sizes) that are prepared one by one. With a species
        list (:meth:`restrict_species`), species off the list get 0.
        """
        raw = self._as_batch(batch)
        if len(raw) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        probs = self._forward(raw)
        if self.species_mask is not None:
            from birdvision.prediction.species import restrict

            probs = restrict(probs, self.species_mask, self.species_renormalise)
        return probs

    def prepare(self, item: Any) -> np.ndarray:
        """One item -> one input row (decode a photo in full, or load a recording)."""
        if self.is_audio:
            return self._prepare_wave(item)
        return self._prepare_image(item)

    # ------------------------------------------------------------------ the engine
    def _forward(self, raw: np.ndarray | list[np.ndarray]) -> np.ndarray:  # pragma: no cover - abstract
        """Probabilities for an array of rows, or a list of photos of different sizes."""
        raise NotImplementedError

    # ------------------------------------------------------------------ input handling
    def _as_batch(self, batch: Any) -> np.ndarray | list[np.ndarray]:
        batch = _as_numpy(batch)
        if isinstance(batch, np.ndarray):
            return self._check_array(batch)
        if isinstance(batch, (str, Path, Image.Image)):
            raise InferenceError("predict_batch takes a sequence of items or a batch array; use predict() for one item")
        if not isinstance(batch, Sequence):
            raise InferenceError(f"expected an array or a list of items, got {type(batch).__name__}")
        rows = [self.prepare(x) for x in batch]
        if not rows:
            return np.zeros((0, *(d or 1 for d in self.input_shape)), dtype=self.input_dtype)
        if all(r.shape == rows[0].shape for r in rows):
            return np.stack(rows)
        return rows  # photos of different sizes: the engine batches each size on its own

    def _check_array(self, a: np.ndarray) -> np.ndarray:
        dims = ", ".join("H" if d is None and i == 0 else "W" if d is None else str(d)
                         for i, d in enumerate(self.input_shape))
        want = (f"float32 waveform windows [B, {self.input_shape[0]}] "
                f"({self.preprocess.get('clip_seconds')} s at {self.preprocess.get('sample_rate')} Hz)"
                if self.is_audio else f"uint8 RGB photos [B, {dims}]")
        if a.ndim != 1 + len(self.input_shape) or any(
                (d is not None and g != d) or g < 1 for g, d in zip(a.shape[1:], self.input_shape, strict=True)):
            hint = (" (use birdvision.predict for long recordings, window by window)" if self.is_audio else
                    " (channels last; pass file paths or PIL images to have them decoded)" if self.resizes else
                    " (pass file paths or PIL images to have photos resized)")
            raise InferenceError(f"expected {want}; got an array of shape {tuple(a.shape)}{hint}")
        if self.is_audio:
            if not np.issubdtype(a.dtype, np.floating):
                raise InferenceError(f"expected {want}; got dtype {a.dtype} (scale integer PCM to [-1, 1] floats)")
            return np.ascontiguousarray(a, dtype=np.float32)
        if a.dtype != np.uint8:
            raise InferenceError(f"expected {want}; got dtype {a.dtype} (normalisation happens inside the model)")
        return np.ascontiguousarray(a)

    def _prepare_image(self, item: Any) -> np.ndarray:
        """A decoded RGB photo ``uint8 [H, W, 3]`` (:func:`~birdvision.data.photos.decode.load_rgb`'s full decode): at its
        own size for engines that resize, else squashed to the model's size with Pillow."""
        from birdvision.data.photos.decode import as_rgb_array, load_rgb, resize_uint8, to_rgb

        size, interp = int(self.preprocess["size"]), str(self.preprocess.get("interpolation", "bilinear"))
        if isinstance(item, (str, Path)):
            img = load_rgb(item)
        elif isinstance(item, Image.Image):
            img = to_rgb(item)
        else:
            item = _as_numpy(item)
            if not isinstance(item, np.ndarray):
                raise InferenceError(f"expected a photo (path, PIL image or uint8 [H, W, 3] array); "
                                     f"got {type(item).__name__}")
            if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8 or 0 in item.shape:
                raise InferenceError(f"expected a uint8 RGB photo [H, W, 3]; got {item.dtype} array of shape {item.shape}")
            if self.resizes or item.shape[:2] == (size, size):
                return np.ascontiguousarray(item)
            img = Image.fromarray(item)
        return as_rgb_array(img) if self.resizes else resize_uint8(img, size, interp)

    def _prepare_wave(self, item: Any) -> np.ndarray:
        n = self.input_shape[0]
        sr = int(self.preprocess["sample_rate"])
        if isinstance(item, (str, Path)):
            from birdvision.data.audio.io import load as load_audio

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
