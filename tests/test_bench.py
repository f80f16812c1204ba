"""Bench: every engine timed with its file size, ratios, the compare table, and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from birdvision.bench import main
from birdvision.benchmarking.benchmark import benchmark_checkpoint, compare_runs, cpu_isa
from birdvision.benchmarking.harness import time_isolated
from birdvision.benchmarking.table import engine_table, engines_compare_table
from birdvision.benchmarking.timing import Timing, paired_ratio, sample
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
    assert rows["ort_fp32"]["acc"] == rows["ort_fp32"]["acc_torch"]  # from parity.json of the export
    assert "skipped" in rows["ort_fp16"] or rows["ort_fp16"]["median_ms"] > 0
    assert "preprocess_overhead" in res["ratios"] and res["threads"] == 1
    # Every engine took part in every round, and the speed-up is the paired one, not a ratio of pooled medians.
    assert all(len(rows[n]["round_medians_ms"]) == rows[n]["rounds"] == 4 for n in ("torch", "ort_fp32", "ort_int8"))
    for name in ("ort_fp32", "ort_bare", "ort_int8"):
        assert rows[name]["speedup_vs_torch"] == pytest.approx(
            paired_ratio(rows["torch"]["round_medians_ms"], rows[name]["round_medians_ms"]))
    assert rows["ort_fp32"]["best_round_ms"] == min(rows["ort_fp32"]["round_medians_ms"])
    assert engine_table(res).row_count == 5
    # A second call reuses the export (same checkpoint recorded in export.json).
    mtime = (tmp_path / "model.onnx").stat().st_mtime
    benchmark_checkpoint(run_dir, engines=("ort_fp32",), export_dir=tmp_path, threads=1, batch=2, iters=2,
                         isolate=False)
    assert (tmp_path / "model.onnx").stat().st_mtime == mtime


def test_isolated_timing_runs_in_a_subprocess(run_dir, tmp_path, monkeypatch):
    benchmark_checkpoint(run_dir, engines=("ort_fp32",), export_dir=tmp_path, threads=1, batch=2, iters=2,
                         isolate=False)
    import subprocess

    import birdvision.benchmarking.harness as bench_mod

    launched = []

    class Spy(subprocess.Popen):
        def __init__(self, args, *a, **kw):
            super().__init__(args, *a, **kw)
            launched.append((args, self.pid))

    monkeypatch.setattr(bench_mod.subprocess, "Popen", Spy)
    t = time_isolated("ort_fp32", str(tmp_path / "model.onnx"), batch_sizes=(1, 2), threads=1, iters=2)
    assert t["engine"] == "ort_fp32" and t["1"]["median_ms"] > 0 and t["2"]["iters"] >= 2
    # the timing came from another interpreter, started for this engine, not from this process
    assert len(launched) == 1 and "serve_worker" in " ".join(launched[0][0]) and launched[0][1] != os.getpid()


def test_engines_compare_table(run_dir, tmp_path_factory, demo_photos):
    other = make_run(tmp_path_factory.mktemp("run2"), demo_photos, seed=1)
    res = compare_runs([str(run_dir), str(other)], threads=1, iters=2, isolate=False, engines=("torch", "ort_fp32"))
    assert len(res["rows"]) == 2 and all(r["backbone"] == "test_tiny" and r["ms_ort_fp32"] > 0 for r in res["rows"])
    assert engines_compare_table(res).row_count == 2
    # one model table: bench's rows carry exactly compare's facts (accuracy, its source, weights, parameters)
    import torch

    from birdvision.benchmarking.table import model_row

    for r, run in zip(res["rows"], (run_dir, other), strict=True):
        c = model_row(run, device=torch.device("cpu"), iters=2, min_seconds=0.0)
        facts = ("model", "backbone", "mode", "best_val_acc", "test_acc", "test_source", "params_m", "weights_mb")
        assert {k: r[k] for k in facts} == {k: c[k] for k in facts}


def test_cli_writes_bench_json(run_dir, tmp_path):
    out = tmp_path / "bench.json"
    assert main([f"model={run_dir}", "engines=torch,ort_fp32", f"export_dir={tmp_path / 'x'}", "iters=2",
                 "isolate=false", "threads=1", f"output={out}"]) == 0
    data = json.loads(out.read_text())
    assert set(data["engines"]) == {"torch", "ort_fp32"} and data["device"]
    assert main([f"model={tmp_path / 'x' / 'model.onnx'}", "iters=2", "isolate=false", f"output={out}"]) == 0
    assert json.loads(out.read_text())["engines"]["onnxruntime"]["median_ms"] > 0


def test_cli_errors(run_dir, capsys):
    assert main([f"model={run_dir}", "engines=torch,coreml"]) == 2
    assert "unknown engine(s) ['coreml']" in capsys.readouterr().err
    assert main([]) == 2
    assert "give model=PATH" in capsys.readouterr().err


def test_paired_ratio_ignores_a_burst_that_hits_one_engine():
    # Load drifts (rounds 3-4 twice as slow for both), and one burst hits only the fast engine in round 2.
    slow = [30.0, 30.0, 60.0, 60.0, 30.0]
    fast = [10.0, 40.0, 20.0, 20.0, 10.0]
    assert paired_ratio(slow, fast) == pytest.approx(3.0)
    # Comparing pooled medians would report 30 / 20 = 1.5x.
    assert Timing.of(slow).median_ms / Timing.of(fast).median_ms == pytest.approx(1.5)
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


def test_timing_statistics_from_samples():
    calls = []
    times = sample(lambda: calls.append(1), warmup=2, iters=5)
    assert len(times) == 5 and len(calls) == 7 and all(t >= 0 for t in times)
    t = Timing.of([5.0, 1.0, 3.0, 2.0, 4.0, 100.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert t.median_ms == 6.0 and t.p90_ms == 10.0 and t.iters == 11
    with pytest.raises(ValueError):
        Timing.of([])


def test_cpu_isa_names_what_decides_int8_speed():
    assert cpu_isa({"fpu", "avx", "avx2", "fma"}) == "AVX2, no INT8 dot-product instructions"
    assert cpu_isa({"avx2", "avx512f", "avx512_vnni"}) == "AVX-512 VNNI, AVX-512, AVX2"
    assert cpu_isa({"fp", "asimd", "asimddp"}) == "NEON dot product, NEON"
    assert cpu_isa({"sse4_2"}) == "no AVX2/NEON"
