"""App-side parity: the exported model fed the way apps feed it, against ``birdvision.predict``.

The parity gate (:mod:`birdvision.exporting.parity`) proves the file equals the checkpoint on
birdvision's own decoded pixels. An app decodes with its platform's library and may resize
with its own filter; this check measures what that costs. For every photo it runs
``model.onnx`` on each platform's pixels and compares the top-1 with birdvision's answer
(:func:`birdvision.prediction.api.load`, the engine of ``python -m birdvision.predict``), and
reports each platform's accuracy beside birdvision's.

Platforms (:data:`PLATFORMS`; :func:`register_platform` adds one):

- ``pillow``: ``Image.open(f).convert("RGB")`` (no EXIF rotation, alpha dropped), fed at its
  own size (the graph resizes);
- ``opencv``: ``cv2.imread(f, IMREAD_COLOR)`` then BGR -> RGB, fed at its own size;
- ``pillow_bilinear``, ``opencv_linear``, ``opencv_area``: the same decodes, resized by the
  app to the model's size (``Image.BILINEAR``; ``cv2.INTER_LINEAR``, ``cv2.INTER_AREA``):
  what an app does for a graph with a fixed input size;
- ``browser``: a hook; a browser app's own predictions (a CSV with ``file`` and ``species``
  columns, e.g. from onnxruntime-web) are compared when ``browser_csv=`` names one.

Only the platforms that feed the decoded photo (``gate=True``) decide pass or fail
(``min_agreement``): the others describe app-side resizers, reported for apps that need them.
OpenCV comes from ``opencv-python-headless`` (optional: ``pip install birdvision[apps]``);
without it those platforms are listed as skipped.

``python -m birdvision.exporting.app_parity model=OUT/model.onnx data=PHOTOS splits=valid,test``
runs it on its own; ``python -m birdvision.export`` runs it on its parity photos by default
(``app_parity.*``) and writes ``app_parity.json``.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from birdvision.data.photos.decode import IMAGE_SUFFIXES, ImageLoadError
from birdvision.exporting import ExportError
from birdvision.exporting.options import AppParityConfig

log = logging.getLogger(__name__)

REPORT = "app_parity.json"


@dataclass(frozen=True)
class Platform:
    """How one kind of app turns a photo file into the model's input."""

    name: str
    description: str
    decode: Callable[[Path], np.ndarray]  # file -> uint8 RGB [H, W, 3]; raises on a file it cannot decode
    resize: Callable[[np.ndarray, int], np.ndarray] | None = None  # the app's own resize to size x size, if it resizes
    gate: bool = False  # counted in pass / fail: apps that feed the decoded photo to the graph
    requires: str | None = None  # a module that must be importable
    fixed_resize: Callable[[np.ndarray, int], np.ndarray] | None = None  # its resize when a graph takes one size only


def _pillow_decode(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _pillow_bilinear(a: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))


def _opencv_decode(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageLoadError(f"{path}: OpenCV cannot decode it")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _opencv_resize(flag: str) -> Callable[[np.ndarray, int], np.ndarray]:
    def resize(a: np.ndarray, size: int) -> np.ndarray:
        import cv2

        return cv2.resize(a, (size, size), interpolation=getattr(cv2, flag))

    return resize


def _browser_decode(path: Path) -> np.ndarray:  # pragma: no cover - the browser decodes in the browser
    raise ImageLoadError("the browser platform is measured from its own predictions (browser_csv=)")


PLATFORMS: dict[str, Platform] = {}


def register_platform(platform: Platform) -> Platform:
    """Add (or replace) a platform, e.g. another decoder library or a phone's resizer reproduced in Python."""
    PLATFORMS[platform.name] = platform
    return platform


for _p in (
    Platform("pillow", 'Pillow: Image.open(f).convert("RGB"), fed at its own size', _pillow_decode, gate=True,
             fixed_resize=_pillow_bilinear),
    Platform("pillow_bilinear", "Pillow decode, resized by the app with Image.BILINEAR to the model's size",
             _pillow_decode, _pillow_bilinear),
    Platform("opencv", "OpenCV: cv2.imread(f, IMREAD_COLOR), BGR -> RGB, fed at its own size", _opencv_decode,
             gate=True, requires="cv2", fixed_resize=_opencv_resize("INTER_AREA")),
    Platform("opencv_linear", "OpenCV decode, resized by the app with cv2.INTER_LINEAR (not antialiased)",
             _opencv_decode, _opencv_resize("INTER_LINEAR"), requires="cv2"),
    Platform("opencv_area", "OpenCV decode, resized by the app with cv2.INTER_AREA", _opencv_decode,
             _opencv_resize("INTER_AREA"), requires="cv2"),
    Platform("browser", "a browser app (onnxruntime-web): its predictions CSV (browser_csv=file,species)",
             _browser_decode, requires="__browser_csv__"),
):
    register_platform(_p)


@dataclass
class AppSample:
    path: Path
    label: int  # class index, -1 when unknown
    split: str


def photo_samples(data: str | Path, splits: list[str], classes: list[str]) -> tuple[list[AppSample], str]:
    """Photos under ``data``: a folder with ``SPLIT/CLASS/photo`` (or ``CLASS/photo``) sub-folders, or a manifest CSV."""
    from birdvision.data.manifest import ManifestError, read_manifest

    idx = {c: i for i, c in enumerate(classes)}
    p = Path(data).expanduser()
    out: list[AppSample] = []
    if p.is_file():
        try:
            rows = read_manifest(p)
        except ManifestError as e:
            raise ExportError(str(e)) from None
        out = [AppSample(Path(r.path), idx.get(r.label, -1), r.split) for r in rows
               if r.active and (not splits or r.split in splits)]
    elif p.is_dir():
        roots = [(p / s, s) for s in splits if (p / s).is_dir()] or [(p, "")]
        for root, split in roots:
            for f in sorted(root.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    out.append(AppSample(f, idx.get(f.parent.name, -1), split))
    else:
        raise ExportError(f"app_parity data {p} does not exist (expected a photo folder or a manifest CSV)")
    if not out:
        raise ExportError(f"no photos in {p} for splits {', '.join(splits) or '(any)'}")
    return out, str(p)


def _available(platform: Platform, browser_csv: str | None) -> str | None:
    """Why ``platform`` cannot run here, or None."""
    if platform.requires == "__browser_csv__":
        return None if browser_csv else "no browser_csv= given (export a browser app's predictions to compare them)"
    if platform.requires and importlib.util.find_spec(platform.requires) is None:
        return f"{platform.requires} is not installed (pip install opencv-python-headless, or birdvision[apps])"
    return None


def _browser_predictions(path: str) -> dict[str, str]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return {r["file"]: r["species"] for r in csv.DictReader(f)}
    except (OSError, KeyError, UnicodeDecodeError, csv.Error) as e:
        raise ExportError(f"browser_csv={path}: expected a CSV with file and species columns ({e})") from None


def _browser_lookup(browser: dict[str, str], path: Path) -> str | None:
    """The browser's answer for ``path``, its CSV naming the file by full path, SPLIT/CLASS/name, CLASS/name or name."""
    for cand in (str(path), "/".join(path.parts[-3:]), "/".join(path.parts[-2:]), path.name):
        if cand in browser:
            return browser[cand]
    return None


def _accuracy(top1: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in ["all", *sorted({str(s) for s in splits if s})]:
        m = (labels >= 0) & (top1 >= 0) & ((splits == name) if name != "all" else True)
        out[name] = float((top1[m] == labels[m]).mean()) if m.any() else None
    return out


def app_parity(model_path: str | Path, samples: list[AppSample], *, platforms: str = "all",
               min_agreement: float = 0.99, browser_csv: str | None = None, threads: int = 0,
               origin: str = "") -> dict[str, Any]:
    """Run ``model_path`` on each platform's pixels of ``samples``; the report :data:`REPORT` holds."""
    from birdvision.exporting.runtime import make_session
    from birdvision.prediction.api import load

    model_path = Path(model_path)
    predictor = load(model_path, threads=threads)
    if predictor.is_audio:
        raise ExportError(f"{model_path.name} is a call model: app parity compares photo decoders")
    session = make_session(model_path, threads=threads)
    inp = session.get_inputs()[0]
    size = int(predictor.preprocess["size"])
    fixed = all(isinstance(d, int) for d in (inp.shape or [None, None, None])[1:3])
    if platforms in ("all", "", None):  # every platform; the browser's only when its predictions were given
        names = [n for n in PLATFORMS if n != "browser" or browser_csv]
    else:
        names = [n.strip() for n in str(platforms).split(",") if n.strip()]
    unknown = [n for n in names if n not in PLATFORMS]
    if unknown:
        raise ExportError(f"unknown app_parity platform(s) {', '.join(unknown)}; known: {', '.join(PLATFORMS)}")
    skipped = {n: why for n in names if (why := _available(PLATFORMS[n], browser_csv))}
    run = [PLATFORMS[n] for n in names if n not in skipped]
    browser = _browser_predictions(browser_csv) if browser_csv and "browser" in names else {}

    ref_probs, labels, splits, kept = [], [], [], []
    per: dict[str, dict[str, list[Any]]] = {p.name: {"probs": [], "failed": []} for p in run}
    k = len(predictor.classes)
    for s in samples:
        try:
            ref = predictor.predict_batch([s.path])[0]
        except ImageLoadError as e:
            log.warning("app parity: birdvision cannot decode %s (%s); left out", s.path, e)
            continue
        ref_probs.append(ref)
        labels.append(s.label)
        splits.append(s.split)
        kept.append(s.path)
        for p in run:
            row = np.full(k, np.nan, np.float32)
            if p.name == "browser":
                species = _browser_lookup(browser, s.path)
                if species in predictor.classes:
                    row[:] = 0.0
                    row[predictor.classes.index(species)] = 1.0
                else:
                    per[p.name]["failed"].append(str(s.path))
            else:
                try:
                    a = p.decode(s.path)
                    if p.resize is not None:
                        a = p.resize(a, size)
                    elif fixed and a.shape[:2] != (size, size):
                        a = (p.fixed_resize or _pillow_bilinear)(a, size)
                    row = session.run(None, {inp.name: np.ascontiguousarray(a, dtype=np.uint8)[None]})[0][0]
                except Exception as e:  # noqa: BLE001 - a platform that cannot decode a file is reported, not fatal
                    per[p.name]["failed"].append(f"{s.path}: {type(e).__name__}: {e}")
            per[p.name]["probs"].append(row)
    if not ref_probs:
        raise ExportError("app parity: none of the photos could be decoded")
    ref_arr = np.stack(ref_probs)
    lab, spl = np.asarray(labels), np.asarray(splits)
    ref_top = ref_arr.argmax(1)
    ref_acc = _accuracy(ref_top, lab, spl)
    report: dict[str, Any] = {
        "model": model_path.name, "data": origin, "n": len(ref_arr),
        "splits": {sp: int((spl == sp).sum()) for sp in sorted(set(splits)) if sp},
        "reference": {"what": "birdvision.predict: load_rgb (full decode, EXIF, white under alpha) + the model",
                      "engine": predictor.engine, "accuracy": ref_acc},
        "input": {"name": inp.name, "shape": [d if isinstance(d, int) else str(d) for d in (inp.shape or [])],
                  "fixed_size": fixed},
        "min_agreement": float(min_agreement), "platforms": {}, "skipped": skipped,
    }
    failures = []
    for p in run:
        probs = np.stack(per[p.name]["probs"])
        ok = ~np.isnan(probs).any(1)
        top = np.where(ok, np.nan_to_num(probs, nan=-1.0).argmax(1), -1)
        agree = float((top == ref_top).mean())
        acc = _accuracy(top, lab, spl)
        diff = np.abs(probs[ok] - ref_arr[ok]) if ok.any() and p.name != "browser" else None
        entry = {
            "description": p.description, "gate": p.gate,
            "feeds": ("the platform's resize to the model's size" if p.resize is not None or (fixed and p.fixed_resize)
                      else "the decoded photo at its own size"),
            "n": int(len(probs)), "undecodable": len(per[p.name]["failed"]), "top1_agreement": agree,
            "accuracy": acc,
            "accuracy_delta_points": {kk: (None if v is None or ref_acc[kk] is None else round((v - ref_acc[kk]) * 100, 3))
                                      for kk, v in acc.items()},
            "max_abs_diff": None if diff is None else float(diff.max()),
            "mean_abs_diff": None if diff is None else float(diff.mean()),
            "disagreements": [str(kept[i]) for i in np.flatnonzero(top != ref_top)[:20]],
            "errors": per[p.name]["failed"][:10],
        }
        report["platforms"][p.name] = entry
        if p.gate and agree < min_agreement:
            failures.append(f"{p.name}: top-1 agreement {agree:.4f} < {min_agreement}")
    report["passed"] = not failures
    report["failures"] = failures
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per platform: agreement and accuracy."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v * 100:.2f}%"

    ref = report["reference"]["accuracy"]
    lines = [f"birdvision.predict: accuracy {pct(ref.get('all'))} on {report['n']} photos "
             + " ".join(f"{k} {pct(v)}" for k, v in ref.items() if k != "all")]
    for name, e in report["platforms"].items():
        undecodable = f"  undecodable {e['undecodable']}" if e["undecodable"] else ""
        lines.append(f"{name:16s} agreement {pct(e['top1_agreement'])}  accuracy {pct(e['accuracy'].get('all'))}"
                     f"{'  (gate)' if e['gate'] else ''}{undecodable}")
    for name, why in report["skipped"].items():
        lines.append(f"{name:16s} skipped: {why}")
    return lines


@dataclass
class AppParityCli(AppParityConfig):
    """``python -m birdvision.exporting.app_parity``: the check on its own, on any photo folder."""

    model: str | None = None  # an exported model.onnx (photos of any size in, or a fixed-size uint8 graph)
    output: str | None = None  # report path; default app_parity.json beside the model
    threads: int = 0  # ONNX Runtime intra-op threads; 0 = this machine's cores


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when every gated platform agrees enough, 1 when one does not, 2 for a user error."""
    from rich.markup import escape

    from birdvision.config import ConfigError, parse_cli
    from birdvision.console import console, run_cli, setup_logging
    from birdvision.runs.artifacts import OutputError, check_output_file, write_json
    from birdvision.runs.checkpoint import CheckpointError

    def body() -> int:
        cfg = parse_cli(AppParityCli, argv, preset_key="preset",
                        prog="birdvision.exporting.app_parity",
                        description="Feed an exported model each platform's decoded photos; compare with birdvision.")
        setup_logging()
        if not cfg.model:
            raise ExportError("model=PATH (an exported .onnx) is required")
        if not cfg.data:
            raise ExportError("data=FOLDER_OR_MANIFEST is required (photos with class sub-folders give accuracy)")
        model = Path(cfg.model).expanduser()
        out = Path(cfg.output).expanduser() if cfg.output else model.parent / REPORT
        check_output_file(out)
        classes = _classes_of(model)
        samples, origin = photo_samples(cfg.data, split_list(cfg.splits), classes)
        report = app_parity(model, samples, platforms=cfg.platforms, min_agreement=cfg.min_agreement,
                            browser_csv=cfg.browser_csv, threads=cfg.threads, origin=origin)
        write_json(out, report)
        for line in summary_lines(report):
            console.print(escape(line))
        console.print(f"report: {escape(str(out))}")
        if not report["passed"]:
            print(f"error: app parity failed: {'; '.join(report['failures'])}", file=sys.stderr)
            return 1
        return 0

    return run_cli(body, (ConfigError, ExportError, CheckpointError, OutputError))


def split_list(splits: str | None) -> list[str]:
    return [s.strip() for s in str(splits or "").split(",") if s.strip()]


def _classes_of(model: Path) -> list[str]:
    from birdvision.exporting.runtime import open_export

    _, meta = open_export(model)
    return list(meta["classes"])


if __name__ == "__main__":
    raise SystemExit(main())
