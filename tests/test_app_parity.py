"""App-side parity: model.onnx fed each platform's own decode (and resize) agrees with birdvision.predict."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdvision.data.photos.decode import DECODE_STEPS, load_rgb
from birdvision.export import main as export_main
from birdvision.exporting.app_parity import PLATFORMS, Platform, main, register_platform
from tests._bird_runs import make_run

HAS_CV2 = importlib.util.find_spec("cv2") is not None


@pytest.fixture(scope="module")
def exported(tmp_path_factory, demo_photos) -> Path:
    run = make_run(tmp_path_factory.mktemp("run"), demo_photos)
    out = tmp_path_factory.mktemp("export")
    assert export_main([f"ckpt={run}", "format=onnx", f"output_dir={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def app_photos(tmp_path_factory, demo_photos) -> Path:
    """The demo's valid and test photos re-saved at odd sizes and shapes (SPLIT/CLASS/photo.jpg), so resizes matter."""
    root = tmp_path_factory.mktemp("app_photos")
    sizes = [(300, 200), (33, 31), (640, 1000), (7, 90), (257, 257)]
    for split in ("valid", "test"):
        for i, f in enumerate(sorted((demo_photos / split).rglob("*.jpg"))):
            dst = root / split / f.parent.name / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            Image.open(f).convert("RGB").resize(sizes[i % len(sizes)], Image.BICUBIC).save(dst, quality=92)
    return root


def test_export_writes_app_parity_for_its_parity_photos(exported):
    rep = json.loads((exported / "app_parity.json").read_text())
    assert rep["passed"] and rep["n"] == 12 and rep["input"]["fixed_size"] is False
    assert rep["platforms"]["pillow"]["top1_agreement"] == 1.0 and rep["platforms"]["pillow"]["gate"]
    assert rep["platforms"]["pillow_bilinear"]["feeds"] == "the platform's resize to the model's size"
    assert "browser" not in rep["platforms"] and "browser" not in rep["skipped"]  # only with browser_csv=
    if HAS_CV2:
        assert rep["platforms"]["opencv"]["top1_agreement"] >= 0.99
    else:
        assert "cv2 is not installed" in rep["skipped"]["opencv"]
    card = json.loads((exported / "model.json").read_text())
    assert card["app_parity"]["passed"] and card["app_parity"]["platforms"]["pillow"]["top1_agreement"] == 1.0


def test_cli_on_a_photo_folder_with_odd_sizes(exported, app_photos, tmp_path, capsys):
    out = tmp_path / "rep.json"
    assert main([f"model={exported / 'model.onnx'}", f"data={app_photos}", "splits=valid,test", f"output={out}"]) == 0
    rep = json.loads(out.read_text())
    assert rep["n"] == 24 and rep["splits"] == {"test": 12, "valid": 12}
    assert set(rep["reference"]["accuracy"]) == {"all", "test", "valid"}
    pil = rep["platforms"]["pillow"]
    assert pil["top1_agreement"] == 1.0 and pil["max_abs_diff"] < 1e-5  # same decode, same graph
    assert pil["accuracy"] == rep["reference"]["accuracy"]
    for name in ("pillow_bilinear", "opencv_linear", "opencv_area"):
        if name in rep["platforms"]:
            assert rep["platforms"][name]["n"] == 24 and rep["platforms"][name]["undecodable"] == 0
    assert "pillow" in capsys.readouterr().err  # the console writes to stderr


def test_browser_hook_and_a_failing_platform(exported, app_photos, tmp_path, capsys):
    from birdvision.prediction.api import load

    p = load(exported / "model.onnx")
    photos = sorted(app_photos.rglob("*.jpg"))
    probs = p.predict_batch(photos)
    good, wrong = tmp_path / "browser.csv", tmp_path / "wrong.csv"
    for path, shift in ((good, 0), (wrong, 1)):
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "species"])
            for ph, pr in zip(photos, probs, strict=True):  # named as a web page would: SPLIT/CLASS/name
                w.writerow(["/".join(ph.parts[-3:]), p.classes[(int(pr.argmax()) + shift) % len(p.classes)]])
    out = tmp_path / "b.json"
    args = [f"model={exported / 'model.onnx'}", f"data={app_photos}", f"output={out}"]
    assert main([*args, "platforms=pillow,browser", f"browser_csv={good}"]) == 0
    assert json.loads(out.read_text())["platforms"]["browser"]["top1_agreement"] == 1.0
    assert main([*args, "platforms=browser", f"browser_csv={wrong}"]) == 0  # reported, not a gate
    assert json.loads(out.read_text())["platforms"]["browser"]["top1_agreement"] == 0.0

    register_platform(Platform("blank", "an app that sends a black frame", lambda path: np.zeros((9, 9, 3), np.uint8),
                               gate=True))
    try:
        assert main([*args, "platforms=pillow,blank"]) == 1
        assert "blank: top-1 agreement" in capsys.readouterr().err
    finally:
        PLATFORMS.pop("blank")
    assert main([*args, "platforms=nope"]) == 2


def _odd_photos(folder: Path) -> dict[str, Path]:
    """The awkward files apps meet: EXIF-rotated, transparent, CMYK, 16-bit, palette (with and without alpha)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    out = {}

    def at(name: str) -> Path:
        out[name] = folder / name
        return out[name]

    im = Image.fromarray(base)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(at("exif_rotated.jpg"), exif=exif, quality=95)
    alpha = np.dstack([base, np.tile((np.arange(60) * 4).astype(np.uint8), (40, 1))])
    Image.fromarray(alpha, "RGBA").save(at("transparent.png"))
    Image.fromarray(base).convert("CMYK").save(at("cmyk.jpg"), quality=95)
    Image.fromarray(rng.integers(0, 65536, (40, 60), dtype=np.uint16)).save(at("grey16.png"))
    Image.fromarray(base).convert("P", palette=Image.ADAPTIVE).save(at("palette.png"))
    Image.fromarray(base).convert("P", palette=Image.ADAPTIVE).save(at("palette_transparent.png"), transparency=0)
    Image.fromarray(base[..., 0]).save(at("grey.jpg"))
    return out


# Where the plain app decode differs from birdvision's, the step of model.json's decode list that says what to do.
DOCUMENTED = {"exif_rotated.jpg": "EXIF orientation", "transparent.png": "composite on opaque white",
              "palette_transparent.png": "composite on opaque white", "grey16.png": "16-bit greyscale: v >> 8"}


def test_odd_photos_agree_with_the_app_decode_or_the_difference_is_in_model_json(tmp_path, exported):
    card = json.loads((exported / "model.json").read_text())
    decode_steps = " ".join(card["preprocessing"]["decode"])
    assert card["preprocessing"]["decode"] == list(DECODE_STEPS)
    for name, path in _odd_photos(tmp_path).items():
        ours = np.asarray(load_rgb(path))
        app = np.asarray(Image.open(path).convert("RGB"))  # the acceptance app's decode
        same = app.shape == ours.shape and np.array_equal(app, ours)
        assert same != (name in DOCUMENTED), name
        if not same:
            assert DOCUMENTED[name] in decode_steps, name
    # following model.json's steps with Pillow gives birdvision's pixels exactly
    from PIL import ImageOps

    again = tmp_path / "again"
    again.mkdir()
    for name, path in _odd_photos(again).items():
        im = ImageOps.exif_transpose(Image.open(path))
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
        elif im.mode.startswith("I;16"):
            im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8))
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(load_rgb(path))), name


@pytest.mark.skipif(not HAS_CV2, reason="opencv-python-headless is an optional extra")
def test_opencv_decodes_odd_photos_as_model_json_says(tmp_path):
    import cv2

    for name, path in _odd_photos(tmp_path).items():
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        ocv = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        ours = np.asarray(load_rgb(path))
        diff = np.abs(ocv.astype(int) - ours.astype(int)).max() if ocv.shape == ours.shape else 255
        if name in ("transparent.png", "palette_transparent.png"):
            assert diff > 0  # OpenCV's IMREAD_COLOR drops alpha: model.json says to composite on white
        elif name == "cmyk.jpg":
            assert diff <= 1  # its libjpeg CMYK conversion is 1 level off Pillow's (model.json says so)
        else:
            assert diff == 0, name  # EXIF rotation, 16-bit >> 8, palette, grey: as birdvision


@pytest.mark.realdata
def test_app_parity_on_real_photos(realdata, tmp_path):
    """The acceptance measurement, on a few real photos per class of the real validation and test splits."""
    run = make_run(tmp_path / "run", realdata / "photos" / "valid", backbone="test_tiny", size=64)
    out = tmp_path / "export"
    assert export_main([f"ckpt={run}", "format=onnx", f"output_dir={out}", f"app_parity.data={realdata / 'photos'}",
                        "app_parity.splits=valid"]) == 0
    rep = json.loads((out / "app_parity.json").read_text())
    assert rep["n"] >= 100 and rep["platforms"]["pillow"]["top1_agreement"] >= 0.99
