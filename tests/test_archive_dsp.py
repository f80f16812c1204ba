"""The numpy resampler and high-pass give scipy.signal's samples (the arithmetic training always used)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import signal as ss

from birdvision.data.audio import dsp
from birdvision.data.audio.io import highpass, resample

RATES = [(44100, 32000), (22050, 32000), (48000, 32000), (9000, 32000), (32000, 16000), (8000, 32000), (11025, 22050)]


@pytest.mark.parametrize(("sr_in", "sr_out"), RATES)
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 44100 + 13])
def test_resample_matches_scipy(sr_in, sr_out, n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    g = np.gcd(sr_in, sr_out)
    want = ss.resample_poly(x, sr_out // g, sr_in // g)
    got = dsp.resample_poly(x, sr_out // g, sr_in // g)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_resample_2d_float64_and_identity():
    x = np.random.default_rng(0).standard_normal((2, 5000))
    np.testing.assert_allclose(dsp.resample_poly(x, 2, 3), ss.resample_poly(x, 2, 3, axis=-1), atol=1e-10)
    y = np.arange(5, dtype=np.float32)
    assert np.array_equal(dsp.resample_poly(y, 3, 3), y)
    assert resample(y, 32000, 32000) is not None


@pytest.mark.parametrize(("cutoff", "sr"), [(1400, 32000), (500, 22050), (7000, 16000), (20, 48000)])
@pytest.mark.parametrize("n", [29, 100, 64 * 37, 100_003])
def test_highpass_matches_scipy(cutoff, sr, n):
    sos = ss.butter(4, cutoff, btype="highpass", fs=sr, output="sos")
    mine = dsp.butter_highpass_sos(4, float(cutoff), float(sr))
    _, h1 = ss.sosfreqz(sos, 256, fs=sr)
    _, h2 = ss.sosfreqz(mine, 256, fs=sr)
    np.testing.assert_allclose(h2, h1, atol=1e-9)  # the same filter
    x = (np.random.default_rng(n).standard_normal(n) + 0.3).astype(np.float32)  # with a DC offset
    want = ss.sosfiltfilt(sos, x)
    got = highpass(x, sr, cutoff)
    assert got.dtype == np.float32 and got.shape == x.shape
    # float32 chunks: ~5e-7 at bird-song cut-offs; a 20 Hz pole sits so near z = 1 that rounding adds up to ~3e-5
    np.testing.assert_allclose(got, want, atol=5e-5 if cutoff < 100 else 2e-6)


def test_highpass_rejects_bad_cutoff_and_keeps_short_signals():
    with pytest.raises(ValueError, match="highpass_hz"):
        highpass(np.zeros(100, np.float32), 32000, 20000)
    short = np.ones(10, np.float32)
    assert np.array_equal(highpass(short, 32000, 1400), short)


def test_audio_decoding_does_not_import_scipy():
    code = "import sys, birdvision.data.audio.io; print('scipy' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"
