"""The preprocessing spec: what every checkpoint and exported model carries, typed.

A model is either a photo model (:class:`ImageSpec`: square size, mean/std, resize filter) or a
call model (:class:`AudioSpec`: sample rate, window, channel handling, high-pass, mel frontend).
The spec owns what follows from that choice, so no other module asks which kind it holds:

- the network's input shape (:meth:`net_input_shape`) and the raw input per example
  (:meth:`raw_input_shape`: any-size photos, or one window of samples);
- turning decoded raw inputs into network inputs (:meth:`input_maker`, built once and called per batch);
- the on-batch frontend (:meth:`frontend`: the mel spectrogram for calls, none for photos);
- a deterministic evaluation dataset from samples (:meth:`eval_dataset`).

Stored form: :meth:`to_dict` writes the plain dict checkpoints (``hyper_parameters.preprocess``)
and ONNX metadata (``preprocess``) have always held, and :func:`from_dict` reads it back (files
written before this module existed included) after checking every field: the spec comes from
files that may come from anywhere, so every size is bounded before anything is allocated from it.

This module imports no PyTorch at import time: ONNX prediction and the metadata checks read
specs in a process that never loads it. The methods that build tensors, frontends and datasets
import their data-edge module when called.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from birdvision.data.manifest import Sample

# Bounds on sizes read from a file, so a damaged or hostile one cannot make us allocate terabytes.
# Far above anything trained here (photos <= 600 px, calls at <= 48 kHz in <= 10 s windows).
MAX_IMAGE_SIDE = 8192
SAMPLE_RATE_RANGE_HZ = (1000, 384_000)
MAX_CLIP_SECONDS = 60.0
MAX_CLIP_SAMPLES = 1 << 24  # 64 MB of float32 per window
MAX_N_FFT = 1 << 16
MAX_N_MELS = 1024
MAX_FRAMES = 1 << 16
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")
STEREO_MODES = ("mix", "split")


# ----------------------------------------------------------------------------- field checks


def as_int(v: Any) -> int | None:
    """``v`` as an int when it is one (an integral float from JSON counts), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return None


def as_float(v: Any) -> float | None:
    """``v`` as a finite float, else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def int_field(d: dict[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    """``d[key]`` as an int in ``[lo, hi]``, else a ValueError naming ``where + key``."""
    v = as_int(d.get(key))
    if v is None or not lo <= v <= hi:
        raise ValueError(f"{where}{key}={d.get(key)!r} (expected an integer in [{lo}, {hi}])")
    return v


def float_field(d: dict[str, Any], key: str, lo: float, hi: float, where: str, *, lo_open: bool = False) -> float:
    """``d[key]`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), else a ValueError."""
    v = as_float(d.get(key))
    if v is None or not ((lo < v) if lo_open else (lo <= v)) or v > hi:
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ValueError(f"{where}{key}={d.get(key)!r} (expected a number in {rng})")
    return v


# ----------------------------------------------------------------------------- the two specs


@dataclass(frozen=True)
class ImageSpec:
    """A photo model's input: decoded RGB, squashed to ``size`` x ``size`` with an antialiased
    ``interpolation`` filter (float, not uint8), then ``(x / 255 - mean) / std`` per channel."""

    kind: ClassVar[str] = "image"
    is_audio: ClassVar[bool] = False
    raw_dtype: ClassVar[str] = "uint8"  # a decoded photo: 8-bit RGB
    # exported input forms (exporting.metadata.INPUT_KINDS): preprocessing in the graph, and the bare network
    full_input_kind: ClassVar[str] = "uint8_nhwc_any"
    bare_input_kind: ClassVar[str] = "float_nchw"
    input_kinds: ClassVar[tuple[str, ...]] = ("uint8_nhwc_any", "uint8_nhwc", "float_nchw")  # uint8_nhwc: phones

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "image", "size": self.size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "resize": "squash", "layout": "RGB"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageSpec:
        size = int_field(d, "size", 1, MAX_IMAGE_SIDE, "preprocess.")
        for key in ("mean", "std"):
            v = d.get(key)
            if not isinstance(v, (list, tuple)) or len(v) != 3 or any(as_float(x) is None for x in v):
                raise ValueError(f"preprocess.{key}={v!r} (expected 3 finite numbers, one per RGB channel)")
        if any(float(x) <= 0 for x in d["std"]):
            raise ValueError(f"preprocess.std={d['std']!r} (every channel's std must be > 0)")
        interp = d.get("interpolation", "bilinear")
        if interp not in INTERPOLATIONS:
            raise ValueError(f"preprocess.interpolation={interp!r} (expected one of {', '.join(INTERPOLATIONS)})")
        return cls(size, tuple(float(x) for x in d["mean"]), tuple(float(x) for x in d["std"]), interp)  # type: ignore[arg-type]

    def raw_input_shape(self) -> tuple[int | None, ...]:
        """One raw example: an RGB photo of any size."""
        return (None, None, 3)

    def net_input_shape(self, in_chans: int = 3) -> tuple[int, int, int]:
        """(C, H, W) the bare network takes."""
        return (in_chans, self.size, self.size)

    def frontend(self) -> nn.Module | None:
        """Photos need no on-batch frontend: the dataset already yields network inputs."""
        return None

    def frontend_input_shape(self, in_chans: int = 3) -> tuple[int, ...]:
        """One example as :meth:`frontend` takes it (photos: the network input itself)."""
        return self.net_input_shape(in_chans)

    def describe(self) -> str:
        """How to make the bare network's input, in one line (scripts, logs)."""
        return (f"RGB resized ({self.interpolation}) to {self.size} px, x/255, minus mean {list(self.mean)}, "
                f"divided by std {list(self.std)}")

    def input_maker(self) -> Callable[[Any], torch.Tensor]:
        """Decoded photos (any sizes) -> ``float32 [B, 3, size, size]`` (:func:`~birdvision.data.photos.transforms.photo_tensor`)."""
        from birdvision.data.photos.transforms import photo_tensor

        return lambda photos: photo_tensor(photos, self)

    def network_input(self, photos: Any) -> torch.Tensor:
        """:meth:`input_maker` for one batch."""
        return self.input_maker()(photos)

    def eval_dataset(self, samples: list[Sample], classes: list[str]) -> Dataset:
        """Normalised photo tensors with class indices, nothing random."""
        from birdvision.data.photos.transforms import ImageDataset, eval_transform

        return ImageDataset(samples, {c: i for i, c in enumerate(classes)}, eval_transform(self))


@dataclass(frozen=True)
class AudioSpec:
    """A call model's input: a window of ``clip_seconds`` at ``sample_rate`` (channels mixed or each its own,
    high-passed at ``highpass_hz``), turned into a (C, mels, frames) spectrogram by the ``mel`` frontend."""

    kind: ClassVar[str] = "audio"
    is_audio: ClassVar[bool] = True
    raw_dtype: ClassVar[str] = "float32"  # a window of samples in [-1, 1]
    full_input_kind: ClassVar[str] = "waveform"
    bare_input_kind: ClassVar[str] = "mel"
    input_kinds: ClassVar[tuple[str, ...]] = ("waveform", "mel")

    sample_rate: int
    clip_seconds: float
    mel: dict[str, Any] = field(default_factory=dict)  # the frontend's parameters (MelFrontend.spec())
    stereo: str = "mix"
    highpass_hz: float | None = None
    in_chans: int = 1

    @property
    def clip_samples(self) -> int:
        """Samples per window."""
        return int(round(self.clip_seconds * self.sample_rate))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "audio", "sample_rate": self.sample_rate, "clip_seconds": self.clip_seconds,
                "stereo": self.stereo, "highpass_hz": self.highpass_hz, "mel": dict(self.mel), "in_chans": self.in_chans}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioSpec:
        lo, hi = SAMPLE_RATE_RANGE_HZ
        sr = int_field(d, "sample_rate", lo, hi, "preprocess.")
        clip = float_field(d, "clip_seconds", 0.0, MAX_CLIP_SECONDS, "preprocess.", lo_open=True)
        samples = int(round(clip * sr))
        if not 1 <= samples <= MAX_CLIP_SAMPLES:
            raise ValueError(f"preprocess: {clip:g} s at {sr} Hz is {samples} samples per window "
                             f"(expected 1 to {MAX_CLIP_SAMPLES})")
        hp = None if d.get("highpass_hz") is None else float_field(d, "highpass_hz", 0.0, sr / 2, "preprocess.")
        stereo = d.get("stereo", "mix")
        if stereo not in STEREO_MODES:
            raise ValueError(f"preprocess.stereo={stereo!r} (expected one of {', '.join(STEREO_MODES)})")
        mel = d.get("mel")
        if not isinstance(mel, dict):
            raise ValueError(f"preprocess.mel={mel!r} (expected the mel frontend's parameters)")
        if as_int(mel.get("sample_rate", sr)) != sr:
            raise ValueError(f"preprocess.mel.sample_rate={mel.get('sample_rate')!r} differs from preprocess.sample_rate={sr}")
        n_fft = int_field(mel, "n_fft", 16, MAX_N_FFT, "preprocess.mel.")
        hop = int_field(mel, "hop_length", 1, MAX_N_FFT, "preprocess.mel.")
        int_field(mel, "n_mels", 1, MAX_N_MELS, "preprocess.mel.")
        if n_fft // 2 >= samples:
            raise ValueError(f"preprocess.mel.n_fft={n_fft} is longer than twice the {samples}-sample window")
        if samples // hop + 1 > MAX_FRAMES:
            raise ValueError(f"preprocess.mel.hop_length={hop} gives {samples // hop + 1} frames per window "
                             f"(at most {MAX_FRAMES})")
        f_min = float_field(mel, "f_min_hz", 0.0, sr / 2, "preprocess.mel.")
        f_max = float_field(mel, "f_max_hz", 0.0, sr / 2, "preprocess.mel.", lo_open=True)
        if f_min >= f_max:
            raise ValueError(f"preprocess.mel.f_min_hz={f_min:g} is not below f_max_hz={f_max:g}")
        in_chans = as_int(d.get("in_chans", mel.get("in_chans", 1)))
        if as_int(mel.get("in_chans", 1)) not in (1, 3) or in_chans not in (1, 3):
            raise ValueError(f"preprocess.mel.in_chans={mel.get('in_chans')!r} (expected 1 or 3)")
        return cls(sr, clip, dict(mel), stereo, hp, in_chans)

    def raw_input_shape(self) -> tuple[int | None, ...]:
        """One raw example: a mono window of samples."""
        return (self.clip_samples,)

    def frontend_input_shape(self, in_chans: int | None = None) -> tuple[int, ...]:
        """One example as :meth:`frontend` takes it: a window of samples."""
        return (self.clip_samples,)

    def describe(self) -> str:
        """How to make the bare network's input, in one line (scripts, logs)."""
        return f"log-mel of {self.clip_seconds} s at {self.sample_rate} Hz (mel spec in model.onnx metadata)"

    def frontend(self) -> nn.Module:
        """The mel frontend rebuilt from its parameters (eval mode, CPU): waveforms ``[B, samples]`` -> ``[B, C, mels, frames]``."""
        from birdvision.data.audio.mel import MelFrontend

        return MelFrontend.from_spec(self.mel).eval()

    def net_input_shape(self, in_chans: int | None = None) -> tuple[int, int, int]:
        """(C, mels, frames) the bare network takes: what the frontend makes of one window."""
        import torch

        with torch.no_grad():
            out = self.frontend()(torch.zeros(1, self.clip_samples))
        return tuple(int(x) for x in out.shape[1:])  # type: ignore[return-value]

    def input_maker(self) -> Callable[[Any], torch.Tensor]:
        """Windows ``[B, samples]`` (float32 in [-1, 1]) -> the network's input, through the frontend (built once)."""
        import torch

        frontend = self.frontend()

        def make(waves: Any) -> torch.Tensor:
            with torch.no_grad():
                return frontend(torch.as_tensor(waves, dtype=torch.float32))

        return make

    def network_input(self, waves: Any) -> torch.Tensor:
        """:meth:`input_maker` for one batch."""
        return self.input_maker()(waves)

    def eval_dataset(self, samples: list[Sample], classes: list[str]) -> Dataset:
        """Waveform windows (the frontend runs on each batch, :meth:`frontend`), nothing random."""
        from birdvision.data.audio.windows import AudioWindowDataset

        return AudioWindowDataset(samples, classes, sample_rate=self.sample_rate, clip_seconds=self.clip_seconds,
                                  stereo=self.stereo, highpass_hz=self.highpass_hz, augment=None)


Spec = ImageSpec | AudioSpec
KINDS: dict[str, type[ImageSpec] | type[AudioSpec]] = {"image": ImageSpec, "audio": AudioSpec}


def from_dict(d: Any) -> Spec:
    """The typed spec of a stored preprocessing dict (``kind`` absent means image, as the first files had it).

    Raises ValueError naming the field for anything that cannot be true."""
    if isinstance(d, (ImageSpec, AudioSpec)):
        return d
    if not isinstance(d, dict):
        raise ValueError(f"preprocess is a {type(d).__name__}, not the preprocessing spec")
    kind = d.get("kind", "image")
    if kind not in KINDS:
        raise ValueError(f"preprocess.kind={kind!r} (expected 'image' or 'audio')")
    return KINDS[kind].from_dict(d)
