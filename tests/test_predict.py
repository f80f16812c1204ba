"""birdvision.predict: windows over recordings of any length, photos, bad inputs, PyTorch vs ONNX."""

from __future__ import annotations

import csv
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from birdvision.data.audio import io as A
from birdvision.data.audio.io import load
from birdvision.data.audio.mel import MelFrontend
from birdvision.predict import main
from birdvision.prediction.grid import StreamNotes, WindowGrid, stream_windows
from birdvision.prediction.inputs import find_inputs
from birdvision.prediction.options import PredictConfig
from birdvision.prediction.outputs import log_path_for
from birdvision.prediction.predictor import Predictor
from birdvision.prediction.run import predict_files
from birdvision.prediction.tables import RAVEN_COLUMNS, Row, merge_runs, raven_table, top_rows

SR = 32000


def tone(freq: float, seconds: float, sr: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def audio_preprocess(clip_seconds: float = 1.0, n_mels: int = 32) -> dict:
    from birdvision.data.audio.mel import MelFrontend

    mel = MelFrontend(sample_rate=SR, n_fft=512, hop_length=256, n_mels=n_mels).spec()
    return {"kind": "audio", "sample_rate": SR, "clip_seconds": clip_seconds, "stereo": "mix", "highpass_hz": None,
            "mel": mel, "in_chans": 1}


def save_checkpoint(path: Path, classes: list[str], preprocess: dict, in_chans: int) -> Path:
    """A birdvision checkpoint of the tiny test backbone with a decisive (scaled-up) random head."""
    from birdvision.training.module import BirdClassifier

    torch.manual_seed(0)
    m = BirdClassifier("test_tiny", classes, in_chans=in_chans, preprocess=preprocess)
    with torch.no_grad():
        head = m.net.classifier[1]
        head.weight.mul_(40.0)
        head.bias.copy_(torch.linspace(-1, 1, len(classes)))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def calls(tmp_path_factory) -> Path:
    from birdvision.data.audio.demo import make_demo_calls

    return make_demo_calls(tmp_path_factory.mktemp("calls"), n_species=3, recordings_per_species=2, seconds=3.5)


@pytest.fixture(scope="module")
def audio_ckpt(tmp_path_factory, calls) -> Path:
    classes = sorted(p.name for p in calls.iterdir())
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "audio.ckpt", classes, audio_preprocess(), 1)


class FakePredictor(Predictor):
    """A Predictor whose engine is a constant, where only the streaming is under test (no model cost)."""

    engine = "fake"

    def __init__(self, sample_rate: int, clip_seconds: float) -> None:
        super().__init__(source=Path("fake"), classes=["a", "b"], temperature=1.0,
                         preprocess={"kind": "audio", "sample_rate": sample_rate, "clip_seconds": clip_seconds,
                                     "mel": MelFrontend(sample_rate=sample_rate, n_fft=256, hop_length=128, n_mels=16,
                                                        f_max_hz=sample_rate / 2).spec()})
        self.batches: list[int] = []

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32 and x.shape[1] == int(self.preprocess["clip_seconds"] * self.preprocess["sample_rate"])
        self.batches.append(len(x))
        p = np.zeros((len(x), 2), np.float32)
        p[:, 0] = 0.9
        p[:, 1] = 0.1
        return p


def cfg(**kw) -> PredictConfig:
    c = PredictConfig()
    for k, v in kw.items():
        setattr(c, k, v)
    return c


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize("seconds,overlap", [(3.0, 0.0), (3.3, 0.0), (0.1, 0.0), (3.3, 0.5), (7.0, 0.25)])
def test_windows_cover_the_recording_and_match_a_whole_load(tmp_path, seconds, overlap):
    rng = np.random.default_rng(1)
    p = tmp_path / "r.wav"
    sf.write(p, (0.1 * rng.standard_normal(int(seconds * 44100))).astype(np.float32), 44100, subtype="FLOAT")
    full = load(p, SR)[0]
    grid = WindowGrid.from_seconds(SR, 1.0, overlap)
    notes = StreamNotes()
    wins = [(s, v, w.copy()) for s, v, w in stream_windows(p, grid, block_seconds=2.0, notes=notes)]
    starts = [s for s, _, _ in wins]
    assert starts == [i * grid.hop for i in range(len(wins))]  # a regular grid from 0
    assert (wins[-1][0] + wins[-1][1]) == len(full)  # covered to the very end, no further
    assert wins[-1][0] < len(full) and (len(wins) == 1 or wins[-2][0] + grid.clip < len(full))  # no redundant tail
    for s, v, w in wins:
        assert w.shape == (grid.clip,)
        np.testing.assert_allclose(w[:v], full[s: s + v], atol=2e-5)  # same samples as a whole-file load
        assert not w[v:].any()  # padding is silence
    assert notes.max_block <= grid.block_samples(2.0)


def test_two_hour_file_streams_in_bounded_memory(tmp_path, monkeypatch):
    sr, hours = 1000, 2.0  # a real two-hour file, at a low rate so the test takes seconds
    p = tmp_path / "long.wav"
    n = int(hours * 3600 * sr)
    with sf.SoundFile(p, "w", sr, 1, subtype="PCM_16") as f:
        for i in range(0, n, 600 * sr):
            f.write(tone(50 + i % 300, min(600, (n - i) / sr), sr))
    import birdvision.prediction.grid as W

    seen: list[int] = []
    real = W.stream_blocks

    def spy(*a, **k):
        for b in real(*a, **k):
            seen.append(b.samples.size)
            yield b

    monkeypatch.setattr(W, "stream_blocks", spy)
    pred = FakePredictor(sr, 5.0)
    tracemalloc.start()
    res = predict_files(pred, find_inputs(p, audio=True), cfg(block_seconds=60.0, batch_size=16))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    whole = n * 4  # the recording as float32
    assert max(seen) <= 60 * sr and res.max_block_samples <= 60 * sr
    assert peak < whole / 10, f"peak traced memory {peak / 2**20:.1f} MiB vs {whole / 2**20:.1f} MiB for the whole file"
    assert res.items == 1440 and max(pred.batches) == 16
    assert res.rows[-1].end_s == pytest.approx(7200.0)
    assert res.audio_seconds == pytest.approx(7200.0)


# ----------------------------------------------------------------------------- tables


def test_top_rows_keep_best_and_confident_ones():
    probs = np.array([[0.05, 0.5, 0.45], [0.34, 0.33, 0.33]], np.float32)
    got = top_rows(probs, ["a", "b", "c"], top_k=2, min_confidence=0.4, always_top1=True)
    assert got == [[("b", pytest.approx(0.5)), ("c", pytest.approx(0.45))], [("a", pytest.approx(0.34))]]
    assert top_rows(probs, ["a", "b", "c"], top_k=2, min_confidence=0.4, always_top1=False)[1] == []
    assert len(top_rows(probs, ["a", "b", "c"], top_k=10, min_confidence=0.0, always_top1=True)[0]) == 3


def test_merge_runs_and_raven_table():
    rows = [Row("f.wav", "a", 0.5, 0, 5), Row("f.wav", "a", 0.9, 5, 10), Row("f.wav", "b", 0.6, 10, 15),
            Row("f.wav", "a", 0.4, 15, 20), Row("g.wav", "a", 0.7, 0, 5)]
    m = merge_runs(rows)
    assert [(r.file, r.species, r.start_s, r.end_s, r.confidence) for r in m] == [
        ("f.wav", "a", 0, 10, 0.9), ("f.wav", "b", 10, 15, 0.6), ("f.wav", "a", 15, 20, 0.4), ("g.wav", "a", 0, 5, 0.7)]
    one = raven_table(m[:3], low_hz=1400, high_hz=16000).splitlines()
    assert one[0].split("\t") == RAVEN_COLUMNS
    assert one[1].split("\t") == ["1", "Spectrogram 1", "1", "0.000", "10.000", "1400.0", "16000.0", "a", "0.9000"]
    many = raven_table(m, low_hz=0, high_hz=8000).splitlines()
    assert many[0].split("\t")[-1] == "Begin Path" and many[-1].split("\t")[-1] == "g.wav"


# ----------------------------------------------------------------------------- the CLI on recordings


def test_cli_on_recordings_writes_windows_log_merge_and_raven(tmp_path, calls, audio_ckpt):
    out = tmp_path / "pred.csv"
    assert main([f"model={audio_ckpt}", f"input={calls}", f"output={out}", f"raven={tmp_path / 'sel.txt'}"]) == 0
    rows = rows_of(out)
    assert list(rows[0]) == ["file", "start_s", "end_s", "species", "confidence"]
    files = sorted({r["file"] for r in rows})
    assert len(files) == 6
    for f in files:  # 3.5 s recordings, 1 s windows: 4 windows, the last padded, reported up to 3.5 s
        mine = [r for r in rows if r["file"] == f]
        assert [(r["start_s"], r["end_s"]) for r in mine] == [
            ("0.000", "1.000"), ("1.000", "2.000"), ("2.000", "3.000"), ("3.000", "3.500")]
    assert "6 predicted" in log_path_for(out).read_text()
    sel = (tmp_path / "sel.txt").read_text().splitlines()
    assert sel[0].split("\t")[:9] == RAVEN_COLUMNS and len(sel) == len(rows) + 1

    merged = tmp_path / "merged.csv"
    assert main([f"model={audio_ckpt}", f"input={calls}", f"output={merged}", "merge=true",
                 "overlap_seconds=0.5"]) == 0
    mrows = rows_of(merged)
    assert len(mrows) < 2 * len(rows)  # overlap doubles the windows; merging joins same-species runs
    for f in files:
        mine = [r for r in mrows if r["file"] == f]
        assert float(mine[0]["start_s"]) == 0 and max(float(r["end_s"]) for r in mine) == 3.5


def test_bad_recordings_are_listed_never_fatal(tmp_path, audio_ckpt):
    d = tmp_path / "bad"
    d.mkdir()
    sf.write(d / "zero.wav", np.zeros((0, 1), np.float32), SR)
    sf.write(d / "short.wav", tone(2000, 0.1, SR), SR)
    sf.write(d / "silence.wav", np.zeros(3 * SR, np.float32), SR)
    sf.write(d / "low_rate.wav", tone(2000, 2.0, 9000), 9000)
    sf.write(d / "wav_named.mp3", tone(3000, 1.5, SR), SR, format="WAV")
    (d / "garbage.mp3").write_bytes(np.random.default_rng(0).bytes(5000))
    sf.write(tmp_path / "ok.mp3", tone(3000, 3.0, SR), SR, format="MP3")
    (d / "cut.mp3").write_bytes((tmp_path / "ok.mp3").read_bytes()[: (tmp_path / "ok.mp3").stat().st_size // 2])
    nan = tone(2500, 2.0, SR)
    nan[100:200] = np.nan
    sf.write(d / "nan.wav", nan, SR, subtype="FLOAT")
    (d / "index.csv").write_text("a,b\n")
    out = tmp_path / "p.csv"
    assert main([f"model={audio_ckpt}", f"input={d}", f"output={out}"]) == 0
    by_file: dict[str, list[dict]] = {}
    for r in rows_of(out):
        by_file.setdefault(Path(r["file"]).name, []).append(r)
    assert set(by_file) == {"short.wav", "silence.wav", "low_rate.wav", "wav_named.mp3", "cut.mp3", "nan.wav"}
    assert [(r["start_s"], r["end_s"]) for r in by_file["short.wav"]] == [("0.000", "0.100")]
    assert float(by_file["low_rate.wav"][-1]["end_s"]) == 2.0
    assert all(np.isfinite(float(r["confidence"])) for rs in by_file.values() for r in rs)
    text = log_path_for(out).read_text()
    lines = {ln.split(":")[0]: ln for ln in text.splitlines() if ln.startswith(("SKIPPED", "WARNING", "PASSED"))}
    assert "zero frames" in lines[f"SKIPPED {d / 'zero.wav'}"]
    assert "not a recognised audio format" in lines[f"SKIPPED {d / 'garbage.mp3'}"]
    assert "pure silence" in lines[f"WARNING {d / 'silence.wav'}"]
    assert "9000 Hz" in lines[f"WARNING {d / 'low_rate.wav'}"]
    assert "NaN/inf" in lines[f"WARNING {d / 'nan.wav'}"]
    assert "shorter than one" in lines[f"WARNING {d / 'short.wav'}"]
    assert "truncated" in lines[f"WARNING {d / 'cut.mp3'}"]
    assert f"PASSED OVER {d / 'index.csv'}" in text

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "garbage.wav").write_bytes(b"RIFF0000WAVEjunk")
    assert main([f"model={audio_ckpt}", f"input={only_bad}", f"output={tmp_path / 'none.csv'}"]) == 1
    assert rows_of(tmp_path / "none.csv") == []


@pytest.mark.parametrize("args,msg", [
    (["input=x"], "model= is required"),
    (["model=MODEL"], "input= is required"),
    (["model=MODEL", "input=/no/such/place"], "does not exist"),
    (["model=MODEL", "input=INPUT", "overlap_seconds=1.0"], "overlap_seconds"),
    (["model=MODEL", "input=INPUT", "top_k=0"], "top_k"),
    (["model=MODEL", "input=INPUT", "min_confidenc=0.2"], "min_confidence"),
    (["model=/no/such.ckpt", "input=INPUT"], "does not exist"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, calls, audio_ckpt, args, msg):
    args = [a.replace("MODEL", str(audio_ckpt)).replace("INPUT", str(calls)) for a in args]
    assert main([*args, f"output={tmp_path / 'x.csv'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and msg in err[-1]


# ----------------------------------------------------------------------------- photos


def test_photos_top_k_and_unreadable_listed(tmp_path, demo_photos):
    from birdvision.spec import ImageSpec

    classes = sorted(p.name for p in (demo_photos / "train").iterdir() if p.is_dir())
    pre = ImageSpec(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).to_dict()
    ck = save_checkpoint(tmp_path / "photo.ckpt", classes, pre, 3)
    d = tmp_path / "photos"
    d.mkdir()
    import shutil

    for i, p in enumerate(sorted((demo_photos / "test").rglob("*.jpg"))[:5]):
        shutil.copy(p, d / f"{i}.jpg")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "notes.txt").write_text("hello")
    out = tmp_path / "photos.csv"
    assert main([f"model={ck}", f"input={d}", f"output={out}", "min_confidence=0", "raven=" + str(tmp_path / "r.txt")]) == 0
    rows = rows_of(out)
    assert list(rows[0]) == ["file", "species", "confidence"]
    assert len(rows) == 5 * len(classes)  # top_k defaults to 5 (capped at the 3 classes), min_confidence 0
    assert not (tmp_path / "r.txt").exists()
    log = log_path_for(out).read_text()
    assert f"SKIPPED {d / 'broken.jpg'}" in log and f"PASSED OVER {d / 'notes.txt'}" in log


# ----------------------------------------------------------------------------- PyTorch vs ONNX


@pytest.fixture(scope="module")
def exported(tmp_path_factory, calls, audio_ckpt) -> Path:
    from birdvision.data.manifest import Sample, write_manifest
    from birdvision.export import main as export_main

    tmp = tmp_path_factory.mktemp("export")
    samples = [Sample(path=str(p), label=p.parent.name, split="valid", group=str(p)) for p in sorted(calls.rglob("*.wav"))]
    manifest = write_manifest(tmp / "manifest.csv", samples)
    rc = export_main([f"ckpt={audio_ckpt}", "format=onnx", f"output_dir={tmp / 'out'}", f"parity.data={manifest}"])
    assert rc == 0 and (tmp / "out" / "model.onnx").is_file(), f"export of the test checkpoint failed (exit {rc})"
    return tmp / "out" / "model.onnx"


def test_checkpoint_and_onnx_give_the_same_rows(tmp_path, calls, audio_ckpt, exported):
    long = tmp_path / "in" / "long.wav"
    long.parent.mkdir()
    parts = [load(p, SR)[0] for p in sorted(calls.rglob("*.wav"))]
    sf.write(long, np.concatenate(parts), SR)  # 21 s: several blocks with block_seconds=4
    tables = {}
    for name, model in (("torch", audio_ckpt), ("onnx", exported)):
        out = tmp_path / f"{name}.csv"
        assert main([f"model={model}", f"input={long.parent}", f"output={out}", "top_k=2", "min_confidence=0.05",
                     "block_seconds=4", "overlap_seconds=0.25", "threads=1"]) == 0
        tables[name] = rows_of(out)
    a, b = tables["torch"], tables["onnx"]
    assert len(a) == len(b) > 20
    assert len({r["species"] for r in a}) >= 2  # the head is decisive and not constant
    for ra, rb in zip(a, b, strict=True):
        assert (ra["file"], ra["start_s"], ra["end_s"], ra["species"]) == (rb["file"], rb["start_s"], rb["end_s"], rb["species"])
        assert abs(float(ra["confidence"]) - float(rb["confidence"])) <= 2e-4
    assert max(float(r["end_s"]) for r in a) == pytest.approx(len(np.concatenate(parts)) / SR, abs=1e-3)


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_odd_real_audio_never_crashes(realdata, tmp_path, audio_ckpt):
    out = tmp_path / "odd.csv"
    assert main([f"model={audio_ckpt}", f"input={realdata / 'odd' / 'audio'}", f"output={out}"]) == 0
    text = log_path_for(out).read_text()
    assert "SKIPPED" in text  # the zero-frame WAV
    assert rows_of(out)


def test_stream_blocks_contract_used_here(tmp_path):
    """The block geometry this module relies on: blocks of exactly n samples stepping by n - overlap."""
    p = tmp_path / "x.wav"
    sf.write(p, tone(1000, 10.0, SR), SR)
    blocks = list(A.stream_blocks(p, SR, block_seconds=3.0, overlap_seconds=0.5))
    assert [round(b.start_s, 6) for b in blocks] == [0.0, 2.5, 5.0, 7.5]
    assert [b.samples.size for b in blocks[:-1]] == [3 * SR] * 3 and blocks[-1].samples.size == int(2.5 * SR)
