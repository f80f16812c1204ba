"""The audit at scale: bounded-memory duplicate search, progress bars, and the scale benchmark's scoring."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdvision.audit import main
from birdvision.checks import duplicates
from birdvision.checks.cache import ScanCache
from birdvision.checks.duplicates import cosine_pairs, find_duplicates
from birdvision.checks.scan import ScanSettings, scan_all

REPO = Path(__file__).resolve().parents[1]


def _descriptors(n: int = 300, dim: int = 48, seed: int = 0) -> np.ndarray:
    """Unit vectors with a few planted near copies (rows 5k+1 close to row 5k for k < 20)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    for k in range(20):
        x[5 * k + 1] = x[5 * k] + rng.normal(scale=0.05, size=dim)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_bounded_blocks_find_the_same_pairs(monkeypatch):
    x = _descriptors()
    full = {(i, j) for i, j, _ in cosine_pairs(x, 0.95, block=len(x))}
    assert {(5 * k, 5 * k + 1) for k in range(20)} <= full
    monkeypatch.setattr(duplicates, "BLOCK_ELEMENTS", 10)  # forces the smallest block (64 rows)
    compared: list[float] = []
    small = {(i, j) for i, j, _ in cosine_pairs(x, 0.95, progress=compared.append)}
    assert small == full
    assert len(compared) == 5  # ceil(300 / 64) steps
    assert sum(compared) == len(x) * (len(x) - 1) / 2  # every pair i < j counted once


def test_progress_bar_does_not_change_the_duplicates(monkeypatch):
    x = _descriptors()
    paths = [f"/p/{i}.jpg" for i in range(len(x))]
    md5 = [str(i) for i in range(len(x))]
    phash = [f"h{i}" for i in range(len(x))]
    quiet = find_duplicates(paths, md5, phash, x, 0.95)
    monkeypatch.setattr(duplicates, "PROGRESS_PAIRS", 0)  # show the bar even for 300 descriptors
    shown = find_duplicates(paths, md5, phash, x, 0.95, progress=True)
    assert shown.clusters == quiet.clusters and len(shown.clusters) == 20


def test_scan_progress_with_and_without_cache(tmp_path):
    files = []
    for i in range(20):
        p = tmp_path / "imgs" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), i * 10, dtype=np.uint8)).save(p)
        files.append(str(p))
    settings = ScanSettings()
    cache = ScanCache(tmp_path / "cache", settings.signature())
    first, s1 = scan_all(files, settings, cache, workers=1, progress=True)
    second, s2 = scan_all(files, settings, cache, workers=1, progress=True)
    cache.close()
    assert (s1.computed, s2.cached) == (20, 20)
    assert [second[p]["sha256"] for p in files] == [first[p]["sha256"] for p in files]


def _bench():
    """benchmarks/bench_audit_scale.py as a module (benchmarks are scripts, not a package)."""
    name = "bench_audit_scale"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "bench_audit_scale.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up while the file executes
        spec.loader.exec_module(mod)
    return sys.modules[name]


def test_grown_photo_set_planted_pairs_are_found(tmp_path):
    """The scale benchmark's generator and scoring, end to end on a small grown set."""
    bench = _bench()
    real = tmp_path / "real"
    rng = np.random.default_rng(0)
    for i in range(24):
        split = ("train", "valid", "test")[i % 3]
        grid = Image.fromarray(rng.integers(20, 235, (6, 6, 3), dtype=np.uint8))
        p = real / split / ("ALPHA FINCH", "BETA WREN")[i % 2] / f"{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        grid.resize((96, 96), Image.Resampling.BICUBIC).save(p, quality=92)
    sources = bench.real_photos(real)
    assert len(sources) == 24
    truth = bench.grow_photo_set(sources, 100, tmp_path / "grown", seed=0, workers=1)
    assert truth["files"] == 100 and len(truth["pairs"]) == 5
    assert bench.grow_photo_set(sources, 100, tmp_path / "grown", seed=0)["pairs"] == truth["pairs"]  # reused
    data, out = tmp_path / "grown" / "data", tmp_path / "audit"
    rc = main([
        "check=birds525", f"data.root={data}", f"output_dir={out}", "scan.progress=false", "scan.workers=1",
    ])
    assert rc == 0
    s = bench.score(truth, out, data)
    assert s["recall"] == 1.0 and s["group_recall"] == 1.0
    assert s["false_positives"] == 0


@pytest.mark.parametrize("model", ["linear", "quadratic", "nlogn"])
def test_scale_fits_recover_their_model(model):
    bench = _bench()
    ns = [5000, 10000, 20000]
    truth = {"linear": [2.0, 0.01], "quadratic": [1e-3, 2e-8], "nlogn": [1e-3, 1e-4]}[model]
    ys = [bench.predict(truth, model, n) for n in ns]
    c, formula = bench.fit(ns, ys, model)
    assert bench.predict(c, model, 90000) == pytest.approx(bench.predict(truth, model, 90000), rel=1e-6)
    assert "N" in formula
