"""The embedded demo call set: synthetic "bird calls", no download needed.

SYNTHETIC: generated tones, not recordings of birds. It exists so the spectrogram mode
can be demonstrated and tested end to end in seconds; accuracy on it says nothing about
accuracy on real calls.

Each species has its own call shape (rising chirp, falling chirp, trill, two-note
whistle, warble, buzzy sweep...) at its own pitch; calls repeat at random times, with
random pitch and tempo jitter, over pink-ish background noise and an occasional
low-frequency rumble, in mono or stereo (some recordings stereo, to exercise the
channel handling). Written as ``root/<species>/<i>.wav`` (16-bit PCM), the layout
:func:`birdvision.data.audio.io.discover_recordings` reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

# A call generator returns one call given (rng, sample_rate, pitch factor).
CallFn = Callable[[np.random.Generator, int, float], np.ndarray]


def _tone(freq_hz: np.ndarray, sample_rate: int) -> np.ndarray:
    """A sine whose instantaneous frequency follows ``freq_hz`` (phase = 2*pi * cumulative sum of f / sr)."""
    return np.sin(2 * np.pi * np.cumsum(freq_hz) / sample_rate)


def _envelope(n: int) -> np.ndarray:
    return np.hanning(n) if n > 2 else np.ones(n)


def _chirp(f0: float, f1: float, seconds: float) -> CallFn:
    def make(rng: np.random.Generator, sr: int, k: float) -> np.ndarray:
        n = int(seconds * rng.uniform(0.85, 1.15) * sr)
        return _tone(np.linspace(f0 * k, f1 * k, n), sr) * _envelope(n)

    return make


def _trill(f: float, notes: int, note_s: float, gap_s: float) -> CallFn:
    def make(rng: np.random.Generator, sr: int, k: float) -> np.ndarray:
        parts = []
        for _ in range(notes + int(rng.integers(-1, 2))):
            n = int(note_s * sr)
            note = _tone(np.full(n, f * k * rng.uniform(0.98, 1.02)), sr) * _envelope(n)
            parts += [note, np.zeros(int(gap_s * sr))]
        return np.concatenate(parts)

    return make


def _two_note(f_a: float, f_b: float, note_s: float) -> CallFn:
    def make(rng: np.random.Generator, sr: int, k: float) -> np.ndarray:
        n = int(note_s * sr)
        a = _tone(np.full(n, f_a * k), sr) * _envelope(n)
        b = _tone(np.full(n, f_b * k), sr) * _envelope(n)
        return np.concatenate([a, np.zeros(n // 3), b])

    return make


def _warble(f: float, depth_hz: float, rate_hz: float, seconds: float) -> CallFn:
    def make(rng: np.random.Generator, sr: int, k: float) -> np.ndarray:
        n = int(seconds * sr)
        t = np.arange(n) / sr
        return _tone(f * k + depth_hz * np.sin(2 * np.pi * rate_hz * t), sr) * _envelope(n)

    return make


SPECIES: list[tuple[str, CallFn]] = [
    ("demo_rising_chirper", _chirp(2500, 6000, 0.35)),
    ("demo_falling_whistler", _chirp(7000, 3000, 0.5)),
    ("demo_trilling_warbler", _trill(4500, 8, 0.04, 0.03)),
    ("demo_two_note_tit", _two_note(5200, 3900, 0.18)),
    ("demo_wobbling_thrush", _warble(3200, 600, 25, 0.6)),
    ("demo_buzzy_sparrow", _warble(8000, 1500, 120, 0.4)),
    ("demo_low_hooter", _chirp(900, 700, 0.7)),
    ("demo_high_ticker", _trill(9500, 5, 0.015, 0.06)),
]


def _pink_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-variance pink-ish noise: field recordings have more energy at low frequencies."""
    spec = np.fft.rfft(rng.standard_normal(n))
    # Pink noise has power ~ 1/f, i.e. amplitude ~ 1/sqrt(f); flat below 50 Hz to avoid a DC blow-up.
    spec /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / sr), 50.0) / 50.0)
    noise = np.fft.irfft(spec, n)
    return noise / (np.std(noise) + 1e-12)


def _background(rng: np.random.Generator, bank: np.ndarray, n: int, sr: int) -> np.ndarray:
    """A random stretch of a shared noise bank plus a low rumble (cheaper than fresh noise per file)."""
    start = int(rng.integers(0, bank.size - n))
    t = np.arange(n) / sr
    return bank[start : start + n] + np.sin(2 * np.pi * rng.uniform(40, 120) * t) * rng.uniform(0, 0.5)


def make_demo_calls(
    root: str | Path,
    *,
    n_species: int = 4,
    recordings_per_species: int = 6,
    seconds: float = 8.0,
    sample_rate: int = 32000,
    seed: int = 0,
) -> Path:
    """Write synthetic recordings as ``root/<species>/<i>.wav``; return ``root``. Same seed, same bytes."""
    if not 1 <= n_species <= len(SPECIES):
        raise ValueError(f"n_species must be in 1..{len(SPECIES)}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    bank = _pink_noise(rng, 4 * n, sample_rate)
    for name, call in SPECIES[:n_species]:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(recordings_per_species):
            signal = np.zeros(n)
            pitch = rng.uniform(0.93, 1.07)  # this individual's voice
            t = rng.uniform(0.0, 0.8)
            while t < seconds - 0.2:
                c = call(rng, sample_rate, pitch * rng.uniform(0.98, 1.02)) * rng.uniform(0.3, 1.0)
                s = int(t * sample_rate)
                c = c[: n - s]
                signal[s : s + c.size] += c
                t += c.size / sample_rate + rng.uniform(0.3, 1.5)
            snr_scale = rng.uniform(0.03, 0.15)
            stereo = i % 3 == 2
            if stereo:
                left = signal + snr_scale * _background(rng, bank, n, sample_rate)
                right = 0.7 * signal + snr_scale * _background(rng, bank, n, sample_rate)
                audio = np.stack([left, right], axis=1)
            else:
                audio = signal + snr_scale * _background(rng, bank, n, sample_rate)
            audio *= 0.5 / max(np.max(np.abs(audio)), 1e-9)
            sf.write(folder / f"{i}.wav", audio.astype(np.float32), sample_rate, subtype="PCM_16")
    return root
