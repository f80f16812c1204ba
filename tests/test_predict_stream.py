"""``input=-``: raw PCM from standard input, rows written as windows complete, the same rows as a file."""

from __future__ import annotations

import csv
import io
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from birdvision.predict import main
from birdvision.prediction.grid import StreamNotes, WindowGrid, stream_windows
from birdvision.prediction.options import pcm_format
from birdvision.prediction.stream import PcmNotes, PcmSpec, read_pcm, stream_windows_pcm

ROOT = Path(__file__).resolve().parents[1]
SR = 16000  # the test model's rate
SRC = 48000  # the stream's rate (resampled 3:1, as from arecord -r 48000)
CLASSES = ["alpha", "beta", "gamma"]
# Standard output to a pipe is block-buffered unless PYTHONUNBUFFERED is set: the flushing must be predict's own.
BUFFERED_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def rows_of(path_or_text: Path | str) -> list[dict[str, str]]:
    text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    return list(csv.DictReader(io.StringIO(text)))


def song(seconds: float, sr: int = SRC, seed: int = 0) -> np.ndarray:
    """Sweeps that change every half second plus noise: windows get different answers."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f = 600 + 2500 * ((t * 2).astype(int) % 5) / 4
    return (0.4 * np.sin(2 * np.pi * f * t * (1 + 0.2 * (t % 0.5))) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def s16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1, 1) * 32767).astype("<i2")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny call model (16 kHz, 1 s windows, 300 Hz high-pass) as a checkpoint and as an ONNX export."""
    import torch

    from birdvision.data.audio.mel import MelFrontend
    from birdvision.data.manifest import Sample, write_manifest
    from birdvision.export import main as export_main
    from birdvision.training.module import BirdClassifier

    tmp = tmp_path_factory.mktemp("stream_model")
    mel = MelFrontend(sample_rate=SR, n_fft=512, hop_length=256, n_mels=32, f_min_hz=50, f_max_hz=8000).spec()
    spec = {"kind": "audio", "sample_rate": SR, "clip_seconds": 1.0, "stereo": "mix", "highpass_hz": 300.0,
            "mel": mel, "in_chans": 1}
    torch.manual_seed(0)
    m = BirdClassifier("test_tiny", CLASSES, in_chans=1, preprocess=spec)
    with torch.no_grad():
        m.net.classifier[1].weight.mul_(40.0)
    ck = tmp / "calls.ckpt"
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict()}, ck)
    clips = []
    for i, label in enumerate(CLASSES):
        p = tmp / "clips" / f"{label}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(p, song(1.5, SR, seed=i), SR)
        clips.append(Sample(path=str(p), label=label, split="valid", group=str(p)))
    manifest = write_manifest(tmp / "manifest.csv", clips)
    assert export_main([f"ckpt={ck}", "format=onnx", f"output_dir={tmp / 'out'}", f"parity.data={manifest}"]) == 0
    return {"checkpoint": ck, "onnx": tmp / "out" / "model.onnx"}


def feed_stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(data)))


def assert_same_rows(file_rows: list[dict], stream_rows: list[dict], atol: float = 2e-4) -> float:
    """Same windows, times and species; confidences within ``atol``; returns the largest difference."""
    assert len(file_rows) == len(stream_rows) > 0
    worst = 0.0
    for a, b in zip(file_rows, stream_rows, strict=True):
        assert b["file"] == "stdin"
        assert (a["start_s"], a["end_s"], a["species"]) == (b["start_s"], b["end_s"], b["species"])
        worst = max(worst, abs(float(a["confidence"]) - float(b["confidence"])))
    assert worst <= atol
    return worst


# ----------------------------------------------------------------------------- PCM formats


@pytest.mark.parametrize("fmt,subtype", [("s16le", "PCM_16"), ("s24_3le", "PCM_24"), ("s32le", "PCM_32"),
                                         ("f32le", "FLOAT")])
def test_pcm_formats_decode_exactly_like_a_wav_file(tmp_path, fmt, subtype):
    rng = np.random.default_rng(1)
    n, ch = 1000, 2
    if fmt == "s16le":
        ints = rng.integers(-32768, 32768, (n, ch)).astype("<i2")
        raw, written = ints.tobytes(), ints
    elif fmt == "s24_3le":
        v = rng.integers(-(2**23), 2**23, (n, ch)).astype(np.int32)
        raw = np.stack([(v >> s) & 0xFF for s in (0, 8, 16)], axis=-1).astype(np.uint8).tobytes()
        written = v << 8  # libsndfile writes the top 24 bits of int32 samples
    elif fmt == "s32le":
        written = rng.integers(-(2**31), 2**31, (n, ch)).astype("<i4")
        raw = written.tobytes()
    else:
        written = rng.uniform(-1.5, 1.5, (n, ch)).astype("<f4")
        raw = written.tobytes()
    sf.write(tmp_path / "x.wav", written, SRC, subtype=subtype)
    from_file, _ = sf.read(tmp_path / "x.wav", dtype="float32", always_2d=True)
    spec = PcmSpec(fmt, SRC, ch)
    assert spec.frame_bytes * n == len(raw)
    np.testing.assert_array_equal(spec.decode(raw), from_file)


def test_format_names_follow_arecord():
    assert pcm_format("S16_LE") == "s16le" and pcm_format("S24_3LE") == "s24_3le" and pcm_format("FLOAT_LE") == "f32le"
    assert pcm_format("S24_LE") is None and pcm_format("mp3") is None


def test_frames_split_across_reads_are_joined_and_a_partial_last_frame_dropped():
    spec = PcmSpec("s24_3le", SRC, 2)
    raw = np.random.default_rng(4).integers(0, 256, 6 * 100 + 5, dtype=np.uint8).tobytes()  # 100 frames + 5 bytes

    class Trickle:  # a pipe that hands over 1..7 bytes per read, splitting frames anywhere
        def __init__(self) -> None:
            self.pos, self.rng = 0, np.random.default_rng(5)

        def read1(self, n: int) -> bytes:
            k = int(self.rng.integers(1, 8))
            out = raw[self.pos: self.pos + min(n, k)]
            self.pos += len(out)
            return out

    notes = PcmNotes()
    got = np.concatenate(list(read_pcm(Trickle(), spec, notes, coalesce_bytes=1)))
    np.testing.assert_array_equal(got, spec.decode(raw[:600]))
    assert notes.frames == 100 and notes.stray_bytes == 5 and "short of a whole frame" in notes.notes[0]


# ----------------------------------------------------------------------------- windows: stream vs file


@pytest.mark.parametrize("src,seconds,overlap,highpass", [(48000, 3.37, 0.0, 300.0), (44100, 2.6, 0.25, None),
                                                          (16000, 0.4, 0.0, 300.0), (48000, 3.0, 0.5, 300.0)])
def test_stream_windows_are_the_file_windows_whatever_the_chunking(tmp_path, src, seconds, overlap, highpass):
    x = song(seconds, src)
    pcm = s16(x)
    sf.write(tmp_path / "r.wav", pcm, src, subtype="PCM_16")
    grid = WindowGrid.from_seconds(SR, 1.0, overlap)
    from_file = [(s, v, w.copy()) for s, v, w in stream_windows(tmp_path / "r.wav", grid, highpass_hz=highpass)]
    spec = PcmSpec("s16le", src, 1)
    frames = spec.decode(pcm.tobytes())
    rng = np.random.default_rng(2)
    runs = []
    for sizes in ([len(frames)], rng.integers(1, 9000, 400)):  # all at once, or in ragged chunks of up to 9000 frames
        cuts = np.cumsum(sizes)
        chunks = [c for c in np.split(frames, cuts[cuts < len(frames)]) if len(c)]
        notes = StreamNotes()
        got = [w for ready in stream_windows_pcm(iter(chunks), spec, grid, highpass_hz=highpass, notes=notes)
               for w in ready]
        assert [(s, v) for s, v, _ in got] == [(s, v) for s, v, _ in from_file]
        for (_, v, a), (_, _, b) in zip(from_file, got, strict=True):
            assert b.shape == (grid.clip,) and not b[v:].any()
            np.testing.assert_allclose(b[:v], a[:v], atol=2e-6)  # the file's samples: one resampler, one high-pass
        assert notes.samples == from_file[-1][0] + from_file[-1][1]  # the end of the audio, as for the file
        runs.append(got)
    for (_, _, a), (_, _, b) in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)  # how the bytes arrive changes nothing


def test_windows_are_cut_as_soon_as_their_frames_arrive():
    """A window is handed on once its frames and the filters' margin are in, never later (latency)."""
    spec = PcmSpec("f32le", SRC, 1)
    grid = WindowGrid.from_seconds(SR, 1.0)
    x = song(3.0)[:, None]
    step = SRC // 100  # 10 ms reads
    seen: list[tuple[float, int]] = []
    chunks = (x[i: i + step] for i in range(0, len(x), step))
    fed = [0]

    def counted():
        for c in chunks:
            fed[0] += len(c)
            yield c

    for ready in stream_windows_pcm(counted(), spec, grid, highpass_hz=300.0):
        seen += [(fed[0] / SRC, s) for s, _, _ in ready]
    ends = {s: t for t, s in seen}
    assert ends[0] <= 1.0 + 0.1 + 0.02 and ends[SR] <= 2.0 + 0.1 + 0.02  # 0.1 s high-pass margin, 10 ms reads


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("engine", ["checkpoint", "onnx"])
def test_stream_gives_the_rows_of_the_file(engine, tmp_path, models, monkeypatch):
    pcm = s16(song(5.3))
    wav = tmp_path / "r.wav"
    sf.write(wav, pcm, SRC, subtype="PCM_16")
    common = [f"model={models[engine]}", "top_k=2", "min_confidence=0.01", "overlap_seconds=0.25"]
    assert main([*common, f"input={wav}", f"output={tmp_path / 'file.csv'}"]) == 0
    feed_stdin(monkeypatch, pcm.tobytes())
    assert main([*common, "input=-", f"output={tmp_path / 'stream.csv'}", "stream.sample_rate=48000",
                 "stream.format=S16_LE"]) == 0
    a, b = rows_of(tmp_path / "file.csv"), rows_of(tmp_path / "stream.csv")
    assert_same_rows(a, b)
    assert len({r["species"] for r in a}) >= 2  # the windows differ, so the comparison means something
    assert b[-1]["end_s"] == "5.300"  # the partial last window, zero-padded, ends where the audio ends
    log = (tmp_path / "stream.log").read_text()
    assert "standard input (s16le, 1 channel(s), 48000 Hz)" in log and f"rows: {len(b)} from" in log


def test_stereo_s32_stream_to_stdout_with_a_species_list(tmp_path, models, monkeypatch, capsys):
    x = np.stack([song(2.5), song(2.5, seed=5)], axis=1)
    ints = np.round(np.clip(x, -1, 1) * (2**31 - 1)).astype("<i4")
    sf.write(tmp_path / "r.wav", ints, SRC, subtype="PCM_32")
    (tmp_path / "list.txt").write_text("Gamma\n# beta is not here in winter\nALPHA\n")
    common = [f"model={models['onnx']}", f"species={tmp_path / 'list.txt'}", "top_k=3", "min_confidence=0"]
    assert main([*common, f"input={tmp_path / 'r.wav'}", f"output={tmp_path / 'file.csv'}"]) == 0
    capsys.readouterr()
    feed_stdin(monkeypatch, ints.tobytes())
    assert main([*common, "input=-", "output=-", "stream.sample_rate=48000", "stream.channels=2",
                 "stream.format=s32le"]) == 0
    out = capsys.readouterr()
    rows = rows_of(out.out)
    assert "stdin," not in out.err  # rows go to standard output only; the console is on standard error
    assert {r["species"] for r in rows} == {"alpha", "gamma"}
    assert_same_rows(rows_of(tmp_path / "file.csv"), rows)
    assert not (tmp_path / "-.log").exists()


def test_rows_are_flushed_while_the_stream_is_still_open(tmp_path, models):
    cmd = [sys.executable, "-m", "birdvision.predict", f"model={models['onnx']}", "input=-", "output=-",
           "stream.sample_rate=48000", "threads=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=BUFFERED_ENV)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln.decode()) for ln in proc.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=120).startswith("file,start_s,end_s,species,confidence")
        pcm = s16(song(2.25))
        proc.stdin.write(pcm[: int(1.15 * SRC)].tobytes())  # window 1 and the high-pass margin after it
        proc.stdin.flush()
        assert lines.get(timeout=60).startswith("stdin,0.000,1.000,")  # the stream is still open
        proc.stdin.write(pcm[int(1.15 * SRC):].tobytes())
        proc.stdin.flush()
        assert lines.get(timeout=60).startswith("stdin,1.000,2.000,")
        assert lines.empty()
        proc.stdin.close()  # the end: the partial last window [2, 2.25)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.2)
        assert lines.get(timeout=10).startswith("stdin,2.000,2.250,")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_nan_samples_mid_stream_are_warned_and_no_row_is_lost(tmp_path, models, monkeypatch, capsys):
    x = song(4.0)
    x[int(2.3 * SRC): int(2.3 * SRC) + 50] = np.nan
    x[int(2.6 * SRC)] = np.inf
    sf.write(tmp_path / "nan.wav", x, SRC, subtype="FLOAT")
    common = [f"model={models['onnx']}", "min_confidence=0.01"]
    assert main([*common, f"input={tmp_path / 'nan.wav'}", f"output={tmp_path / 'file.csv'}"]) == 0
    capsys.readouterr()
    feed_stdin(monkeypatch, x.astype("<f4").tobytes())
    out = tmp_path / "stream.csv"
    assert main([*common, "input=-", f"output={out}", "stream.sample_rate=48000", "stream.format=f32le"]) == 0
    err = capsys.readouterr().err
    assert "NaN/inf sample(s) at 2.30 s replaced by 0" in " ".join(err.split())
    rows = rows_of(out)
    assert [r["start_s"] for r in rows] == ["0.000", "1.000", "2.000", "3.000"]
    assert_same_rows(rows_of(tmp_path / "file.csv"), rows)  # NaN -> 0, as a file's
    assert "WARNING stdin: NaN/inf samples replaced by 0 (51 in all)" in (tmp_path / "stream.log").read_text()


def test_a_byte_count_that_is_not_whole_frames_is_warned_and_the_frames_predicted(tmp_path, models, monkeypatch,
                                                                                  capsys):
    x = np.stack([song(2.4), song(2.4, seed=3)], axis=1)
    pcm = s16(x)
    sf.write(tmp_path / "r.wav", pcm, SRC, subtype="PCM_16")
    common = [f"model={models['onnx']}", "min_confidence=0.01"]
    assert main([*common, f"input={tmp_path / 'r.wav'}", f"output={tmp_path / 'file.csv'}"]) == 0
    capsys.readouterr()
    feed_stdin(monkeypatch, pcm.tobytes() + b"\x01\x02\x03")  # 3 bytes of a 4-byte stereo s16le frame
    out = tmp_path / "stream.csv"
    assert main([*common, "input=-", f"output={out}", "stream.sample_rate=48000", "stream.channels=2"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "3 byte(s) short of a whole frame (4 bytes: s16le x 2 channel(s))" in err
    assert_same_rows(rows_of(tmp_path / "file.csv"), rows_of(out))
    assert "WARNING stdin: the stream ended with 3 byte(s)" in (tmp_path / "stream.log").read_text()


def test_a_stream_shorter_than_a_window_gives_one_padded_row(tmp_path, models, monkeypatch):
    feed_stdin(monkeypatch, s16(song(0.3)).tobytes())
    out = tmp_path / "s.csv"
    assert main([f"model={models['checkpoint']}", "input=-", f"output={out}", "stream.sample_rate=48000"]) == 0
    assert [(r["start_s"], r["end_s"]) for r in rows_of(out)] == [("0.000", "0.300")]
    assert "shorter than one 1 s window" in (tmp_path / "s.log").read_text()


@pytest.fixture(scope="module")
def photo_ckpt(tmp_path_factory, demo_photos) -> Path:
    from tests._bird_runs import make_run

    return make_run(tmp_path_factory.mktemp("photo_run"), demo_photos) / "checkpoints" / "best.ckpt"


@pytest.mark.parametrize("args,stdin,msg", [
    (["model=PHOTO", "stream.sample_rate=48000"], b"\0\0" * 100, "is a photo model"),
    (["model=CALLS"], b"\0\0" * 100, "needs stream.sample_rate="),
    (["model=CALLS", "stream.sample_rate=48000", "stream.format=S24_LE"], b"", "s16le, s24_3le, s32le, f32le"),
    (["model=CALLS", "stream.sample_rate=48000", "merge=true"], b"", "merge=true"),
    (["model=CALLS", "stream.sample_rate=48000"], b"", "ended before a single frame"),
    (["model=CALLS", "stream.sample_rate=48000"], b"\0", "ended before a single frame"),
    (["model=CALLS", "stream.sample_rate=48000"], None, "it is a terminal"),
])
def test_stream_user_errors_are_one_line(tmp_path, models, photo_ckpt, monkeypatch, capsys, args, stdin, msg):
    args = [a.replace("PHOTO", str(photo_ckpt)).replace("CALLS", str(models["onnx"])) for a in args]
    if stdin is None:
        monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=SimpleNamespace(isatty=lambda: True)))
    else:
        feed_stdin(monkeypatch, stdin)
    assert main([*args, "input=-", f"output={tmp_path / 'x.csv'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and msg in err[-1], err[-3:]


def test_output_dash_is_only_for_streams(tmp_path, models, capsys):
    sf.write(tmp_path / "r.wav", song(1.0), SRC)
    assert main([f"model={models['onnx']}", f"input={tmp_path / 'r.wav'}", "output=-"]) == 2
    assert "output=- (standard output) is for input=- and input=mic: streams" in capsys.readouterr().err


# ----------------------------------------------------------------------------- input=mic: (a fake sounddevice)


class FakeSoundDevice:
    """python-sounddevice's surface that input=mic: uses, playing ``pcm`` (bytes) as the device's input."""

    class PortAudioError(Exception):
        pass

    def __init__(self, pcm: bytes, default_rate: int = SRC, overflow_at: int | None = None) -> None:
        self.pcm, self.default_rate, self.overflow_at = pcm, default_rate, overflow_at
        self.opened: list[dict] = []
        self.closed = False
        fake = self

        class RawInputStream:
            def __init__(self, **kw):
                if kw["device"] not in (None, 0, "Fake"):
                    raise fake.PortAudioError(f"No input device matching {kw['device']!r}")
                fake.opened.append(kw)
                self.frame = {"int16": 2, "int32": 4, "float32": 4, "int24": 3}[kw["dtype"]] * kw["channels"]
                self.pos, self.reads = 0, 0

            def start(self):
                pass

            read_available = 0  # a live device: each read waits for new frames

            def read(self, frames):
                if self.pos >= len(fake.pcm):
                    raise KeyboardInterrupt  # the user stops a live capture with Ctrl-C
                chunk = fake.pcm[self.pos: self.pos + frames * self.frame]
                self.pos += len(chunk)
                self.reads += 1
                return chunk, self.reads == fake.overflow_at

            def stop(self):
                pass

            def close(self):
                fake.closed = True

        self.RawInputStream = RawInputStream

    def query_devices(self, device=None, kind=None):
        if device is None and kind is None:
            return [{"name": "Fake", "max_input_channels": 2}]
        if device not in (None, 0, "Fake"):
            raise ValueError(f"No input device matching {device!r}")
        return {"name": "Fake", "default_samplerate": float(self.default_rate), "max_input_channels": 2}


def test_microphone_gives_the_rows_of_the_file_and_stops_cleanly_on_ctrl_c(tmp_path, models, monkeypatch):
    pcm = s16(song(4.2))
    sf.write(tmp_path / "r.wav", pcm, SRC, subtype="PCM_16")
    common = [f"model={models['onnx']}", "top_k=2", "min_confidence=0.01"]
    assert main([*common, f"input={tmp_path / 'r.wav'}", f"output={tmp_path / 'file.csv'}"]) == 0
    fake = FakeSoundDevice(pcm.tobytes(), overflow_at=3)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    # a live capture ends with Ctrl-C: exit 130, with the rows of every completed window written and the log
    assert main([*common, "input=mic:", f"output={tmp_path / 'mic.csv'}"]) == 130
    assert fake.opened[0]["samplerate"] == SRC and fake.opened[0]["dtype"] == "int16"  # the device's own rate
    assert fake.closed
    a, b = rows_of(tmp_path / "file.csv"), rows_of(tmp_path / "mic.csv")
    assert {r["file"] for r in b} == {"mic:"}
    # every window that completed before Ctrl-C (all but the padded tail, which needs the end of the audio)
    full = [r for r in a if float(r["end_s"]) - float(r["start_s"]) >= 1.0]
    assert len(full) >= 3 and len({r["species"] for r in full}) >= 2
    assert_same_rows(full, [dict(r, file="stdin") for r in b[: len(full)]])
    log = (tmp_path / "mic.log").read_text()
    assert "the sound device mic: (s16le, 1 channel(s), 48000 Hz)" in log and "overflowed 1 time(s)" in log


@pytest.mark.parametrize("args,fake,msg", [
    (["input=mic:9"], "device", "input devices: 0: Fake"),
    (["input=mic:", "stream.format=bogus"], "device", "s16le, s24_3le, s32le, f32le"),
    (["input=mic:"], "missing", "pip install birdvision[mic]"),
    (["input=mic:"], "no-portaudio", "apt-get install libportaudio2"),
])
def test_microphone_user_errors_are_one_line(tmp_path, models, monkeypatch, capsys, args, fake, msg):
    import builtins

    if fake == "device":
        monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(b""))
    else:
        monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
        real_import = builtins.__import__
        error = ImportError("No module named 'sounddevice'") if fake == "missing" else OSError("PortAudio library not found")

        def refuse(name, *a, **kw):
            if name == "sounddevice":
                raise error
            return real_import(name, *a, **kw)

        monkeypatch.setattr(builtins, "__import__", refuse)
    assert main([f"model={models['onnx']}", *args, f"output={tmp_path / 'x.csv'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and msg in err[-1], err[-3:]


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_recording_streams_like_its_file_within_one_window_of_latency(realdata, tmp_path):
    """60 s of a real 48 kHz recording piped at real time as s16le: the file's rows, each row out within one window."""
    import torch

    from birdvision.data.audio.mel import MelFrontend
    from birdvision.training.module import BirdClassifier

    rec = realdata / "audio" / "himalayan_bulbul" / "himalayan_bulbul_recording_2.mp3"
    x, src = sf.read(rec, dtype="float32", always_2d=True)
    assert src == 48000 and len(x) >= 60 * src
    pcm = s16(x[: 60 * src, 0])
    wav = tmp_path / "bulbul60.wav"
    sf.write(wav, pcm, src, subtype="PCM_16")
    # The calls recipe's preprocessing (32 kHz, 5 s windows, 1400 Hz high-pass, 128 mels) on EfficientNet-Lite0:
    # the model a Jetson would run, at its real cost (random weights: agreement, not accuracy, is measured).
    spec = {"kind": "audio", "sample_rate": 32000, "clip_seconds": 5.0, "stereo": "mix", "highpass_hz": 1400.0,
            "mel": MelFrontend().spec(), "in_chans": 1}
    torch.manual_seed(0)
    m = BirdClassifier("efficientnet_lite0", [f"species_{i}" for i in range(30)], in_chans=1, preprocess=spec)
    ck = tmp_path / "calls.ckpt"
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict()}, ck)
    common = [f"model={ck}", "top_k=3", "min_confidence=0", "threads=1", "batch_size=1"]
    assert main([*common, f"input={wav}", f"output={tmp_path / 'file.csv'}"]) == 0

    proc = subprocess.Popen([sys.executable, "-m", "birdvision.predict", *common, "input=-", "output=-",
                             "stream.sample_rate=48000"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=BUFFERED_ENV)
    arrived: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [arrived.put((time.perf_counter(), ln.decode())) for ln in proc.stdout],
                     daemon=True).start()
    try:
        arrived.get(timeout=300)  # the header: the model is loaded
        step = src // 10  # 100 ms writes at real time, like arecord's periods
        window_end_written: dict[str, float] = {}
        t0 = time.perf_counter()
        for i in range(0, len(pcm), step):
            time.sleep(max(0.0, t0 + i / src - time.perf_counter()))
            proc.stdin.write(pcm[i: i + step].tobytes())
            proc.stdin.flush()
            if (i + step) % (5 * src) == 0:  # the last byte of the window [t - 5, t) is written
                window_end_written[f"{(i + step) // src - 5:.3f}"] = time.perf_counter()
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    got = []
    while not arrived.empty():
        got.append(arrived.get())
    rows = rows_of("file,start_s,end_s,species,confidence\n" + "".join(ln for _, ln in got))
    worst = assert_same_rows(rows_of(tmp_path / "file.csv"), rows, atol=1e-3)
    latency = {}
    for t, ln in got:
        start = ln.split(",")[1]
        if start in window_end_written and start not in latency:
            latency[start] = t - window_end_written[start]
    assert len(latency) == 12
    lat = np.array(sorted(latency.values()))
    print(f"\nstream vs file: {len(rows)} rows, max |confidence difference| {worst:.5f}; latency per row "
          f"median {np.median(lat):.3f} s, max {lat.max():.3f} s (window 5 s)")
    assert lat.max() <= 5.0
