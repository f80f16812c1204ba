"""Predicting over archives: the ONNX path without PyTorch, decoding ahead of the model, the resume journal."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from birdvision.predict import main
from birdvision.prediction.inputs import find_inputs
from birdvision.prediction.journal import Journal, journal_path_for
from birdvision.prediction.options import PredictConfig
from birdvision.prediction.prefetch import prefetch
from birdvision.prediction.run import predict_files
from tests.conftest import tiny_calls_classifier

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def make_photos(folder: Path, n: int, *, size: int = 40, seed: int = 0) -> Path:
    """``n`` small JPEGs in two sub-folders (distinct content, so distinct hashes)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        p = folder / f"site{i % 2}" / f"img{i:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(p, quality=90)
    return folder


@pytest.fixture(scope="module")
def photo_export(tmp_path_factory, demo_photos) -> Path:
    from birdvision.export import main as export_main
    from tests._bird_runs import make_run

    run = make_run(tmp_path_factory.mktemp("run"), demo_photos)
    out = tmp_path_factory.mktemp("export")
    assert export_main([f"ckpt={run}", "format=onnx", f"output_dir={out}"]) == 0
    return out / "model.onnx"


@pytest.fixture(scope="module")
def audio_export(tmp_path_factory) -> Path:
    """A tiny spectrogram model exported with its mel frontend in the graph (waveform in)."""
    import torch

    from birdvision.data.manifest import Sample, write_manifest
    from birdvision.export import main as export_main

    tmp = tmp_path_factory.mktemp("audio_model")
    m = tiny_calls_classifier(SR)
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict()}, tmp / "audio.ckpt")
    clips = []
    for i in range(4):
        p = tmp / "clips" / "abc"[i % 3] / f"c{i}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, tone(500 + 700 * i, 1.5, 22050), 22050)
        clips.append(Sample(path=str(p), label=p.parent.name, split="valid", group=str(p)))
    manifest = write_manifest(tmp / "manifest.csv", clips)
    assert export_main([f"ckpt={tmp / 'audio.ckpt'}", "format=onnx", f"output_dir={tmp / 'out'}",
                        f"parity.data={manifest}"]) == 0
    return tmp / "out" / "model.onnx"


def tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    noise = 0.02 * np.random.default_rng(int(freq)).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t * (1 + 0.3 * t)) + noise).astype(np.float32)


def make_recordings(folder: Path, n: int) -> Path:
    for i in range(n):
        p = folder / f"rec{i:03d}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, tone(400 + 150 * i, 2.5 + (i % 3), 22050), 22050)
    return folder


# ----------------------------------------------------------------------------- 1. no torch on the ONNX path


def test_onnx_predict_imports_neither_torch_nor_lightning(tmp_path, photo_export, audio_export):
    photos = make_photos(tmp_path / "photos", 5)
    recs = make_recordings(tmp_path / "recs", 2)
    code = f"""
import sys
from birdvision.predict import main
assert main(["model={photo_export}", "input={photos}", "output={tmp_path / 'p.csv'}"]) == 0
assert main(["model={audio_export}", "input={recs}", "output={tmp_path / 'a.csv'}"]) == 0
import birdvision
birdvision.load("{audio_export}").predict_batch(__import__("numpy").zeros((1, {SR}), "float32"))
loaded = sorted(m for m in ("torch", "lightning", "pytorch_lightning", "torchvision", "onnx", "scipy.signal")
                if m in sys.modules)
print("LOADED", loaded)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout, out.stdout
    assert len(rows_of(tmp_path / "p.csv")) >= 5 and len(rows_of(tmp_path / "a.csv")) >= 2


def test_checkpoint_path_still_uses_torch_and_agrees(tmp_path, audio_export):
    from birdvision.prediction.api import load

    ck, onnx_p = load(audio_export.parents[1] / "audio.ckpt"), load(audio_export)
    assert ck.engine == "torch" and onnx_p.engine == "onnxruntime"
    w = (0.1 * np.random.default_rng(0).standard_normal((3, SR))).astype(np.float32)
    assert np.abs(ck.predict_batch(w) - onnx_p.predict_batch(w)).max() < 1e-4


# ----------------------------------------------------------------------------- 2. decode ahead of the model


def test_prefetch_keeps_order_bounds_memory_and_reraises():
    produced = []

    def gen():
        for i in range(50):
            produced.append(i)
            yield i

    got = []
    for x in prefetch(gen(), depth=3):
        time.sleep(0.002)
        assert len(produced) - len(got) <= 3 + 2  # queue depth, plus one being put and one being handed over
        got.append(x)
    assert got == list(range(50))

    def bad():
        yield 1
        raise ValueError("decoder broke")

    it = prefetch(bad(), depth=2)
    assert next(it) == 1
    with pytest.raises(ValueError, match="decoder broke"):
        next(it)


def test_prefetch_stops_its_thread_when_the_consumer_stops():
    stopped = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            stopped.set()

    it = prefetch(endless(), depth=2)
    assert [next(it) for _ in range(5)] == list(range(5))
    it.close()
    assert stopped.wait(5.0)


def test_decoding_ahead_holds_numpy_blas_to_one_thread_and_restores_it():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    if not blas():
        pytest.skip("numpy is linked to no BLAS that threadpoolctl can see")
    with threadpool_limits(limits=2, user_api="blas"):
        seen = []

        def items():
            for i in range(3):
                seen.append(blas())
                yield i

        assert list(prefetch(items(), depth=2)) == [0, 1, 2]
        assert all(n == [1] * len(n) for n in seen) and len(seen) == 3
        assert blas() == [2] * len(blas())  # restored for whatever runs after predict
        seen.clear()
        assert list(prefetch(items(), depth=0)) == [0, 1, 2]  # inline: nothing runs beside it, BLAS keeps its pool
        assert all(n == [2] * len(n) for n in seen)


def test_decoding_ahead_gives_the_same_rows(tmp_path, audio_export, photo_export):
    from birdvision.prediction.api import load

    recs = make_recordings(tmp_path / "recs", 5)
    photos = make_photos(tmp_path / "photos", 21)
    for model, folder in ((audio_export, recs), (photo_export, photos)):
        pred = load(model)
        inputs = find_inputs(folder, audio=pred.is_audio)
        runs = [predict_files(pred, inputs, PredictConfig(batch_size=4, prefetch=d, overlap_seconds=0.0))
                for d in (0, 1, 4)]
        assert runs[0].rows and runs[0].rows == runs[1].rows == runs[2].rows
        assert runs[0].items == runs[2].items


def test_thread_and_prefetch_options_are_checked(tmp_path, photo_export, capsys):
    assert main([f"model={photo_export}", f"input={tmp_path}", "prefetch=-1"]) == 2
    assert "prefetch=-1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 4. the resume journal


def run_cli(model: Path, folder: Path, out: Path, *extra: str) -> int:
    return main([f"model={model}", f"input={folder}", f"output={out}", *extra])


def journal_records(out: Path) -> list[dict]:
    lines = journal_path_for(out).read_text().splitlines()
    return [json.loads(ln) for ln in lines[1:]]


def test_rerun_skips_done_files_and_rebuilds_the_same_table(tmp_path, photo_export, capsys):
    photos = make_photos(tmp_path / "photos", 12)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out.csv"
    assert run_cli(photo_export, photos, out, "batch_size=5") == 0
    first = out.read_text()
    assert len(journal_records(out)) == 13  # 12 photos + the broken one, each once
    capsys.readouterr()
    assert run_cli(photo_export, photos, out, "batch_size=5") == 0
    err = capsys.readouterr().err
    assert "13 file(s) already done" in err
    assert out.read_text() == first
    log = out.with_suffix(".log").read_text()
    assert "13 of them already done" in log and "SKIPPED" in log and "broken.jpg" in log
    # a changed file is predicted again; one more file is added
    make_photos(tmp_path / "other", 1, seed=5)
    (tmp_path / "other" / "site0" / "img0000.jpg").replace(photos / "site0" / "img0000.jpg")
    make_photos(photos / "new", 1, seed=9)
    assert run_cli(photo_export, photos, out, "batch_size=5") == 0
    err = capsys.readouterr().err
    assert "12 file(s) already done" in err
    files = Counter(r["file"] for r in rows_of(out) if r["species"])
    assert len({f for f in files}) == 13 and str(photos / "new" / "site0" / "img0000.jpg") in files


def test_journal_from_another_model_or_settings_starts_over(tmp_path, photo_export, audio_export, capsys):
    photos = make_photos(tmp_path / "photos", 4)
    out = tmp_path / "out.csv"
    assert run_cli(photo_export, photos, out) == 0
    assert run_cli(photo_export, photos, out, "top_k=2") == 0
    err = capsys.readouterr().err
    assert "other settings (top_k 5 -> 2)" in err and "started over" in err and "already done" not in err
    assert run_cli(photo_export, photos, out, "top_k=2") == 0
    assert "4 file(s) already done" in capsys.readouterr().err
    other = tmp_path / "other.onnx"
    other.write_bytes(photo_export.read_bytes() + b"")  # same bytes: same digest, so still resumable
    assert run_cli(other, photos, out, "top_k=2") == 0
    assert "4 file(s) already done" in capsys.readouterr().err
    recs = make_recordings(tmp_path / "recs", 2)
    out2 = tmp_path / "calls.csv"
    assert run_cli(audio_export, recs, out2) == 0
    journal_path_for(out2).write_text(journal_path_for(out).read_text())  # a photo model's journal
    assert run_cli(audio_export, recs, out2) == 0
    err = capsys.readouterr().err
    assert "another model" in err and "started over" in err
    assert run_cli(audio_export, recs, out2, "resume=false") == 0
    assert "started over" in capsys.readouterr().err


def test_journal_cut_short_is_repaired_not_trusted(tmp_path, audio_export, capsys):
    recs = make_recordings(tmp_path / "recs", 6)
    out = tmp_path / "calls.csv"
    assert run_cli(audio_export, recs, out, "batch_size=3") == 0
    clean = out.read_text()
    jp = journal_path_for(out)
    data = jp.read_bytes()
    jp.write_bytes(data[: len(data) - 40])  # a kill in the middle of writing the last record
    capsys.readouterr()
    assert run_cli(audio_export, recs, out, "batch_size=3") == 0
    err = capsys.readouterr().err
    assert "cut short" in err and "5 file(s) already done" in err
    assert out.read_text() == clean
    assert len(journal_records(out)) == 6 and jp.read_bytes().endswith(b"\n")
    # a damaged line in the middle: it and what follows are dropped, those files redone
    lines = jp.read_text().splitlines(keepends=True)
    lines[2] = '{"file": "rec001.wav", "sha256": "nonsense"}\n'
    jp.write_text("".join(lines))
    assert run_cli(audio_export, recs, out, "batch_size=3") == 0
    err = capsys.readouterr().err
    assert "damaged line (3)" in err and "1 file(s) already done" in err
    assert out.read_text() == clean
    # a record whose rows were edited to another file's hash is not trusted either
    recs_j = journal_records(out)
    lines = jp.read_text().splitlines(keepends=True)
    forged = dict(recs_j[0], sha256="0" * 64)
    lines[1] = json.dumps(forged) + "\n"
    jp.write_text("".join(lines))
    assert run_cli(audio_export, recs, out, "batch_size=3") == 0
    assert "changed since it was journalled" in capsys.readouterr().err
    assert out.read_text() == clean


def test_a_journal_in_use_is_refused(tmp_path, photo_export, capsys):
    photos = make_photos(tmp_path / "photos", 2)
    out = tmp_path / "out.csv"
    from birdvision.prediction.journal import result_settings

    with Journal.open(journal_path_for(out), model_digest="0" * 64,
                      settings=result_settings(PredictConfig(), audio=False)):
        assert run_cli(photo_export, photos, out) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: the journal") and "in use by another predict run" in err


def test_single_file_runs_keep_no_journal(tmp_path, photo_export):
    photos = make_photos(tmp_path / "photos", 1)
    out = tmp_path / "one.csv"
    assert main([f"model={photo_export}", f"input={photos / 'site0' / 'img0000.jpg'}", f"output={out}"]) == 0
    assert not journal_path_for(out).exists()


def test_kill_9_then_rerun_gives_every_file_exactly_once(tmp_path, photo_export):
    """200 files; the run is killed with SIGKILL part-way; the same command again finishes the job."""
    photos = make_photos(tmp_path / "photos", 200, size=64)
    out, clean_out = tmp_path / "out.csv", tmp_path / "clean.csv"
    args = [f"model={photo_export}", f"input={photos}", "batch_size=2", "threads=1"]
    cmd = [sys.executable, "-m", "birdvision.predict", *args]
    proc = subprocess.Popen([*cmd, f"output={out}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jp = journal_path_for(out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if jp.exists() and jp.read_bytes().count(b"\n") > 30:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = jp.read_bytes().count(b"\n") - 1
    assert 30 <= done_at_kill < 200 and not out.exists()
    again = subprocess.run([*cmd, f"output={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{done_at_kill} file(s) already done" in " ".join(again.stderr.split())
    assert subprocess.run([*cmd, f"output={clean_out}"], cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    rows, clean = rows_of(out), rows_of(clean_out)
    per_file = Counter(r["file"] for r in rows)
    assert len(per_file) == 200 and per_file == Counter(r["file"] for r in clean)  # every file exactly once
    assert [(r["file"], r["species"]) for r in rows] == [(r["file"], r["species"]) for r in clean]
    assert all(abs(float(a["confidence"]) - float(b["confidence"])) < 1e-4 for a, b in zip(rows, clean, strict=True))
    names = [json.loads(ln)["file"] for ln in jp.read_text().splitlines()[1:]]
    assert len(names) == len(set(names)) == 200


def test_output_inside_the_input_folder_is_passed_over_on_a_rerun(tmp_path, photo_export, capsys):
    photos = make_photos(tmp_path / "photos", 3)
    out = photos / "predictions.csv"
    assert run_cli(photo_export, photos, out) == 0
    assert run_cli(photo_export, photos, out) == 0  # table, log and journal are not taken for inputs
    err = capsys.readouterr().err
    assert "3 file(s) already done" in err
    log = out.with_suffix(".log").read_text()
    assert "PASSED OVER" in log and "predictions.journal" in log


@pytest.mark.realdata
def test_real_odd_recordings_accounted_for_and_resumed(realdata, tmp_path, audio_export, capsys):
    """Real broken and odd files beside good ones: each is in the table or the error list, and a re-run
    takes them all from the journal (the broken ones too, with their reasons)."""
    folder = realdata / "odd" / "audio"
    out = tmp_path / "odd.csv"
    assert run_cli(audio_export, folder, out) == 0
    inputs = find_inputs(folder, audio=True)
    in_table = {r["file"] for r in rows_of(out)}
    log = out.with_suffix(".log").read_text()
    skipped = {ln.split(": ")[0].removeprefix("SKIPPED ") for ln in log.splitlines() if ln.startswith("SKIPPED ")}
    assert {str(f) for f in inputs.files} == in_table | skipped and not in_table & skipped and skipped
    first = out.read_text()
    capsys.readouterr()
    assert run_cli(audio_export, folder, out) == 0
    assert f"{len(inputs.files)} file(s) already done" in " ".join(capsys.readouterr().err.split())
    assert out.read_text() == first and out.with_suffix(".log").read_text().count("SKIPPED") == len(skipped)
