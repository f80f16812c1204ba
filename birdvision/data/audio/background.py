"""The no-call class of spectrogram mode: windows with no bird in them, so a call model can say "nothing here".

A classifier trained only on species windows has no answer for an empty window: softmax
spreads over the species and one of them wins. So spectrogram mode adds one more class,
:data:`BACKGROUND_CLASS` (``nocall``), that predict never writes (the model's ``background_class``).
Its windows come from three places, each optional (``audio.nocall.*``, ``data.background``):

1. **quiet stretches of the training recordings** (:func:`relabel_quiet`): a training window whose
   loudest 50 ms frame, after the model's high-pass, is at least ``quiet_db`` below the
   recording's loud frames (their 99th percentile) holds no call loud enough to matter. It is
   relabelled, not copied: a window is a species window or a no-call window, never both, and it
   keeps its recording's split and group. Curated recordings (xeno-canto) are dense: 39 of the
   717 windows of the 74 real recordings qualify at 25 dB. Validation and test windows keep their
   recording's label (the usual weak labels), so every held-out recording has one label.
2. **a folder of recordings without calls** (``data.background=DIR``, or a ``nocall/`` folder
   beside the species folders): every window, the files split like recordings (grouped by file).
3. **generated noise** (:func:`synthetic_noise`): coloured noise (spectral slope from brown to
   blue), sometimes with a broad resonance, slow gusts or sparse clicks, at -75 to -25 dBFS.
   The mel frontend's ``ref="max"`` makes the level irrelevant, so what the model learns is the
   *shape* of an empty window. Training and validation files (not test: the test split stays the
   user's recordings) are written once per setting to a cache folder (like the demo calls), so the
   manifest can name them and evaluation, export calibration and parity read the same windows
   back; evaluation measures silence on noise generated afresh (:func:`noise_windows`).
   SYNTHETIC: a field recording's empty stretches (wind, rain, insects, traffic) are richer; a
   user's background folder teaches those.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

from birdvision.data.audio.io import NON_AUDIO_SUFFIXES, AudioError, RecordingProblem, load, probe
from birdvision.data.files import walk_files
from birdvision.data.manifest import Sample
from birdvision.runs.artifacts import atomic_path, sha256_file

log = logging.getLogger(__name__)

BACKGROUND_CLASS = "nocall"
SYNTHETIC_CACHE = Path.home() / ".cache" / "birdvision" / "nocall"
FRAME_SECONDS = 0.05
_GENERATOR_VERSION = 1  # bump when synthetic_noise changes, so cached files are made again


# ----------------------------------------------------------------------------- quiet windows


def frame_levels(audio: np.ndarray, sample_rate: int, frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """Power in dB of consecutive ``frame_seconds`` frames of a mono signal (the tail shorter than a frame is left out)."""
    n = max(1, int(round(frame_seconds * sample_rate)))
    k = len(audio) // n
    if k == 0:
        return np.full(1, 10 * math.log10(float(np.mean(np.square(audio, dtype=np.float64))) + 1e-20))
    power = np.mean(np.square(audio[: k * n].reshape(k, n), dtype=np.float64), axis=1)
    return 10 * np.log10(power + 1e-20)


def quiet_mask(levels: np.ndarray, starts_s: Sequence[float], clip_seconds: float, quiet_db: float,
               frame_seconds: float = FRAME_SECONDS) -> list[bool]:
    """Per window start: whether its loudest frame is ``quiet_db`` or more below the 99th percentile frame."""
    ref = float(np.quantile(levels, 0.99))
    out = []
    for s in starts_s:
        a = int(math.floor(s / frame_seconds))
        b = max(a + 1, int(math.ceil((s + clip_seconds) / frame_seconds)))
        seg = levels[a:b]
        out.append(bool(seg.size) and float(seg.max()) <= ref - quiet_db)
    return out


def relabel_quiet(windows: list[Sample], *, quiet_db: float, clip_seconds: float, sample_rate: int,
                  highpass_hz: float | None) -> tuple[list[Sample], int]:
    """Windows with the quiet ones relabelled :data:`BACKGROUND_CLASS`; and how many were.

    Each recording is decoded once (the model's rate and high-pass); a recording shorter than
    two windows is left alone (a short clip is cut around its call).
    """
    by_path: dict[str, list[int]] = {}
    for i, w in enumerate(windows):
        if w.label != BACKGROUND_CLASS and w.start_s is not None:
            by_path.setdefault(w.path, []).append(i)
    out, n = list(windows), 0
    for path, idx in by_path.items():
        try:
            audio = load(path, sample_rate, highpass_hz=highpass_hz)[0]
        except AudioError:
            continue  # the dataset reports unreadable files
        if len(audio) < 2 * clip_seconds * sample_rate:
            continue
        levels = frame_levels(audio, sample_rate)
        quiet = quiet_mask(levels, [float(windows[i].start_s or 0.0) for i in idx], clip_seconds, quiet_db)
        for i, q in zip(idx, quiet, strict=True):
            if q:
                out[i] = replace(windows[i], label=BACKGROUND_CLASS)
                n += 1
    return out, n


# ----------------------------------------------------------------------------- a folder of background recordings


def background_folder(folder: str | Path) -> tuple[list[Sample], list[RecordingProblem]]:
    """Every recording under ``folder`` (any depth) as a no-call recording, not yet split."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AudioError(f"data.background={folder}: not a folder")
    walk = walk_files(root)
    problems = [RecordingProblem(p, BACKGROUND_CLASS, why) for p, why in walk.skipped]
    samples = []
    for p in walk.files:
        if p.suffix.lower() in NON_AUDIO_SUFFIXES:
            continue
        try:
            probe(p)
        except AudioError as e:
            problems.append(RecordingProblem(str(p), BACKGROUND_CLASS, str(e).removeprefix(f"{p}: ")))
            continue
        samples.append(Sample(path=str(p), label=BACKGROUND_CLASS, group=str(p), sha256=sha256_file(p)))
    if not samples:
        raise AudioError(f"data.background={folder}: no readable recordings ({len(problems)} unreadable)")
    return samples, problems


# ----------------------------------------------------------------------------- generated noise


def noise_wave(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """One generated background: coloured noise with an optional resonance, gusts and clicks, float32 mono."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / sample_rate), 20.0)
    alpha = rng.uniform(-2.5, 1.0)  # power ~ f^alpha: -2 brown, -1 pink, 0 white, +1 blue
    gain = (f / 1000.0) ** (alpha / 2)
    if rng.random() < 0.5:  # a broad resonance (insect band, a stream, a road), 0.5-2 octaves wide
        centre, width = np.exp(rng.uniform(np.log(500), np.log(12000))), rng.uniform(0.5, 2.0)
        gain *= 1 + (10 ** (rng.uniform(0, 20) / 20) - 1) * np.exp(-0.5 * (np.log2(f / centre) / (width / 2)) ** 2)
    x = np.fft.irfft(spec * gain, n)
    t = np.arange(n) / sample_rate
    if rng.random() < 0.5:  # slow gusts
        x *= 1 + rng.uniform(0.2, 0.9) * np.sin(2 * np.pi * rng.uniform(0.1, 2.0) * t + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.3:  # sparse clicks (rain drops, handling), decaying in a few ms
        for at in rng.integers(0, n, int(rng.integers(1, 12))):
            m = min(n - at, int(0.01 * sample_rate))
            x[at: at + m] += rng.normal(0, 4 * np.std(x)) * np.exp(-np.arange(m) / (0.002 * sample_rate))
    if rng.random() < 0.3:  # mains hum and its harmonics (mostly under the high-pass)
        f0 = 50.0 if rng.random() < 0.5 else 60.0
        x += np.std(x) * rng.uniform(0.1, 1.0) * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3))
    level_db = rng.uniform(-75, -25)
    x *= 10 ** (level_db / 20) / (np.sqrt(np.mean(x * x)) + 1e-12)
    return np.clip(x, -1, 1).astype(np.float32)


def synthetic_counts(n_train: int, valid_fraction: float, test_fraction: float) -> dict[str, int]:
    """Generated recordings per split: ``n_train`` for training and the valid fraction's share of that for
    validation (at least 2, so the thresholds see empty windows). None for the test split: it stays the
    recordings (and background folder) the user gave; evaluation measures silence on newly generated noise."""
    train_fraction = max(1e-9, 1 - valid_fraction - test_fraction)
    valid = 0 if n_train == 0 or valid_fraction == 0 else max(2, int(round(n_train * valid_fraction / train_fraction)))
    return {"train": int(n_train), "valid": valid}


def noise_windows(n: int, seconds: float, sample_rate: int, *, seed: int = 100_000) -> np.ndarray:
    """``n`` generated no-call windows ``[n, T]`` from seeds no training file uses (evaluation's silence check)."""
    t = int(round(seconds * sample_rate))
    return np.stack([noise_wave(np.random.default_rng([seed, 9, i]), t, sample_rate) for i in range(n)]) if n else \
        np.zeros((0, t), np.float32)


def synthetic_noise(counts: dict[str, int], *, seconds: float, sample_rate: int, seed: int,
                    cache: Path | None = None) -> list[Sample]:
    """Generated no-call recordings (``counts[split]`` per split, ``seconds`` long), written once to the cache.

    The same arguments give the same files (and bytes), so a resumed run or a later evaluation finds
    them again; each file is its own group.
    """
    key = hashlib.sha256(repr((_GENERATOR_VERSION, sorted(counts.items()), round(float(seconds), 6), int(sample_rate),
                               int(seed))).encode()).hexdigest()[:12]
    folder = (cache or SYNTHETIC_CACHE) / key
    n = int(round(seconds * sample_rate))
    out = []
    for split, count in counts.items():
        for i in range(count):
            path = folder / f"{split}_{i:03d}.wav"
            if not path.is_file():
                rng = np.random.default_rng([int(seed), ("train", "valid", "test").index(split), i])
                with atomic_path(path) as tmp:
                    sf.write(tmp, noise_wave(rng, n, sample_rate), sample_rate, subtype="FLOAT", format="WAV")
            out.append(Sample(path=str(path), label=BACKGROUND_CLASS, split=split, group=str(path),
                              sha256=sha256_file(path)))
    return out
