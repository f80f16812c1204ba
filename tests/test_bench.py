"""Bench: every engine timed with its file size, ratios, the compare table, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from birdvision.bench import benchmark_checkpoint, compare_runs, compare_table, engine_table, main, time_isolated
from tests._bird_runs import make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_photos) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), demo_photos)


def test_benchmark_checkpoint_rows(run_dir, tmp_path):
    res = benchmark_checkpoint(run_dir, engines=("torch", "ort_fp32", "ort_bare", "ort_int8", "ort_fp16"),
                               export_dir=tmp_path, threads=1, batch=4, iters=3, isolate=False)
    rows = res["engines"]
    for name in ("torch", "ort_fp32", "ort_bare", "ort_int8"):
        r = rows[name]
        assert r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] and r["throughput_ips"] > 0 and r["mb"] > 0
    assert rows["torch"]["speedup_vs_torch"] == pytest.approx(1.0)
    assert rows["ort_fp32"]["acc"] == rows["ort_fp32"]["acc_torch"]  # from parity.json of the export
    assert "skipped" in rows["ort_fp16"] or rows["ort_fp16"]["median_ms"] > 0
    assert "preprocess_overhead" in res["ratios"] and res["threads"] == 1
    assert engine_table(res).row_count == 5
    # A second call reuses the export (same checkpoint recorded in export.json).
    mtime = (tmp_path / "model.onnx").stat().st_mtime
    benchmark_checkpoint(run_dir, engines=("ort_fp32",), export_dir=tmp_path, threads=1, batch=2, iters=2,
                         isolate=False)
    assert (tmp_path / "model.onnx").stat().st_mtime == mtime


def test_isolated_timing_runs_in_a_subprocess(run_dir, tmp_path):
    benchmark_checkpoint(run_dir, engines=("ort_fp32",), export_dir=tmp_path, threads=1, batch=2, iters=2,
                         isolate=False)
    t = time_isolated("ort_fp32", str(tmp_path / "model.onnx"), batch_sizes=(1, 2), threads=1, iters=2)
    assert t["engine"] == "ort_fp32" and t["1"]["median_ms"] > 0 and t["2"]["iters"] >= 2


def test_compare_table(run_dir, tmp_path_factory, demo_photos):
    other = make_run(tmp_path_factory.mktemp("run2"), demo_photos, seed=1)
    res = compare_runs([str(run_dir), str(other)], threads=1, iters=2, isolate=False, engines=("torch", "ort_fp32"))
    assert len(res["rows"]) == 2 and all(r["model"] == "test_tiny" and r["ms_ort_fp32"] > 0 for r in res["rows"])
    assert compare_table(res).row_count == 2


def test_cli_writes_bench_json(run_dir, tmp_path):
    out = tmp_path / "bench.json"
    assert main([f"model={run_dir}", "engines=torch,ort_fp32", f"export_dir={tmp_path / 'x'}", "iters=2",
                 "isolate=false", "threads=1", f"output={out}"]) == 0
    data = json.loads(out.read_text())
    assert set(data["engines"]) == {"torch", "ort_fp32"} and data["device"]
    assert main([f"model={tmp_path / 'x' / 'model.onnx'}", "iters=2", "isolate=false", f"output={out}"]) == 0
    assert json.loads(out.read_text())["engines"]["onnxruntime"]["median_ms"] > 0


def test_cli_errors(run_dir, capsys):
    assert main([f"model={run_dir}", "engines=torch,tflite"]) == 2
    assert "unknown engine(s) ['tflite']" in capsys.readouterr().err
    assert main([]) == 2
    assert "give model=PATH" in capsys.readouterr().err
