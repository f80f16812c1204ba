"""Audio ingest: decoding by content, resampling, channels, filtering, streaming, bad files, discovery."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdvision.data.audio import io as A
from birdvision.data.audio.io import AudioError

SR = 32000


def tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def write(path: Path, audio: np.ndarray, sr: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, **kw)
    return path


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[np.argmax(spec)])


def test_load_resamples_and_mixes_or_splits(tmp_path):
    left, right = tone(1000, 2.0, 44100), tone(3000, 2.0, 44100, amp=0.25)
    p = write(tmp_path / "s.wav", np.stack([left, right], axis=1), 44100)
    mono = A.load(p, SR)
    assert mono.dtype == np.float32 and mono.shape == (1, 64000)
    split = A.load(p, SR, stereo="split")
    assert split.shape == (2, 64000)
    assert peak_hz(split[0], SR) == pytest.approx(1000, abs=2)
    assert peak_hz(split[1], SR) == pytest.approx(3000, abs=2)
    np.testing.assert_allclose(mono[0], split.mean(axis=0), atol=1e-6)
    info = A.info(p)
    assert (info.sample_rate, info.frames, info.channels) == (44100, 88200, 2)
    assert info.duration_s == pytest.approx(2.0)
    with pytest.raises(ValueError, match="stereo"):
        A.load(p, SR, stereo="left")


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_decodes_by_content_not_extension(tmp_path, fmt):
    x = tone(2000, 1.0, 48000)
    p = tmp_path / "misnamed.mp3" if fmt != "MP3" else tmp_path / "really_mp3.wav"
    sf.write(p, x, 48000, format=fmt)
    y = A.load(p, SR)[0]
    assert abs(y.size - SR) < 2000  # lossy codecs add encoder delay / padding
    assert peak_hz(y, SR) == pytest.approx(2000, abs=5)


def test_window_read_equals_slice_of_full_load(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((44100 * 6, 2)).astype(np.float32) * 0.1
    p = write(tmp_path / "n.wav", x, 44100)
    for hp in (None, 1400.0):
        full = A.load(p, SR, stereo="split", highpass_hz=hp)
        for start in (0.0, 1.37, 4.5):
            w = A.load(p, SR, start_s=start, end_s=start + 1.0, stereo="split", highpass_hz=hp)
            o = int(round(start * SR))
            ref = full[:, o : o + SR]
            assert w.shape == ref.shape
            np.testing.assert_allclose(w, ref, atol=1e-5)
    tail = A.load(p, SR, start_s=5.5, end_s=7.0)
    assert tail.shape == (1, SR // 2)  # past the end: shorter, never padded here


def test_stream_blocks_match_load_and_stay_small(tmp_path):
    x = np.random.default_rng(1).standard_normal(22050 * 7).astype(np.float32) * 0.1
    p = write(tmp_path / "long.wav", x, 22050)
    full = A.load(p, SR, highpass_hz=1000)[0]
    blocks = list(A.stream_blocks(p, SR, block_seconds=2.0, overlap_seconds=0.5, highpass_hz=1000))
    assert [b.start_s for b in blocks] == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert all(b.samples.size <= 2 * SR for b in blocks)
    for b in blocks:
        o = int(round(b.start_s * SR))
        np.testing.assert_allclose(b.samples, full[o : o + b.samples.size], atol=1e-5)
    assert blocks[-1].start_s * SR + blocks[-1].samples.size == full.size
    with pytest.raises(ValueError):
        next(A.stream_blocks(p, SR, block_seconds=1.0, overlap_seconds=1.0))


def test_highpass_removes_rumble_keeps_song():
    x = tone(200, 1.0, SR) + tone(5000, 1.0, SR)
    y = A.highpass(x, SR, 1400)
    low = np.abs(np.fft.rfft(y))[200] / np.abs(np.fft.rfft(x))[200]
    high = np.abs(np.fft.rfft(y))[5000] / np.abs(np.fft.rfft(x))[5000]
    assert 20 * np.log10(low) < -40
    assert abs(20 * np.log10(high)) < 0.5
    with pytest.raises(ValueError):
        A.highpass(x, SR, 20000)


def test_nan_and_inf_become_zero_with_warning(tmp_path):
    x = tone(1000, 0.5, SR)
    x[100], x[200] = np.nan, np.inf
    p = write(tmp_path / "nan.wav", x, SR, subtype="FLOAT")
    with pytest.warns(UserWarning, match="2 NaN/inf"):
        y = A.load(p, SR)
    assert np.isfinite(y).all() and y[0, 100] == 0


def test_bad_files_raise_audio_error_naming_file_and_reason(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros((0, 2), np.float32), SR)
    mp3 = tmp_path / "ok.mp3"
    sf.write(mp3, tone(1000, 3.0, SR), SR, format="MP3")
    stub = tmp_path / "stub.mp3"
    stub.write_bytes(mp3.read_bytes()[:200])
    cases = {
        empty: "empty file",
        garbage: "not a recognised audio format",
        zero: "zero frames",
        stub: "not a recognised audio format",
        tmp_path / "missing.wav": "not found",
    }
    for path, reason in cases.items():
        for fn in (A.info, A.probe, A.load):
            with pytest.raises(AudioError, match=reason) as e:
                fn(path)
            assert path.name in str(e.value)
    assert issubclass(AudioError, ValueError)


def test_truncated_mp3_decodes_what_is_there_and_says_so(tmp_path, caplog):
    mp3 = tmp_path / "ok.mp3"
    sf.write(mp3, tone(1000, 3.0, SR), SR, format="MP3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        meta = A.probe(cut)
    assert 0.3 * 3 * SR < meta.frames < 0.7 * 3 * SR
    assert any("truncated" in n for n in meta.notes)
    assert "truncated" in caplog.text
    assert A.load(cut, SR).shape[1] == meta.frames  # same rate: exact frames
    assert not A.probe(mp3).notes


def test_discover_recordings_lists_problems(tmp_path):
    root = tmp_path / "calls"
    write(root / "robin" / "a.wav", tone(3000, 1.0, SR), SR)
    write(root / "robin" / "sub" / "b.flac", tone(3000, 1.0, SR), SR)
    write(root / "wren" / "x.wav", tone(4000, 0.5, SR), SR)
    sf.write(root / "wren" / "wav_named.mp3", tone(5000, 1.0, SR), SR, format="WAV")
    (root / "wren" / "empty.wav").write_bytes(b"")
    (root / "wren" / "notes.txt").write_text("field notes")
    (root / "wren" / ".hidden.wav").write_bytes(b"x")
    (root / "index.csv").write_text("path,label\n")
    samples, problems = A.discover_recordings(root)
    assert sorted((Path(s.path).name, s.label) for s in samples) == [
        ("a.wav", "robin"),
        ("b.flac", "robin"),
        ("wav_named.mp3", "wren"),
        ("x.wav", "wren"),
    ]
    assert all(s.group == s.path and len(s.sha256) == 64 and s.split == "" for s in samples)
    reasons = {Path(p.path).name: p.reason for p in problems}
    assert set(reasons) == {"empty.wav", "notes.txt"}
    assert "empty file" in reasons["empty.wav"] and "not an audio file" in reasons["notes.txt"]
    with pytest.raises(AudioError, match="not found"):
        A.discover_recordings(tmp_path / "nope")


@pytest.mark.realdata
def test_odd_real_audio_files(realdata):
    odd = realdata / "odd" / "audio"
    with pytest.raises(AudioError, match="zero frames"):
        A.load(odd / "empty_2c.wav", SR)
    tiny = A.load(odd / "stereo.wav", SR, stereo="split")  # 5 frames at 44.1 kHz
    assert tiny.shape[0] == 2 and 1 <= tiny.shape[1] <= 5
    for name in ("veryshort.wav", "short_no_metadata.wav"):
        assert A.load(odd / name, SR).shape[1] == pytest.approx(6266 * SR / 44100, abs=1)
    wav_as_mp3 = A.info(odd / "wav_content_with_mp3_extension__blood_pheasant_recording_1.mp3")
    assert wav_as_mp3.format == "WAV" and wav_as_mp3.exact
    silence = A.probe(odd / "silence_10s.mp3")
    assert silence.duration_s == pytest.approx(10.0, abs=0.1)
    blocks = list(A.stream_blocks(odd / "silence_10s.mp3", SR, block_seconds=4.0))
    assert len(blocks) == 3 and A.dbfs(blocks[0].samples) < -60


@pytest.mark.realdata
def test_real_recordings_all_decode(realdata):
    samples, problems = A.discover_recordings(realdata / "audio", hash_files=False)
    assert len(samples) >= 70
    assert not [p for p in problems if not p.reason.startswith("kept with warning")]
    assert len({s.label for s in samples}) == 30
    pheasant = [s for s in samples if s.path.endswith("blood_pheasant_recording_1.mp3")]
    assert pheasant and A.info(pheasant[0].path).format == "WAV"
