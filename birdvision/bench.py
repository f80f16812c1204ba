"""``python -m birdvision.bench model=PATH``: latency and throughput of a model on every engine.

Engines: ``torch`` (PyTorch eager, the model alone on a normalised tensor), ``ort_fp32``
(the exported ``model.onnx``, preprocessing in the graph when it was exported that way),
``ort_bare`` (``model.bare.onnx``: no preprocessing, to price it), ``ort_int8`` and
``ort_fp16``. FP16 is timed only where ONNX Runtime has a GPU provider: on CPU it runs
through inserted casts and says nothing about a phone or a Jetson. For spectrogram models the
ONNX files take waveform windows (the mel frontend stays float inside ``model.int8.onnx`` too), and
the table adds ``x real time``: seconds of audio per second at the throughput batch.

Each engine is timed in its own subprocess by default (``isolate=true``) with a pinned
thread count (:mod:`birdvision.benchmarking.harness`).

``compare=[RUN,RUN,...]`` prints the model table (:mod:`birdvision.benchmarking.table`, the one
``python -m birdvision.compare`` prints) with each engine's latency, over several runs on this device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from birdvision.benchmarking.benchmark import benchmark_checkpoint, benchmark_export, compare_runs
from birdvision.benchmarking.engines import DEFAULT_ENGINES, ENGINES
from birdvision.benchmarking.table import engine_table, engines_compare_table, model_facts
from birdvision.config import ConfigError, parse_cli
from birdvision.console import console, run_cli, setup_logging
from birdvision.data.manifest import ManifestError
from birdvision.exporting import ExportError
from birdvision.runs.artifacts import OutputError, check_output_file, write_json
from birdvision.runs.checkpoint import CheckpointError, open_checkpoint
from birdvision.runs.folders import RunError

USER_ERRORS = (ConfigError, ExportError, CheckpointError, RunError, ManifestError, OutputError)


@dataclass
class BenchConfig:
    """Everything ``python -m birdvision.bench`` reads."""

    model: str | None = None  # a checkpoint, a run folder, or an exported .onnx/.ort file
    compare: list[str] = field(default_factory=list)  # several checkpoints/run folders -> the study table
    engines: str = ",".join(DEFAULT_ENGINES)  # also tflite, pte, tflite_int8, pte_int8 (LiteRT / ExecuTorch extras)
    threads: int = 2  # intra-op threads for every engine (pinned)
    batch: int = 16  # throughput batch size
    iters: int = 30  # timed batch-1 calls per round (throughput batches: an eighth, at least 3)
    rounds: int = 4  # alternating rounds over the engines; ratios pair round i of each engine
    isolate: bool = True  # each engine in its own subprocess
    export_dir: str | None = None  # where exports live or are made; default <run>/export
    output: str | None = None  # bench.json path; default beside the exports


MAX_BATCH = 4096


def check_options(cfg: Any) -> tuple[str, ...]:
    """Ranges the schema's types cannot express, checked before any model is read; returns the engines."""
    for key, lo, hi in (("threads", 1, 1024), ("batch", 1, MAX_BATCH), ("iters", 1, 1_000_000), ("rounds", 1, 1000)):
        v = getattr(cfg, key)
        if not lo <= v <= hi:
            raise ConfigError(f"{key}={v}: expected an integer in [{lo}, {hi}]")
    engines = tuple(e.strip() for e in str(cfg.engines).split(",") if e.strip())
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        raise ConfigError(f"engines={cfg.engines!r}: unknown engine(s) {bad or ['(none)']}; valid: {', '.join(ENGINES)}")
    return engines




def run(cfg: Any) -> int:
    """Benchmark one model or compare several; print the table and write ``bench.json``."""
    setup_logging()
    engines = check_options(cfg)
    if cfg.output:
        check_output_file(cfg.output)
    if cfg.compare:
        if not cfg.output:
            check_output_file("bench.json")
        checkpoints = [open_checkpoint(t) for t in cfg.compare]  # each read once, all before the first is timed
        for ck in checkpoints:
            model_facts(ck)  # and their run records
        result = compare_runs(checkpoints, threads=cfg.threads, iters=cfg.iters, isolate=cfg.isolate,
                              rounds=cfg.rounds,
                              engines=tuple(e for e in engines if e in ("torch", "ort_fp32", "ort_int8")))
        console.print(engines_compare_table(result))
        out = Path(cfg.output) if cfg.output else Path("bench.json")
    elif cfg.model:
        if Path(cfg.model).suffix in (".onnx", ".ort"):
            if not cfg.output:
                check_output_file(Path(cfg.model).parent / "bench.json")
            result = benchmark_export(cfg.model, threads=cfg.threads, batch=cfg.batch, iters=cfg.iters,
                                      isolate=cfg.isolate, rounds=cfg.rounds)
            out = Path(cfg.output) if cfg.output else Path(cfg.model).parent / "bench.json"
        else:
            result = benchmark_checkpoint(cfg.model, engines=engines, export_dir=cfg.export_dir, threads=cfg.threads,
                                          batch=cfg.batch, iters=cfg.iters, isolate=cfg.isolate, rounds=cfg.rounds)
            out = Path(cfg.output) if cfg.output else Path(result["export_dir"]) / "bench.json"
        console.print(engine_table(result))
        for k, v in result["ratios"].items():
            console.print(f"  {k}: {v:.3f}")
    else:
        raise ConfigError("give model=PATH (checkpoint, run folder or .onnx) or compare=[RUN,RUN,...]")
    write_json(out, result)
    console.print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m birdvision.bench``."""

    def body() -> int:
        cfg = parse_cli(BenchConfig, argv, preset_key="preset", prog="birdvision.bench",
                        description="Latency/throughput of a model on PyTorch and ONNX Runtime (fp32/int8/fp16).")
        return run(cfg)

    return run_cli(body, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
