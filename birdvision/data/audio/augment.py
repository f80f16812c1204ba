"""Training-only waveform augmentations for bird-call windows, as named steps switched by config.

Applied by :class:`birdvision.data.audio.windows.AudioWindowDataset` to training windows only
(evaluation datasets get ``augment=None``). The spectrogram masks live with the
frontend (:class:`birdvision.data.audio.mel.SpecAugment`) because they act on its output;
their settings sit in the same config section (``audio.augment``, one dataclass:
:class:`birdvision.config.AudioAugmentConfig`) so one section controls all audio augmentation.
No flips or rotations: a call played backwards or upside down in frequency is not a call of the
same bird.

Steps, in order (each with its own probability; ``p=0`` switches it off):

``shift``   move the window by up to ``shift_max_seconds`` within the recording (real
            context, not a circular roll, so no discontinuity is invented);
``stretch`` change tempo by a rate in ``stretch_rate`` keeping pitch (phase vocoder in
            numpy; ~20 ms per 5 s window, so off by default);
``pitch``   cheap pitch shift by up to ``pitch_semitones``: resampling, which also changes
            tempo by the same factor (+-12 % for +-2 semitones) like speed perturbation
            in speech; bird tempo varies naturally more than that (~2 ms per window);
``gain``    scale by ``gain_db`` (matters little after the frontend's ref=max, but keeps
            the noise step's absolute level meaningful);
``mix``     add another recording (or a file from ``background_paths``) at an SNR from
            ``mix_snr_db``; the label stays that of the main window, so the SNR range keeps
            the main call dominant;
``noise``   add white Gaussian noise with a standard deviation from ``noise_amplitude``
            (absolute, full scale = 1; 0.015 was the best value of the seed project).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from fractions import Fraction
from typing import Any

import numpy as np

from birdvision.config import AudioAugmentConfig
from birdvision.data.audio.dsp import resample_poly

Background = Callable[[int, np.random.Generator], "np.ndarray | None"]


#: the [low, high] range settings
RANGES = ("stretch_rate", "gain_db", "mix_snr_db", "noise_amplitude")


def augment_config(config: AudioAugmentConfig | dict[str, Any] | None = None) -> AudioAugmentConfig:
    """The config section (``audio.augment``, :class:`birdvision.config.AudioAugmentConfig`) checked for direct
    use: unknown keys are an error (a typo must not switch a step off), every value within its schema bounds,
    every range ``[low, high]`` with ``low <= high``; ``None`` gives the defaults."""
    if isinstance(config, AudioAugmentConfig):
        config = asdict(config)
    d = dict(config or {})
    known = {f.name for f in fields(AudioAugmentConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown audio augment key(s) {unknown}; valid: {sorted(known)}")
    cfg = AudioAugmentConfig(**d)
    for f in fields(cfg):
        value, bounds = getattr(cfg, f.name), f.metadata.get("bounds")
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            why = bounds.problem(v) if bounds is not None else None
            if why:
                raise ValueError(f"augment.{f.name}={value!r}: {why}")
    for name in RANGES:
        v = [float(a) for a in getattr(cfg, name)]
        if len(v) != 2 or v[0] > v[1]:
            raise ValueError(f"augment.{name} must be a range [low, high], got {v}")
        setattr(cfg, name, v)
    cfg.background_paths = [str(p) for p in cfg.background_paths]
    return cfg


def spec_augment_kwargs(config: AudioAugmentConfig) -> dict[str, Any]:
    """Keyword arguments for :class:`birdvision.data.audio.mel.SpecAugment` (p=0 when disabled)."""
    return {
        "p": config.spec_p if config.enabled else 0.0,
        "time_masks": config.time_masks,
        "time_mask_frames": config.time_mask_frames,
        "freq_masks": config.freq_masks,
        "freq_mask_bins": config.freq_mask_bins,
    }


def time_stretch(x: np.ndarray, rate: float, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Phase-vocoder time stretch of a 1-D signal: ``rate > 1`` is faster (shorter), pitch unchanged.

    Analysis frames are read at fractional positions ``t = 0, rate, 2*rate, ...`` with
    magnitudes interpolated between neighbours; the phase of each bin advances by its
    measured instantaneous frequency (expected advance ``2*pi*k*hop/n_fft`` plus the
    wrapped deviation), so partials stay coherent; synthesis overlap-adds at ``hop``.
    """
    if rate == 1.0 or x.size < n_fft:
        return x.astype(np.float32, copy=True)
    win = np.hanning(n_fft + 1)[:-1]
    pad = n_fft // 2
    # Zero padding, not reflection: frame 0 sets every bin's starting phase, and a reflected
    # (time-reversed) edge gives neighbouring bins of one partial inconsistent phases, which
    # then beat against each other for the whole output ("phasiness", -10 dB on a pure tone).
    xp = np.pad(x.astype(np.float64), (pad, pad + n_fft))
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop] * win
    spec = np.fft.rfft(frames, axis=1)  # [frames, bins]
    steps = np.arange(0, spec.shape[0] - 1, rate)
    expected = 2 * np.pi * hop * np.arange(spec.shape[1]) / n_fft
    i0 = steps.astype(int)
    frac = (steps - i0)[:, None]
    mag = (1 - frac) * np.abs(spec[i0]) + frac * np.abs(spec[i0 + 1])
    dphase = np.angle(spec[i0 + 1]) - np.angle(spec[i0]) - expected
    dphase -= 2 * np.pi * np.round(dphase / (2 * np.pi))
    phase = np.angle(spec[0]) + np.concatenate(
        [np.zeros((1, spec.shape[1])), np.cumsum(expected + dphase, axis=0)[:-1]]
    )
    out_frames = np.fft.irfft(mag * np.exp(1j * phase), n=n_fft, axis=1) * win
    n_out = hop * (len(steps) - 1) + n_fft
    y = np.zeros(n_out)
    norm = np.zeros(n_out)
    for k, fr in enumerate(out_frames):  # overlap-add; a loop over ~600 frames is cheap next to the FFTs
        y[k * hop : k * hop + n_fft] += fr
        norm[k * hop : k * hop + n_fft] += win**2
    y = y / np.maximum(norm, 1e-8)
    return y[pad : pad + int(round(x.size / rate))].astype(np.float32)


def _resample_to(x: np.ndarray, n_out: int) -> np.ndarray:
    """Resample ``x`` to exactly ``n_out`` samples with a small rational ratio (polyphase, anti-aliased)."""
    if x.size == n_out:
        return x
    r = Fraction(n_out, x.size).limit_denominator(64)
    y = resample_poly(x, r.numerator, r.denominator)
    return _fit(y, n_out)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    if x.size >= n:
        return x[:n]
    return np.pad(x, (0, n - x.size))


class WaveAugment:
    """Applies :class:`AudioAugmentConfig`'s waveform steps to one window; picklable, stateless.

    Called with a segment that holds the window plus context on both sides (so shifts and
    speed changes use real audio); :meth:`context_seconds` says how much is needed.
    """

    def __init__(self, config: AudioAugmentConfig | dict[str, Any] | None = None) -> None:
        self.config = augment_config(config)
        self._backgrounds: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "_backgrounds": {}}  # noise files are re-read in each worker

    def context_seconds(self, clip_seconds: float) -> float:
        """Audio needed on each side of a window for the largest shift and slowest/fastest speed."""
        c = self.config
        if not c.enabled:
            return 0.0
        speed = 1.0
        if c.pitch_p > 0:
            speed *= 2 ** (c.pitch_semitones / 12)
        if c.stretch_p > 0:
            speed *= c.stretch_rate[1]
        return (c.shift_max_seconds if c.shift_p > 0 else 0.0) + clip_seconds * (speed - 1) / 2 + 0.01

    def _background(self, n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray | None:
        from birdvision.data.audio.io import AudioError, load  # local: audio imports nothing from here

        path = self.config.background_paths[rng.integers(len(self.config.background_paths))]
        if path not in self._backgrounds:
            try:
                self._backgrounds[path] = load(path, sample_rate)[0]
            except AudioError:
                self._backgrounds[path] = np.zeros(0, np.float32)
        bg = self._backgrounds[path]
        if bg.size == 0:
            return None
        if bg.size <= n:
            return np.resize(bg, n)  # tile a short noise file
        start = int(rng.integers(0, bg.size - n))
        return bg[start : start + n]

    def __call__(
        self,
        segment: np.ndarray,
        n: int,
        offset: int,
        rng: np.random.Generator,
        *,
        sample_rate: int,
        background: Background | None = None,
    ) -> np.ndarray:
        """Return ``n`` augmented samples; the un-augmented window is ``segment[offset:offset + n]``."""
        c = self.config
        if not c.enabled:
            return _fit(segment[offset : offset + n], n).astype(np.float32)
        centre = offset + n / 2
        if c.shift_p and rng.random() < c.shift_p:
            centre += rng.uniform(-c.shift_max_seconds, c.shift_max_seconds) * sample_rate
        rate = rng.uniform(*c.stretch_rate) if c.stretch_p and rng.random() < c.stretch_p else 1.0
        speed = (
            2 ** (rng.uniform(-c.pitch_semitones, c.pitch_semitones) / 12)
            if (c.pitch_p and rng.random() < c.pitch_p)
            else 1.0
        )
        # Source span: stretch by `rate` keeps pitch, then resampling by `speed` raises pitch and tempo;
        # to end with n samples the window must cover n * rate * speed source samples.
        n_src = max(1, int(round(n * rate * speed)))
        start = int(round(centre - n_src / 2))
        start = min(max(start, 0), max(0, segment.size - n_src))
        y = _fit(segment[start : start + n_src].astype(np.float64), n_src)
        if rate != 1.0:
            y = time_stretch(y, rate)
        y = _resample_to(y, n) if y.size != n else y
        if c.gain_p and rng.random() < c.gain_p:
            y = y * 10 ** (rng.uniform(*c.gain_db) / 20)
        if c.mix_p and rng.random() < c.mix_p:
            bg = None
            if c.background_paths:
                bg = self._background(n, rng, sample_rate)
            elif background is not None:
                bg = background(n, rng)
            if bg is not None:
                y = mix_at_snr(y, bg, rng.uniform(*c.mix_snr_db))
        if c.noise_p and rng.random() < c.noise_p:
            y = y + rng.normal(0.0, rng.uniform(*c.noise_amplitude), size=n)
        return np.asarray(y, dtype=np.float32)


def mix_at_snr(signal: np.ndarray, other: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal + g * other`` with g chosen so that 10 log10(P_signal / P_scaled_other) = ``snr_db``.

    P = mean square; g = sqrt(P_s / (P_o * 10^(snr/10))). Silent inputs are returned as is.
    """
    other = _fit(np.asarray(other, dtype=np.float64), signal.size)
    ps, po = float(np.mean(np.square(signal))), float(np.mean(np.square(other)))
    if ps <= 0 or po <= 0:
        return signal
    return signal + other * math.sqrt(ps / (po * 10 ** (snr_db / 10)))


def describe(config: AudioAugmentConfig) -> Sequence[str]:
    """The active steps in order, for logging what training actually does."""
    if not config.enabled:
        return []
    steps = [
        ("shift", config.shift_p),
        ("stretch", config.stretch_p),
        ("pitch", config.pitch_p),
        ("gain", config.gain_p),
        ("mix", config.mix_p),
        ("noise", config.noise_p),
        ("spec_masks", config.spec_p),
    ]
    return [f"{name}(p={p:g})" for name, p in steps if p > 0]
