"""Prediction throughput on recordings: seconds of audio per second of wall time, PyTorch vs ONNX.

    python benchmarks/bench_predict.py [--minutes 10] [--threads 2] [--batch 16] [--work /tmp/bench_predict]

Builds (once, cached in --work) an untrained efficientnet_b0 checkpoint with the exact
``recipes/effnet_b0_calls.yaml`` preprocessing (5 s windows at 32 kHz, 128 mels, high-pass
1400 Hz), exports it with ``birdvision.export`` (model.onnx: waveform in, mel frontend in
the graph; model.bare.onnx: the network alone), writes a synthetic recording of
``--minutes`` (44.1 kHz, so decoding includes resampling), then times
``birdvision.prediction`` end to end for each engine in its own subprocess, pinned to
``--threads`` intra-op threads and run one after the other (never concurrently).

Columns: the whole predict loop (decode + resample + high-pass + windows + model, model
load excluded) as x real time, and the same with the model load; then where the time
goes: decoding/windowing alone (a model that returns constants), and the model alone on
a ready batch, split into frontend and network for ONNX (model.onnx vs model.bare.onnx)
and for PyTorch (torch.stft frontend vs network).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build(work: Path) -> tuple[Path, Path, Path]:
    """Checkpoint, export and recording in ``work`` (reused when present)."""
    import torch

    from birdvision.config import FitConfig, load_config
    from birdvision.data.audio_pipeline import audio_preprocess
    from birdvision.data.demo_calls import make_demo_calls
    from birdvision.data.manifest import Sample, write_manifest
    from birdvision.module import BirdClassifier

    work.mkdir(parents=True, exist_ok=True)
    ckpt, onnx_path, wav = work / "effnet_b0_calls.ckpt", work / "export" / "model.onnx", work / "recording.wav"
    calls = make_demo_calls(work / "calls", n_species=4, recordings_per_species=4, seconds=6.0)
    classes = sorted(p.name for p in calls.iterdir() if p.is_dir())
    if not ckpt.is_file():
        cfg = load_config(FitConfig, ["recipe=effnet_b0_calls"], preset_key="recipe", preset_dir="recipes")
        pre = audio_preprocess(cfg)
        torch.manual_seed(0)
        m = BirdClassifier("efficientnet_b0", classes, in_chans=pre["in_chans"], preprocess=pre)
        torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict()}, ckpt)
    if not onnx_path.is_file():
        manifest = write_manifest(work / "manifest.csv", [
            Sample(path=str(p), label=p.parent.name, split="valid", group=str(p)) for p in sorted(calls.rglob("*.wav"))])
        subprocess.run([sys.executable, "-m", "birdvision.export", f"ckpt={ckpt}", "format=onnx",
                        f"output_dir={onnx_path.parent}", f"parity.data={manifest}", "parity.n=16"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ckpt, onnx_path, wav


def write_recording(wav: Path, minutes: float, calls: Path) -> None:
    import soundfile as sf

    from birdvision.data.audio import load

    if wav.is_file() and abs(sf.info(str(wav)).duration - minutes * 60) < 1:
        return
    sr = 44100
    parts = [load(p, sr)[0] for p in sorted(calls.rglob("*.wav"))]
    one = np.concatenate(parts)
    n = int(minutes * 60 * sr)
    with sf.SoundFile(str(wav), "w", sr, 1, subtype="PCM_16") as f:
        done = 0
        while done < n:
            chunk = one[: n - done]
            f.write(chunk)
            done += len(chunk)


def worker(engine: str, model: str, wav: str, threads: int, batch: int, bare: str | None) -> dict:
    """One engine, in this process: end to end, decode alone, model alone (frontend / network)."""
    import torch

    torch.set_num_threads(threads)
    from birdvision.inference import load
    from birdvision.prediction.inputs import find_inputs
    from birdvision.prediction.options import PredictConfig
    from birdvision.prediction.run import predict_files

    t0 = time.perf_counter()
    pred = load(model, threads=threads)
    load_s = time.perf_counter() - t0
    cfg = PredictConfig(batch_size=batch, threads=threads)
    inputs = find_inputs(wav, audio=True)
    predict_files(pred, inputs, cfg)  # warm-up (first ORT runs allocate)
    res = predict_files(pred, inputs, cfg)
    out = {"engine": engine, "audio_s": res.audio_seconds, "predict_s": res.predict_s, "load_s": load_s,
           "windows": res.items}

    class Constant:  # decoding + windowing alone
        is_audio, classes, preprocess = True, pred.classes, pred.preprocess

        def predict_batch(self, x):
            return np.full((len(x), len(self.classes)), 1.0 / len(self.classes), np.float32)

    out["decode_s"] = predict_files(Constant(), inputs, cfg).predict_s

    x = (0.1 * np.random.default_rng(0).standard_normal((batch, pred.input_shape[0]))).astype(np.float32)

    def best(fn, n=5):
        fn()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts) / batch

    out["model_ms_per_window"] = 1000 * best(lambda: pred.predict_batch(x))
    if engine == "torch":
        with torch.no_grad():
            mel = pred._frontend(torch.from_numpy(x))
            out["frontend_ms_per_window"] = 1000 * best(lambda: pred._frontend(torch.from_numpy(x)))
            with torch.inference_mode():
                out["network_ms_per_window"] = 1000 * best(lambda: pred._model(mel))
    elif bare:
        from birdvision.exporting.runtime import make_session

        s = make_session(bare, threads=threads)
        with torch.no_grad():
            mel = pred._frontend(torch.from_numpy(x)).numpy()
        name = s.get_inputs()[0].name
        out["network_ms_per_window"] = 1000 * best(lambda: s.run(None, {name: mel}))
        out["frontend_ms_per_window"] = out["model_ms_per_window"] - out["network_ms_per_window"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_predict"))
    ap.add_argument("--worker", nargs=5, metavar=("ENGINE", "MODEL", "WAV", "THREADS", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--bare", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        engine, model, wav, threads, batch = a.worker
        print(json.dumps(worker(engine, model, wav, int(threads), int(batch), a.bare)))
        return
    ckpt, onnx_path, wav = build(a.work)
    write_recording(wav, a.minutes, a.work / "calls")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    results = []
    for engine, model in (("torch", ckpt), ("onnx", onnx_path)):
        cmd = [sys.executable, __file__, "--worker", engine, str(model), str(wav), str(a.threads), str(a.batch)]
        if engine == "onnx":
            cmd += ["--bare", str(onnx_path.with_name("model.bare.onnx"))]
        r = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(f"efficientnet_b0, 5 s windows at 32 kHz, {a.minutes:g} min recording at 44.1 kHz, "
          f"{a.threads} threads, batch {a.batch}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    head = (f"{'engine':7s} {'predict x rt':>12s} {'incl. load':>10s} {'decode x rt':>11s} "
            f"{'model ms/win':>12s} {'frontend':>8s} {'network':>8s}")
    print(head)
    for r in results:
        print(f"{r['engine']:7s} {r['audio_s'] / r['predict_s']:12.0f} {r['audio_s'] / (r['predict_s'] + r['load_s']):10.0f} "
              f"{r['audio_s'] / r['decode_s']:11.0f} {r['model_ms_per_window']:12.2f} "
              f"{r.get('frontend_ms_per_window', float('nan')):8.2f} {r.get('network_ms_per_window', float('nan')):8.2f}")
    (a.work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
