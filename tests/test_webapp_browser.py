"""The reference web app in headless Chromium: the page's answers are ``birdvision.predict``'s.

Needs Chromium (``apt-get install chromium``) and the npm packages of ``package.json``
(``npm install`` in the checkout: onnxruntime-web and playwright-core; or folders named by
``BIRDVISION_NODE_MODULES``, ``os.pathsep``-separated). Each test skips, saying which is missing,
only when one of them is absent. Run with ``python -m pytest -m browser``. Screenshots of the page
go to the test's tmp folder and, when ``BIRDVISION_SCREENSHOT_DIR`` is set, there too.

Measured bounds (Chromium 150, onnxruntime-web 1.30, the tiny test models):

- PNG (also RGBA on white, greyscale, EXIF-rotated): the page feeds exactly Pillow's pixels (their
  FNV-1a hashes are equal); what is left is onnxruntime-web's WebAssembly kernels against ONNX
  Runtime's native ones: max |Δp| 2.4e-7. Bound :data:`PNG_BOUND` = 1e-4 (the fp32 export gate's).
- JPEG (also EXIF-rotated): Chromium's libjpeg-turbo gave Pillow's pixels exactly here too (7 of 7),
  max |Δp| 2.7e-7. Another libjpeg-turbo version may round its upsampling or IDCT differently by a
  level; on this model noise of +-2 levels on every pixel moves p by at most 6e-4, so
  :data:`JPEG_BOUND` = 2e-3 allows that and nothing bigger (a wrong orientation, colour profile
  conversion or alpha handling moves p by far more).
- Recordings at the model's rate: the same samples, the high-pass computed in float64 against
  birdvision's float32: max |Δp| 3.0e-7, bound :data:`WAV_BOUND`. A 44.1 kHz stereo file is
  resampled by Chromium's decoder instead of birdvision's polyphase filter: max |Δp| 1.9e-3, bound
  :data:`RESAMPLED_BOUND`, and the same top-1 in every window.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().parent / "browser" / "drive_page.cjs"
PNG_BOUND = 1e-4
JPEG_BOUND = 2e-3
WAV_BOUND = 1e-4
RESAMPLED_BOUND = 1e-2


def browser_tools() -> dict[str, str]:
    """Node, Chromium, playwright-core's node_modules and onnxruntime-web's dist/; skips the test naming what is
    missing (and only then)."""
    missing = []
    node = shutil.which("node")
    if not node:
        missing.append("node (apt-get install nodejs)")
    chromium = os.environ.get("BIRDVISION_CHROMIUM") or next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
    if not chromium:
        missing.append("chromium (apt-get install chromium, or BIRDVISION_CHROMIUM=PATH)")
    folders = [Path(p) for p in os.environ.get("BIRDVISION_NODE_MODULES", "").split(os.pathsep) if p]
    folders.append(REPO / "node_modules")
    pw = next((f for f in folders if (f / "playwright-core" / "package.json").is_file()), None)
    ort = next((f / "onnxruntime-web" / "dist" for f in folders
                if (f / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs").is_file()), None)
    where = ", ".join(str(f) for f in folders)
    if pw is None:
        missing.append(f"playwright-core (npm install, in the checkout; looked in {where})")
    if ort is None:
        missing.append(f"onnxruntime-web (npm install, in the checkout; looked in {where})")
    if missing:
        pytest.skip("browser test needs " + "; ".join(missing))
    return {"node": node, "chromium": chromium, "node_modules": str(pw), "ort_dir": str(ort)}


def run_page(tools: dict[str, str], model_dir: Path, selections: list[list[Path]], screenshot: Path) -> dict:
    """Serve ``model_dir`` with birdvision.serve's server on a free port, choose each selection of files in the
    page in turn, and return what the page answered (its results JSON, console errors, status)."""
    from birdvision.webapp.server import make_server, serve_in_thread, url_of

    server = make_server(model_dir, tools["ort_dir"], port=0)
    serve_in_thread(server)
    try:
        opts = {"url": url_of(server), "files": [[str(f) for f in s] for s in selections],
                "chromium": tools["chromium"], "screenshot": str(screenshot),
                # a real model on 2 cores answers a few photos a second: the wait grows with the files chosen
                "timeout_ms": 120_000 + 1_000 * sum(len(s) for s in selections)}
        proc = subprocess.run([tools["node"], str(DRIVER), json.dumps(opts)], capture_output=True, text=True,
                              timeout=300 + 2 * sum(len(s) for s in selections), env={**os.environ, "NODE_PATH": tools["node_modules"]})
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert "driver_error" not in out, out
    if dirs := os.environ.get("BIRDVISION_SCREENSHOT_DIR"):
        Path(dirs).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(dirs) / screenshot.name)
    assert screenshot.stat().st_size > 1000
    assert out["state"] == "ready" and not out["page_errors"] and not out["console_errors"], out
    assert out["cross_origin_isolated"]  # COOP/COEP headers: the threaded WebAssembly build may run
    return out


# ----------------------------------------------------------------------------- photos


def fnv1a(a: np.ndarray) -> str:
    """The page's ``pixels_fnv1a``: FNV-1a (32 bit) of the uint8 RGB bytes fed to the model."""
    h = 0x811C9DC5
    for b in a.tobytes():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


def _photos(demo: Path, folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Demo photos re-saved as PNGs of odd sizes and kinds (exact comparisons) and as JPEGs (looser)."""
    folder.mkdir()
    src = sorted((demo / "test").rglob("*.jpg"))
    sizes = [(300, 200), (33, 31), (640, 480), (7, 90), (257, 257), (120, 45)]
    png, jpeg = {}, {}
    for i, (f, size) in enumerate(zip(src, sizes, strict=False)):
        im = Image.open(f).convert("RGB").resize(size, Image.BICUBIC)
        png[f"plain{i}.png"] = p = folder / f"plain{i}.png"
        im.save(p)
        jpeg[f"photo{i}.jpg"] = p = folder / f"photo{i}.jpg"
        im.save(p, quality=90)
    base = Image.open(src[-1]).convert("RGB").resize((160, 90), Image.BICUBIC)
    rgba = base.convert("RGBA")  # transparency from opaque to clear across the photo: composited on white
    rgba.putalpha(Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(base.size))
    png["alpha.png"] = folder / "alpha.png"
    rgba.save(png["alpha.png"])
    png["grey.png"] = folder / "grey.png"
    base.convert("L").save(png["grey.png"])
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    png["rotated.png"] = folder / "rotated.png"
    base.save(png["rotated.png"], exif=exif)
    jpeg["rotated.jpg"] = folder / "rotated.jpg"
    base.save(jpeg["rotated.jpg"], quality=90, exif=exif)
    return png, jpeg


def test_page_classifies_photos_like_predict(tmp_path, demo_photos):
    tools = browser_tools()
    from birdvision import load
    from birdvision.data.photos.decode import load_rgb
    from birdvision.export import main as export_main
    from birdvision.runs.checkpoint import update_hparams
    from tests._bird_runs import make_run

    run = make_run(tmp_path / "run", demo_photos, head_scale=1000.0)  # decisive: best probabilities 0.6 to 1
    # Decisions as evaluate stores them: a threshold per class (None: the default) and abstention.
    update_hparams(run / "checkpoints" / "best.ckpt", thresholds={"values": [0.6, None, 0.9]},
                   abstain={"threshold": 0.85, "score": "max_prob"})
    assert export_main([f"ckpt={run}", "format=onnx", f"output_dir={tmp_path / 'export'}"]) == 0
    png, jpeg = _photos(demo_photos, tmp_path / "photos")
    (tmp_path / "photos" / "notes.txt").write_text("not a photo\n")
    bad = tmp_path / "photos" / "broken.png"
    bad.write_bytes(png["plain0.png"].read_bytes()[:60])  # a PNG cut short
    out = run_page(tools, tmp_path / "export", [[*png.values(), *jpeg.values()], [bad, tmp_path / "photos" / "notes.txt"]],
                   tmp_path / "webapp_photos.png")

    predictor = load(tmp_path / "export" / "model.onnx")
    page = {r["file"]: r for r in out["results"]}
    assert len(page) == len(png) + len(jpeg) + 2
    worst = {"png": 0.0, "jpeg": 0.0}
    decisions = set()
    same_pixels = {"png": [], "jpeg": []}
    for kind, files in (("png", png), ("jpeg", jpeg)):
        for name, path in files.items():
            r = page[name]
            want = predictor.predict_batch([path])[0]
            got = np.asarray(r["probabilities"], dtype=np.float64)
            assert r["top1"] == predictor.predict(path, top_k=1)[0][0], name
            worst[kind] = max(worst[kind], float(np.abs(got - want).max()))
            same_pixels[kind].append(r["pixels_fnv1a"] == fnv1a(np.asarray(load_rgb(path))))
            if kind == "png":  # same pixels: the same decisions as predict (thresholds, abstention)
                rows = predictor.decide(want[None], top_k=5, always_top1=False)[0]
                assert [s for s, _ in r["reported"]] == [s for s, _ in rows], name
                decisions.add(r["reported"][0][0])
    print(f"\nphotos: max |dp| PNG {worst['png']:.2e}, JPEG {worst['jpeg']:.2e}; pixels equal to Pillow's: "
          f"PNG {sum(same_pixels['png'])}/{len(png)}, JPEG {sum(same_pixels['jpeg'])}/{len(jpeg)}")
    assert all(same_pixels["png"])  # EXIF rotation, white under transparency, greyscale: Pillow's pixels exactly
    assert worst["png"] <= PNG_BOUND and worst["jpeg"] <= JPEG_BOUND
    assert "unknown" in decisions and len(decisions) >= 2  # both sides of the abstention rule were exercised
    rotated = Image.open(png["rotated.png"])
    assert (page["rotated.png"]["width"], page["rotated.png"]["height"]) == (rotated.height, rotated.width)
    assert page["notes.txt"]["error"] == "notes.txt: not an image this browser can decode (this model classifies photos)"
    assert page["broken.png"]["error"].startswith("broken.png: not an image")
    assert len(out["error_messages"]) == 2  # shown on the page, not only in the JSON


# ----------------------------------------------------------------------------- recordings

SR = 16000


def _song(seconds: float, sr: int, seed: int, channels: int = 1) -> np.ndarray:
    """Sweeps changing every half second plus noise (windows get different answers); [T] or [T, channels]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f = 600 + 2500 * ((t * 2 + seed).astype(int) % 5) / 4
    x = 0.4 * np.sin(2 * np.pi * f * t * (1 + 0.2 * (t % 0.5))) + 0.3 * np.sin(2 * np.pi * 80 * t)  # + hum
    cols = [x + 0.05 * rng.standard_normal(len(t)) for _ in range(channels)]
    return np.stack(cols, 1).astype(np.float32) if channels > 1 else cols[0].astype(np.float32)


def test_page_classifies_recordings_window_by_window_like_predict(tmp_path):
    tools = browser_tools()
    import torch

    from birdvision import load
    from birdvision.data.manifest import Sample, write_manifest
    from birdvision.export import main as export_main
    from birdvision.prediction.grid import WindowGrid, stream_windows
    from tests.conftest import tiny_calls_classifier

    m = tiny_calls_classifier(SR)  # 1 s windows, 300 Hz high-pass
    with torch.no_grad():  # sharper still, so the probabilities react to the samples (best ones 0.5 to 1)
        m.net.classifier[1].weight.mul_(25.0)
    ck = tmp_path / "calls.ckpt"
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict()}, ck)
    clips = []
    for i, label in enumerate(m.hparams["classes"]):
        p = tmp_path / "clips" / f"{label}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(p, _song(1.5, SR, i), SR)
        clips.append(Sample(path=str(p), label=label, split="valid", group=str(p)))
    manifest = write_manifest(tmp_path / "manifest.csv", clips)
    assert export_main([f"ckpt={ck}", "format=onnx", f"output_dir={tmp_path / 'export'}",
                        f"parity.data={manifest}"]) == 0
    rec = tmp_path / "recordings"
    rec.mkdir()
    same_rate = rec / "song16k.wav"  # 3.4 s: three whole windows and a zero-padded 0.4 s one
    sf.write(same_rate, _song(3.4, SR, 3), SR, subtype="FLOAT")
    stereo = rec / "song44k_stereo.wav"  # resampled and mixed by the page
    sf.write(stereo, _song(2.5, 44100, 4, channels=2), 44100, subtype="PCM_16")
    (rec / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n not audio")
    out = run_page(tools, tmp_path / "export", [[same_rate, stereo, rec / "photo.png"]], tmp_path / "webapp_calls.png")

    predictor = load(tmp_path / "export" / "model.onnx")
    page = {r["file"]: r for r in out["results"]}
    grid = WindowGrid.from_seconds(SR, 1.0)
    worst = {}
    for f in (same_rate, stereo):
        wins = [(s, v, w.copy()) for s, v, w in stream_windows(f, grid, highpass_hz=300.0)]
        want = predictor.predict_batch(np.stack([w for _, _, w in wins]))
        got = page[f.name]["windows"]
        assert [(w["start_s"], w["end_s"]) for w in got] == [(s / SR, (s + v) / SR) for s, v, _ in wins]
        probs = np.asarray([w["probabilities"] for w in got])
        assert (probs.argmax(1) == want.argmax(1)).all(), f.name
        worst[f.name] = float(np.abs(probs - want).max())
        if f is same_rate:
            rows = predictor.decide(want, top_k=1)
            assert [[s for s, _ in w["reported"]] for w in got] == [[s for s, _ in r] for r in rows]
    print(f"\nrecordings: max |dp| at the model's rate {worst[same_rate.name]:.2e}, "
          f"44.1 kHz stereo (Chromium's resampler) {worst[stereo.name]:.2e}")
    assert worst[same_rate.name] <= WAV_BOUND and worst[stereo.name] <= RESAMPLED_BOUND
    assert len(page[same_rate.name]["windows"]) == 4 and page[same_rate.name]["windows"][-1]["end_s"] == 3.4
    assert page["photo.png"]["error"] == "photo.png: not a recording this browser can decode (this model classifies calls)"


# ----------------------------------------------------------------------------- real photos


@pytest.mark.realdata
def test_page_on_real_photos_agrees_with_predict(realdata, tmp_path):
    """The page on real test photos (``BIRDVISION_WEB_EXPORT``: an export folder; ``BIRDVISION_WEB_N`` photos,
    default 50, spread over the species): writes ``browser.csv`` (``file,species``: app_parity's
    ``browser_csv=``, also to ``BIRDVISION_WEB_CSV`` when set) and checks the agreement through app_parity."""
    tools = browser_tools()
    export = os.environ.get("BIRDVISION_WEB_EXPORT")
    if not export or not (Path(export) / "model.onnx").is_file():
        pytest.skip("set BIRDVISION_WEB_EXPORT to an export folder (model.onnx + model.json) of a photo model")
    from birdvision.exporting.app_parity import app_parity, photo_samples
    from birdvision.exporting.metadata import read_model_json

    export = Path(export)
    classes = read_model_json(export)["labels"]
    samples, origin = photo_samples(realdata / "photos", ["test"], classes)
    n = int(os.environ.get("BIRDVISION_WEB_N", "50"))
    step = max(1, len(samples) // n)
    samples = samples[::step][:n]  # every step-th photo: all species, not the first few folders
    out = run_page(tools, export, [[s.path for s in samples]], tmp_path / "webapp_real.png")
    assert len(out["results"]) == len(samples)
    csv_path = Path(os.environ.get("BIRDVISION_WEB_CSV") or tmp_path / "browser.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "species", "confidence"])
        for s, r in zip(samples, out["results"], strict=True):  # the page answers in the order it was given
            assert r["file"] == s.path.name and "error" not in r, r
            w.writerow([str(s.path), r["top1"], f"{r['top1_probability']:.6f}"])
    from birdvision.data.photos.decode import load_rgb

    same = sum(r["pixels_fnv1a"] == fnv1a(np.asarray(load_rgb(s.path))) for s, r in zip(samples, out["results"],
                                                                                         strict=True))
    rep = app_parity(export / "model.onnx", samples, platforms="pillow,browser", browser_csv=str(csv_path),
                     origin=origin)
    b = rep["platforms"]["browser"]
    print(f"\nreal photos: {rep['n']} from {origin}; browser top-1 agreement with predict {b['top1_agreement']:.4f} "
          f"(accuracy {b['accuracy']['all']}, predict's {rep['reference']['accuracy']['all']}); pixels equal to "
          f"Pillow's in {same}/{len(samples)}; CSV {csv_path}")
    assert b["undecodable"] == 0 and b["top1_agreement"] >= 0.99
