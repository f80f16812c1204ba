"""Benchmark one checkpoint (exported on demand, then timed on every engine) or one exported file.

Latencies pool every timed call of every round. Ratios (``speedup_vs_torch``, ``preprocess_overhead``)
are paired by round: engines take turns, so each ratio compares calls made seconds apart under the same load.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

from birdvision.benchmarking.engines import (
    DEFAULT_ENGINES,
    ENGINE_FILES,
    ENGINE_PARITY,
    ENGINES,
    PHONE_ENGINES,
    fp16_supported,
)
from birdvision.benchmarking.harness import time_engine, time_inprocess, time_interleaved, time_isolated
from birdvision.benchmarking.table import model_facts, weights_bytes
from birdvision.benchmarking.timing import paired_ratio
from birdvision.config import ConfigError
from birdvision.exporting import ParityError
from birdvision.runs.artifacts import check_output_dir
from birdvision.runs.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from birdvision.runs.folders import export_dir_of, find_checkpoint, read_json_record

log = logging.getLogger("birdvision.bench")


def _loads(path: Path) -> bool:
    """Whether an earlier export's file still opens as a birdvision export (else it is exported again)."""
    from birdvision.exporting.runtime import open_export

    if not path.is_file():
        return False
    try:
        if path.suffix in (".tflite", ".pte"):  # no metadata inside: model.json must list it with this SHA-256
            from birdvision.exporting.metadata import read_model_json
            from birdvision.runs.artifacts import sha256_file

            listed = (read_model_json(path.parent).get("files") or {}).get(path.name) or {}
            if listed.get("sha256") != sha256_file(path):
                raise CheckpointError(f"{path.name} is not the file model.json lists")
            return True
        open_export(path, spinning=False)
    except CheckpointError as e:
        log.warning("exporting again: %s", e)
        return False
    return True


def _export_for(ckpt: Path, export_dir: Path, engines: list[str]) -> None:
    """Export what the engines need, unless ``export_dir`` already holds this checkpoint's export."""
    from birdvision.exporting.options import ExportConfig
    from birdvision.exporting.pipeline import export_checkpoint

    need = [ENGINE_FILES[e] for e in engines if e in ENGINE_FILES]
    info = export_dir / "export.json"
    same = (read_json_record(info) or {}).get("checkpoint") == str(ckpt)  # a damaged record means: export again
    if same and all(_loads(export_dir / n) for n in need):
        return
    pairs = (("int8", "ort_int8"), ("fp16", "ort_fp16"), *((f, e) for e, f in PHONE_ENGINES.items()))
    fmts = ["onnx"] + [f for f, e in pairs if e in engines]
    cfg = ExportConfig(ckpt=str(ckpt), format=",".join(fmts), output_dir=str(export_dir))
    try:
        export_checkpoint(cfg)
    except ParityError as e:  # still time what was exported; the failure is reported in the table
        log.warning("%s", e)


def benchmark_checkpoint(ckpt: str | Path | Checkpoint, *, engines: tuple[str, ...] | list[str] = DEFAULT_ENGINES,
                         export_dir: str | Path | None = None, threads: int = 2, batch: int = 16, iters: int = 30,
                         isolate: bool = True, rounds: int = 4) -> dict[str, Any]:
    """Export (or reuse the export of) a checkpoint and time it on each engine.

    Returns ``{"checkpoint", "backbone", "recipe", "classes", "threads", "device", "engines": {name: row},
    "ratios": {...}}``; each row has ``file``, ``mb``, ``median_ms``/``p90_ms`` at batch 1,
    ``throughput_ips`` at ``batch``, ``speedup_vs_torch``, ``acc`` and ``acc_torch`` (from the
    export's parity reports), or ``skipped`` with the reason.

    Latencies pool every timed call of every round. Ratios (``speedup_vs_torch``,
    ``preprocess_overhead``) are paired by round (:func:`birdvision.benchmarking.timing.paired_ratio`):
    engines take turns, so each ratio compares calls made seconds apart under the same load.
    """
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        raise ConfigError(f"unknown engine(s) {bad}; valid: {', '.join(ENGINES)}")
    ck = ckpt.path if isinstance(ckpt, Checkpoint) else find_checkpoint(ckpt)
    out_dir = Path(export_dir) if export_dir else export_dir_of(ck)
    check_output_dir(out_dir, key="export_dir")  # before the model is read: a bad path costs nothing
    checkpoint = ckpt if isinstance(ckpt, Checkpoint) else open_checkpoint(ck)
    meta = checkpoint.meta
    _export_for(ck, out_dir, list(engines))
    sizes = (1, batch)
    rows: dict[str, dict[str, Any]] = {}
    targets: dict[str, str] = {}
    for e in engines:
        target = str(ck) if e == "torch" else str(out_dir / ENGINE_FILES[e])
        row: dict[str, Any] = {"file": Path(target).name}
        if e == "torch":
            row["mb"] = round(weights_bytes(checkpoint) / 1e6, 2)
        elif not Path(target).is_file():
            rows[e] = row | {"skipped": "not exported (failed its parity gate or was not requested)"}
            continue
        else:
            row["mb"] = round(Path(target).stat().st_size / 1e6, 2)
        if e == "ort_fp16" and not fp16_supported():
            rows[e] = row | {"skipped": "no FP16 provider (CPU)"}
            continue
        rep = read_json_record(out_dir / ENGINE_PARITY[e]) if e in ENGINE_PARITY else None
        if rep is not None:
            row |= {"acc": rep.get("acc_export"), "acc_torch": rep.get("acc_torch"), "parity_n": rep.get("n")}
        rows[e], targets[e] = row, target
    timer = time_interleaved if isolate else time_inprocess
    timed = timer(targets, batch_sizes=sizes, threads=threads, iters=iters, rounds=rounds)
    for e, t in timed.items():
        rows[e] |= {"median_ms": t["1"]["median_ms"], "p90_ms": t["1"]["p90_ms"],
                    "best_round_ms": t["1"]["best_round_ms"], "round_medians_ms": t["1"]["round_medians"],
                    "throughput_ips": batch * 1000.0 / t[str(batch)]["median_ms"], "batch": batch,
                    "rounds": t["rounds"]}
    if "torch" in timed:
        base = timed["torch"]["1"]["round_medians"]
        for e, t in timed.items():
            rows[e]["speedup_vs_torch"] = paired_ratio(base, t["1"]["round_medians"])
    ratios = {}
    if "ort_fp32" in timed and "ort_bare" in timed:
        ratios["preprocess_overhead"] = paired_ratio(timed["ort_fp32"]["1"]["round_medians"],
                                                     timed["ort_bare"]["1"]["round_medians"]) - 1.0
    i8 = rows.get("ort_int8", {})
    if i8.get("acc") is not None and i8.get("acc_torch") is not None:
        ratios["int8_acc_drop_points"] = (i8["acc_torch"] - i8["acc"]) * 100
    spec = checkpoint.spec
    if spec.is_audio:  # windows per second -> seconds of audio per second, for files that take waveforms
        for e, r in rows.items():
            if (e in ("ort_fp32", "ort_int8", "ort_fp16") or e in PHONE_ENGINES) and "throughput_ips" in r:
                r["x_real_time"] = r["throughput_ips"] * spec.clip_seconds
    return {"checkpoint": str(ck), "backbone": meta.get("backbone"), "recipe": meta.get("recipe"),
            "classes": len(meta["classes"]), "input": getattr(spec, "size", None), "threads": threads,
            "device": device_name(), "load_avg_1min": _load(), "export_dir": str(out_dir), "engines": rows,
            "ratios": ratios}


def _load() -> float | None:
    """1-minute load average: a value above the core count means the timings shared the CPU."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# Vector extensions that decide ONNX Runtime's CPU speed, INT8 above all: without VNNI the
# U8S8 kernels multiply through 16-bit intermediates at about half the rate.
ISA_FLAGS = (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx512f", "AVX-512"), ("avx2", "AVX2"),
             ("asimddp", "NEON dot product"), ("asimd", "NEON"))


def cpu_isa(flags: set[str]) -> str:
    """The vector extensions among ``flags`` (from /proc/cpuinfo) that matter for inference speed."""
    found = [name for flag, name in ISA_FLAGS if flag in flags]
    if found and not any("VNNI" in f or "dot" in f for f in found):
        found.append("no INT8 dot-product instructions")
    return ", ".join(found) or "no AVX2/NEON"


def device_name() -> str:
    """A short description of where the numbers were measured: CPU model, logical CPUs, vector extensions."""
    model: str | None = None
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and model is None:
                model = value
            elif key in ("flags", "Features") and not flags:  # x86, ARM
                flags = set(value.split())
    except OSError:
        pass
    cpu = model or platform.processor() or platform.machine()
    isa = f", {cpu_isa(flags)}" if flags else ""
    return f"{cpu}, {os.cpu_count()} logical CPUs{isa}"


def benchmark_export(path: str | Path, *, threads: int = 2, batch: int = 16, iters: int = 30,
                     isolate: bool = True, rounds: int = 3) -> dict[str, Any]:
    """Time one exported file alone (no checkpoint at hand)."""
    from birdvision.exporting.runtime import open_export

    p = Path(path)
    session, _ = open_export(p)  # one clear line for a missing, damaged or foreign file, before any timing
    del session
    timer = time_isolated if isolate else time_engine
    t = timer("ort_file", str(p), batch_sizes=(1, batch), threads=threads, iters=iters, rounds=rounds)
    row = {"file": p.name, "mb": round(p.stat().st_size / 1e6, 2), "median_ms": t["1"]["median_ms"],
           "p90_ms": t["1"]["p90_ms"], "throughput_ips": batch * 1000.0 / t[str(batch)]["median_ms"], "batch": batch}
    return {"model": str(p), "threads": threads, "device": device_name(), "engines": {"onnxruntime": row}, "ratios": {}}


def compare_runs(targets: list[str | Path | Checkpoint], *, threads: int = 2, iters: int = 30, isolate: bool = True, rounds: int = 4,
                 engines: tuple[str, ...] = ("torch", "ort_fp32", "ort_int8")) -> dict[str, Any]:
    """The model table (:mod:`birdvision.benchmarking.table`) with each engine's batch-1 latency, all on this device."""
    rows = []
    for target in targets:
        ck = target if isinstance(target, Checkpoint) else open_checkpoint(target)
        res = benchmark_checkpoint(ck, engines=engines, threads=threads, iters=iters, isolate=isolate,
                                   rounds=rounds)
        e = res["engines"]
        rows.append(model_facts(ck) | {
            "ms_torch": e.get("torch", {}).get("median_ms"), "ms_ort_fp32": e.get("ort_fp32", {}).get("median_ms"),
            "ms_ort_int8": e.get("ort_int8", {}).get("median_ms"), "int8_mb": e.get("ort_int8", {}).get("mb"),
        })
    return {"device": device_name(), "threads": threads, "rows": rows}
