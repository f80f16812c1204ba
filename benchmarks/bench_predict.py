"""Predicting over archives: real-time factors, whole-command speed, photos per second and peak memory.

    flock /tmp/bench.lock python benchmarks/bench_predict.py \\
        [--calls RUN_OR_CKPT] [--photos RUN_OR_CKPT] [--threads 0] [--batch N] [--work /tmp/bench_predict]

Prints, all measured in this one run, one engine at a time (each in its own process):

1. a 1-hour recording (44.1 kHz mono WAV, so decoding includes resampling): the predict loop
   (decode + resample + high-pass + windows + model, model load excluded) as x real time for
   the checkpoint (PyTorch), ONNX fp32 and ONNX INT8; model load; the model alone per window;
   peak resident memory of the process;
2. the whole ``python -m birdvision.predict`` command on a 5-minute file with the ONNX models:
   wall time from launch to exit as x real time, and the start-up (wall time minus the predict
   loop the run log reports: interpreter, imports, option parsing, model load, table writing);
3. photos per second over 2,000 photos at the model's size (224 px for effnet_lite0), fp32 and
   INT8: the predict loop (JPEG decode + resize + model + rows) and the whole command (start-up
   included), peak memory.

With ``../shared/realdata`` beside the checkout, the recording is real recordings laid end to
end (looped to an hour) and the photos are real photos (repeated to 2,000); without it, the
recording is the generated demo calls and the photos the demo photos. ``--calls`` / ``--photos``
name trained runs (an effnet_lite0_calls run, an effnet_lite0 photo run); without them,
untrained effnet_lite0 checkpoints with the recipes' preprocessing are made (speed does not
depend on the weights; INT8 accuracy then means nothing and its parity gate may fail, in which
case the ``*.FAILED.onnx`` file is timed and flagged). Exports are made once with
``python -m birdvision.export format=onnx,int8`` and reused.

Timings are only meaningful on an otherwise idle machine: the script waits while
``/tmp/cpu_busy_audit`` exists before each measurement and prints the load average beside
each number.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's birdvision, whatever is installed
REALDATA = ROOT.parent / "shared" / "realdata"
BUSY = Path("/tmp/cpu_busy_audit")
SR_FILE = 44100


def wait_until_quiet() -> None:
    """Hold off while another engineer's measurement marks the CPU busy."""
    waited = 0.0
    while BUSY.exists():
        time.sleep(2.0)
        waited += 2.0
    if waited:
        print(f"  (waited {waited:.0f} s for {BUSY} to go)", flush=True)


def load_avg() -> str:
    return f"{os.getloadavg()[0]:.1f}"


# ----------------------------------------------------------------------------- inputs and models


def untrained(work: Path, recipe: str, data_kind: str) -> Path:
    """An untrained effnet_lite0 checkpoint with ``recipe``'s preprocessing, plus a manifest for the export gate."""
    import torch

    from birdvision.config import FitConfig, load_config
    from birdvision.data.manifest import Sample, write_manifest
    from birdvision.training.module import BirdClassifier

    run = work / f"untrained_{recipe}"
    ck = run / "checkpoints" / "best.ckpt"
    if ck.is_file():
        return run
    cfg = load_config(FitConfig, [f"recipe={recipe}"], preset_key="recipe", preset_dir="recipes")
    if data_kind == "audio":
        from birdvision.data.audio.demo import make_demo_calls
        from birdvision.data.audio.pipeline import audio_preprocess

        pre = audio_preprocess(cfg)
        root = make_demo_calls(work / "calls", n_species=4, recordings_per_species=4, seconds=6.0)
        files = sorted(root.rglob("*.wav"))
        in_chans = pre["in_chans"]
    else:
        from birdvision.data.photos.demo import make_demo_photos
        from birdvision.models import get_spec
        from birdvision.spec import ImageSpec

        spec = get_spec("efficientnet_lite0")
        pre = ImageSpec(224, spec.mean, spec.std, spec.interpolation).to_dict()
        root = make_demo_photos(work / "photos_demo", n_species=4, per_split=(8, 8, 8), size=224)
        files = sorted((root / "valid").rglob("*.jpg"))
        in_chans = 3
    classes = sorted({p.parent.name for p in files})
    torch.manual_seed(0)
    m = BirdClassifier("efficientnet_lite0", classes, in_chans=in_chans, preprocess=pre, load_weights=False)
    ck.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict()}, ck)
    write_manifest(run / "manifest.csv", [Sample(path=str(p), label=p.parent.name, split="valid", group=str(p))
                                          for p in files])
    return run


def export(run: Path, out: Path, *extra: str) -> dict[str, Path]:
    """``model.onnx`` and the INT8 file (``model.int8.onnx``, or its ``.FAILED`` twin when the gate refused it)."""
    if not (out / "model.onnx").is_file() or not any(out.glob("model.int8*.onnx")):
        cmd = [sys.executable, "-m", "birdvision.export", f"ckpt={run}", "format=onnx,int8", f"output_dir={out}", *extra]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if r.returncode not in (0, 1) or not (out / "model.onnx").is_file():
            raise SystemExit(f"export of {run} failed:\n{r.stderr[-2000:]}")
    int8 = out / "model.int8.onnx"
    if not int8.is_file():
        int8 = out / "model.int8.FAILED.onnx"
    return {"fp32": out / "model.onnx", "int8": int8}


def int8_parity(model: Path) -> dict:
    name = "parity.int8.FAILED.json" if ".FAILED." in model.name else "parity.int8.json"
    p = model.with_name(name)
    return json.loads(p.read_text()) if p.is_file() else {}


def write_recording(wav: Path, seconds: float) -> str:
    """A mono 44.1 kHz PCM-16 WAV of ``seconds``: real recordings end to end (looped), else demo calls."""
    import soundfile as sf

    from birdvision.data.audio.io import AudioError, load

    if wav.is_file() and abs(sf.info(str(wav)).duration - seconds) < 1:
        return wav.with_suffix(".txt").read_text() if wav.with_suffix(".txt").is_file() else "?"
    src = REALDATA / "audio"
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".wav", ".mp3", ".flac", ".ogg")) \
        if src.is_dir() else []
    what = f"{len(files)} real recordings from {src}, end to end"
    if not files:
        from birdvision.data.audio.demo import make_demo_calls

        files = sorted(make_demo_calls(wav.parent / "calls", n_species=4, recordings_per_species=4,
                                       seconds=6.0).rglob("*.wav"))
        what = "generated demo calls (no realdata)"
    n = int(seconds * SR_FILE)
    wav.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(wav), "w", SR_FILE, 1, subtype="PCM_16") as f:
        done = 0
        while done < n:
            for p in files:
                try:
                    x = load(p, SR_FILE)[0]
                except AudioError:
                    continue
                x = x[: n - done]
                f.write(np.clip(x, -1, 1))
                done += len(x)
                if done >= n:
                    break
    wav.with_suffix(".txt").write_text(what)
    return what


def photo_folder(folder: Path, n: int) -> str:
    """``n`` photos (real ones, repeated when fewer) in ``folder``."""
    have = sorted(folder.rglob("*.jpg")) if folder.is_dir() else []
    src = REALDATA / "photos"
    note = folder.with_suffix(".txt")  # beside the folder, so predict does not pass it over as a non-photo
    if len(have) == n:
        return note.read_text() if note.is_file() else "?"
    shutil.rmtree(folder, ignore_errors=True)
    photos = sorted(src.rglob("*.jpg")) if src.is_dir() else []
    what = f"real photos from {src} ({len(photos)} distinct, repeated to {n})"
    if not photos:
        from birdvision.data.photos.demo import make_demo_photos

        photos = sorted(make_demo_photos(folder.parent / "photos_demo_src", n_species=4, per_split=(20, 5, 5),
                                         size=224).rglob("*.jpg"))
        what = f"generated demo photos ({len(photos)} distinct, repeated to {n})"
    for i in range(n):
        p = photos[i % len(photos)]
        dst = folder / p.parent.name / f"{i:05d}_{p.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    note.write_text(what)
    return what


# ----------------------------------------------------------------------------- measurements


def run_process(cmd: list[str]) -> tuple[float, float, str, str]:
    """(wall seconds, peak RSS MB of that process, stdout, stderr) of one process, run alone."""
    import tempfile

    wait_until_quiet()
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=fo, stderr=fe, text=True)
        _, status, usage = os.wait4(p.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN would pool them all)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({p.returncode}):\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out, err


def worker(engine: str, model: str, wav: str, warm: str, threads: int, batch: int) -> dict:
    """One engine in this process: load, warm up on a short file, then the predict loop over the recording."""
    t0 = time.perf_counter()
    if engine == "torch":
        import torch  # noqa: F401 - the checkpoint path's real cost: PyTorch is imported

    from birdvision.prediction.api import load
    from birdvision.prediction.inputs import find_inputs
    from birdvision.prediction.options import PredictConfig
    from birdvision.prediction.run import predict_files

    pred = load(model, threads=threads, spinning=False)  # as predict loads it (decoding runs beside the model)
    load_s = time.perf_counter() - t0
    cfg = PredictConfig(batch_size=batch, threads=threads)
    predict_files(pred, find_inputs(warm, audio=True), cfg)  # warm-up: first runs allocate
    res = predict_files(pred, find_inputs(wav, audio=True), cfg)
    x = (0.1 * np.random.default_rng(0).standard_normal((batch, pred.input_shape[0]))).astype(np.float32)
    pred.predict_batch(x)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        pred.predict_batch(x)
        ts.append(time.perf_counter() - t)
    return {"engine": engine, "audio_s": res.audio_seconds, "predict_s": res.predict_s, "load_s": load_s,
            "windows": res.items, "model_ms_per_window": 1000 * min(ts) / batch}


def log_number(log: str, pattern: str) -> float:
    m = re.search(pattern, log)
    if not m:
        raise SystemExit(f"could not find {pattern!r} in the run log:\n{log}")
    return float(m.group(1))


def predict_command(model: Path, inp: Path, out: Path, *extra: str) -> dict:
    """The whole CLI, launch to exit; the predict loop's own time comes from its run log."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in (out, out.with_suffix(".log"), out.with_suffix(".journal")):
        stale.unlink(missing_ok=True)
    wall, peak, _, _ = run_process([sys.executable, "-m", "birdvision.predict", f"model={model}", f"input={inp}",
                                    f"output={out}", *extra])
    return {"wall_s": wall, "log": out.with_suffix(".log").read_text(), "peak_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", help="a trained spectrogram run (effnet_lite0_calls); default: untrained")
    ap.add_argument("--photos", help="a trained effnet_lite0 photo run (224 px); default: untrained")
    ap.add_argument("--threads", type=int, default=0, help="predict's threads= (0: its default for this machine)")
    ap.add_argument("--batch", type=int, default=None, help="predict's batch_size= (default: predict's own)")
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--n-photos", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_predict"))
    ap.add_argument("--skip", default="", help="comma list of sections to skip: hour,command,photos")
    ap.add_argument("--worker", nargs=5, metavar=("ENGINE", "MODEL", "WAV", "WARM", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        engine, model, wav, warm, threads = a.worker
        print(json.dumps(worker(engine, model, wav, warm, int(threads), a.batch)))
        return
    if a.batch is None:
        from birdvision.prediction.options import PredictConfig

        a.batch = PredictConfig().batch_size
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, a.skip.split(",")))
    threads = str(a.threads)
    report: dict = {"threads": a.threads, "batch": a.batch, "cpus": os.cpu_count()}
    print(f"birdvision predict benchmark: {os.cpu_count()} cores, threads={a.threads} (0 = predict's default), "
          f"batch {a.batch}", flush=True)

    calls_run = Path(a.calls) if a.calls else untrained(work, "effnet_lite0_calls", "audio")
    calls = export(calls_run, work / "calls_export", "parity.split=test", "parity.n=100000")
    cal = int8_parity(calls["int8"])
    report["calls_int8_parity"] = {k: cal.get(k) for k in ("n", "acc_torch", "acc_export", "acc_drop", "top1_agreement",
                                                           "passed")}
    print(f"calls model: {calls_run}; INT8 parity on {cal.get('n')} windows: accuracy {cal.get('acc_torch')} -> "
          f"{cal.get('acc_export')} (drop {100 * (cal.get('acc_drop') or 0):.2f} points), top-1 agreement "
          f"{cal.get('top1_agreement')}, gate {'passed' if cal.get('passed') else 'FAILED'}", flush=True)
    hour, warm = work / "recording_1h.wav", work / "recording_5min.wav"
    what = write_recording(hour, a.hours * 3600)
    write_recording(warm, 300)
    print(f"recordings: {what}", flush=True)

    if "hour" not in skip:
        print(f"\n1. {a.hours:g} h recording at 44.1 kHz: the predict loop (model load excluded)", flush=True)
        print(f"{'engine':12s} {'x real time':>11s} {'loop s':>7s} {'load s':>7s} {'model ms/win':>12s} {'peak MB':>8s} load")
        rows = []
        for engine, model in (("checkpoint", calls_run), ("onnx_fp32", calls["fp32"]), ("onnx_int8", calls["int8"])):
            cmd = [sys.executable, __file__, "--batch", str(a.batch), "--worker", "torch" if engine == "checkpoint"
                   else "onnx", str(model), str(hour), str(warm), threads]
            wait_until_quiet()
            la = load_avg()
            _, peak, out, _ = run_process(cmd)
            r = json.loads(out.strip().splitlines()[-1]) | {"name": engine, "load_avg": la, "peak_mb": peak}
            rows.append(r)
            print(f"{engine:12s} {r['audio_s'] / r['predict_s']:11.0f} {r['predict_s']:7.1f} {r['load_s']:7.2f} "
                  f"{r['model_ms_per_window']:12.2f} {r['peak_mb']:8.0f} {la}", flush=True)
        report["hour"] = rows

    if "command" not in skip:
        print("\n2. whole command on the 5-minute file (python -m birdvision.predict model=... input=FILE)", flush=True)
        print(f"{'model':12s} {'x real time':>11s} {'wall s':>7s} {'start-up s':>10s} {'loop s':>7s} {'peak MB':>8s} load")
        rows = []
        for name, model in (("onnx_fp32", calls["fp32"]), ("onnx_int8", calls["int8"])):
            la = load_avg()
            r = predict_command(model, warm, work / "out" / f"5min_{name}.csv", f"threads={threads}",
                                f"batch_size={a.batch}")
            loop = log_number(r["log"], r"audio: [\d.]+ s in ([\d.]+) s")
            row = {"name": name, "wall_s": r["wall_s"], "loop_s": loop, "startup_s": r["wall_s"] - loop,
                   "x_real_time": 300.0 / r["wall_s"], "peak_mb": r["peak_mb"], "load_avg": la}
            rows.append(row)
            print(f"{name:12s} {row['x_real_time']:11.0f} {row['wall_s']:7.2f} {row['startup_s']:10.2f} {loop:7.2f} "
                  f"{row['peak_mb']:8.0f} {la}", flush=True)
        report["command"] = rows

    if "photos" not in skip:
        photos_run = Path(a.photos) if a.photos else untrained(work, "effnet_lite0", "photos")
        pm = export(photos_run, work / "photos_export")
        pp = int8_parity(pm["int8"])
        folder = work / f"photos_{a.n_photos}"
        what = photo_folder(folder, a.n_photos)
        print(f"\n3. {a.n_photos} photos ({what}), JPEG files to the CSV; photo model {photos_run}; INT8 parity: "
              f"accuracy {pp.get('acc_torch')} -> {pp.get('acc_export')}, gate "
              f"{'passed' if pp.get('passed') else 'FAILED'}", flush=True)
        print(f"{'model':12s} {'photos/s loop':>13s} {'photos/s cmd':>12s} {'wall s':>7s} {'peak MB':>8s} load")
        rows = []
        for name, model in (("checkpoint", photos_run), ("onnx_fp32", pm["fp32"]), ("onnx_int8", pm["int8"])):
            la = load_avg()
            r = predict_command(model, folder, work / "out" / f"photos_{name}.csv", f"threads={threads}",
                                f"batch_size={a.batch}")
            loop = log_number(r["log"], r"photos: \d+ in ([\d.]+) s")
            row = {"name": name, "loop_photos_s": a.n_photos / loop, "cmd_photos_s": a.n_photos / r["wall_s"],
                   "wall_s": r["wall_s"], "peak_mb": r["peak_mb"], "load_avg": la}
            rows.append(row)
            print(f"{name:12s} {row['loop_photos_s']:13.0f} {row['cmd_photos_s']:12.0f} {r['wall_s']:7.1f} "
                  f"{row['peak_mb']:8.0f} {la}", flush=True)
        report["photos"] = rows
        report["photos_int8_parity"] = {k: pp.get(k) for k in ("n", "acc_torch", "acc_export", "acc_drop", "passed")}
    (work / "results.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults: {work / 'results.json'}")


if __name__ == "__main__":
    main()
