"""Waveform augmentations: each step does what it says, off means off, config is strict."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from birdvision.config import AudioAugmentConfig, FitConfig, load_config
from birdvision.data.audio.augment import (
    WaveAugment,
    augment_config,
    describe,
    mix_at_snr,
    spec_augment_kwargs,
    time_stretch,
)
from birdvision.data.audio.mel import SpecAugment

SR = 32000
N = SR  # one-second windows keep the tests fast
OFF = {"shift_p": 0.0, "stretch_p": 0.0, "pitch_p": 0.0, "gain_p": 0.0, "mix_p": 0.0, "noise_p": 0.0}


def tone(freq: float, n: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / SR)[np.argmax(spec)])


def run(cfg: dict, segment: np.ndarray, offset: int, seed: int = 0, **kw) -> np.ndarray:
    return WaveAugment(AudioAugmentConfig(**(OFF | cfg)))(
        segment, N, offset, np.random.default_rng(seed), sample_rate=SR, **kw
    )


def test_all_off_returns_the_window_exactly():
    seg = np.random.default_rng(0).standard_normal(3 * N).astype(np.float32)
    np.testing.assert_array_equal(run({}, seg, N), seg[N : 2 * N])
    disabled = WaveAugment(AudioAugmentConfig(enabled=False))
    out = disabled(seg, N, N, np.random.default_rng(0), sample_rate=SR)
    np.testing.assert_array_equal(out, seg[N : 2 * N])
    assert disabled.context_seconds(5.0) == 0.0 and describe(disabled.config) == []


def test_shift_takes_real_context():
    seg = np.arange(3 * N, dtype=np.float32)
    out = run({"shift_p": 1.0, "shift_max_seconds": 0.5}, seg, N, seed=4)
    delta = out[0] - N
    assert delta != 0 and abs(delta) <= 0.5 * SR
    np.testing.assert_array_equal(out, seg[int(out[0]) : int(out[0]) + N])  # contiguous: no roll, no seam


def test_noise_amplitude_and_gain():
    quiet = np.zeros(N, np.float32)
    out = run({"noise_p": 1.0, "noise_amplitude": (0.015, 0.015)}, quiet, 0)
    assert out.std() == pytest.approx(0.015, rel=0.05)
    x = tone(1000, N)
    out = run({"gain_p": 1.0, "gain_db": (6.0, 6.0)}, x, 0)
    assert 20 * np.log10(out.std() / x.std()) == pytest.approx(6.0, abs=0.01)


def test_pitch_shift_moves_frequency_by_semitones():
    x = tone(2000, 3 * N)
    ups = [peak_hz(run({"pitch_p": 1.0, "pitch_semitones": 2.0}, x, N, seed=s)) for s in range(6)]
    ratios = np.array(ups) / 2000
    assert np.all(ratios <= 2 ** (2 / 12) + 0.01) and np.all(ratios >= 2 ** (-2 / 12) - 0.01)
    assert np.ptp(ratios) > 0.02  # it actually varies


def test_time_stretch_keeps_pitch_changes_length():
    x = tone(3017.3, N)  # off a bin centre on purpose
    for rate in (0.8, 1.25):
        y = time_stretch(x, rate)
        assert y.size == round(N / rate)
        assert peak_hz(y) == pytest.approx(3017.3, abs=20)
        assert y[2000:-2000].std() == pytest.approx(x.std(), rel=0.15)  # phase vocoders lose a little
    out = run({"stretch_p": 1.0, "stretch_rate": (1.1, 1.1)}, tone(3000, 3 * N), N)
    assert out.size == N and peak_hz(out) == pytest.approx(3000, abs=20)


def test_mix_reaches_requested_snr():
    rng = np.random.default_rng(0)
    s, o = tone(1000, N), rng.standard_normal(N)
    mixed = mix_at_snr(s, o, 10.0)
    assert 10 * np.log10(np.mean(s**2) / np.mean((mixed - s) ** 2)) == pytest.approx(10.0, abs=1e-6)
    np.testing.assert_array_equal(mix_at_snr(s, np.zeros(N), 10.0), s)
    noise = lambda n, r: rng.standard_normal(n)  # noqa: E731
    out = run({"mix_p": 1.0, "mix_snr_db": (20.0, 20.0)}, s, 0, background=noise)
    assert 10 * np.log10(np.mean(s**2) / np.mean((out - s) ** 2)) == pytest.approx(20.0, abs=0.01)


def test_background_files(tmp_path):
    import soundfile as sf

    p = tmp_path / "noise.wav"
    sf.write(p, np.random.default_rng(0).standard_normal(N // 2).astype(np.float32) * 0.1, SR)
    aug = WaveAugment(AudioAugmentConfig(**(OFF | {"mix_p": 1.0, "background_paths": [str(p)]})))
    out = aug(tone(1000, N), N, 0, np.random.default_rng(0), sample_rate=SR)
    assert not np.allclose(out, tone(1000, N))
    clone = pickle.loads(pickle.dumps(aug))
    assert clone.config == aug.config and clone._backgrounds == {}


def test_same_seed_same_output_and_context_budget():
    seg = np.random.default_rng(0).standard_normal(4 * N).astype(np.float32)
    aug = WaveAugment(AudioAugmentConfig(stretch_p=0.5))
    a = aug(seg, N, 2 * N, np.random.default_rng(7), sample_rate=SR)
    b = aug(seg, N, 2 * N, np.random.default_rng(7), sample_rate=SR)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (N,)
    ctx = aug.context_seconds(5.0)
    assert ctx >= 1.0 + 5.0 * (2 ** (2 / 12) * 1.1 - 1) / 2


def test_config_is_strict_and_round_trips():
    with pytest.raises(ValueError, match="unknown audio augment key"):
        augment_config({"noise_prob": 0.5})
    with pytest.raises(ValueError, match="noise_p"):
        augment_config({"noise_p": 1.5})
    with pytest.raises(ValueError, match="noise_p"):
        WaveAugment(AudioAugmentConfig(noise_p=1.5))  # a config built by hand is checked too
    with pytest.raises(ValueError, match="range"):
        augment_config({"gain_db": [6, -6]})
    with pytest.raises(ValueError, match="stretch_rate"):
        augment_config({"stretch_rate": [0.0, 1.1]})
    cfg = augment_config({"noise_amplitude": [0.0, 0.02], "pitch_p": 0.0})
    assert cfg.noise_amplitude == [0.0, 0.02]
    assert augment_config(cfg) == cfg
    assert "pitch" not in " ".join(describe(cfg)) and "noise(p=0.5)" in describe(cfg)
    spec = SpecAugment(**spec_augment_kwargs(cfg))
    assert spec.p == 0.5 and spec.time_mask_frames == 24
    assert spec_augment_kwargs(AudioAugmentConfig(enabled=False))["p"] == 0.0


def test_the_fit_schema_section_is_the_augment_config():
    # one definition: what fit loads (audio.augment) is exactly what the augmentations run with
    cfg = load_config(FitConfig, ["recipe=effnet_lite0_calls", "audio.augment.noise_p=0.25"],
                      preset_key="recipe", preset_dir="recipes")
    from omegaconf import OmegaConf

    aug = augment_config(OmegaConf.to_container(cfg.audio.augment, resolve=True))
    assert isinstance(aug, AudioAugmentConfig) and aug.noise_p == 0.25
    assert aug == augment_config(AudioAugmentConfig(noise_p=0.25))
