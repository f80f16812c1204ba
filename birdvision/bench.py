"""``python -m birdvision.bench model=PATH``: latency and throughput of a model on every engine.

Engines: ``torch`` (PyTorch eager, the model alone on a normalised tensor), ``ort_fp32``
(the exported ``model.onnx``, preprocessing in the graph when it was exported that way),
``ort_bare`` (``model.bare.onnx``: no preprocessing, to price it), ``ort_int8`` and
``ort_fp16``. FP16 is timed only where ONNX Runtime has a GPU provider: on CPU it runs
through inserted casts and says nothing about a phone or a Jetson. For spectrogram models the
ONNX files take waveform windows (the mel frontend stays float inside ``model.int8.onnx`` too), and
the table adds ``x real time``: seconds of audio per second at the throughput batch.

Each engine is timed in its own subprocess by default (``isolate=true``) with a pinned
thread count: on a 2-core machine, PyTorch's OpenMP pool and ONNX Runtime's spinning
workers otherwise steal each other's cores and distort timings by about half.

``compare=[RUN,RUN,...]`` builds the study's table (model, accuracy, weights MB, ms per
image) over several runs on this device in one invocation.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from birdvision.artifacts import OutputError, check_output_dir, check_output_file, write_json
from birdvision.checkpoint import CheckpointError, checkpoint_meta
from birdvision.config import ConfigError, parse_cli
from birdvision.console import console, run_cli, setup_logging
from birdvision.data.manifest import ManifestError
from birdvision.exporting import ExportError, ParityError
from birdvision.runs import RunError, find_checkpoint
from birdvision.spec import from_dict as spec_from_dict
from birdvision.timing import Timing, paired_ratio, pin_threads, sample

log = logging.getLogger("birdvision.bench")

DEFAULT_ENGINES = ("torch", "ort_fp32", "ort_bare", "ort_int8", "ort_fp16")
# phone runtimes (optional extras birdvision[litert] / birdvision[executorch]): asked for by name
PHONE_ENGINES = {"tflite": "tflite", "pte": "pte", "tflite_int8": "tflite_int8", "pte_int8": "pte_int8"}  # -> format
ENGINES = (*DEFAULT_ENGINES, *PHONE_ENGINES)
ENGINE_FILES = {"ort_fp32": "model.onnx", "ort_bare": "model.bare.onnx", "ort_int8": "model.int8.onnx",
                "ort_fp16": "model.fp16.onnx", "tflite": "model.tflite", "pte": "model.pte",
                "tflite_int8": "model.int8.tflite", "pte_int8": "model.int8.pte"}
ENGINE_PARITY = {"ort_fp32": "parity.json", "ort_bare": "parity.bare.json", "ort_int8": "parity.int8.json",
                 "ort_fp16": "parity.fp16.json", "tflite": "parity.tflite.json", "pte": "parity.pte.json",
                 "tflite_int8": "parity.int8.tflite.json", "pte_int8": "parity.int8.pte.json"}
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


# ----------------------------------------------------------------------------- timing one engine


def _fp16_supported() -> bool:
    import onnxruntime as ort

    return any(p in ort.get_available_providers() for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))


def _calls(engine: str, target: str, batch_sizes: tuple[int, ...], threads: int) -> dict[int, Any]:
    """Zero-argument callables running one forward pass per batch size, model loaded once.

    ``target`` is the checkpoint for ``torch`` and the ONNX file for the others. Inputs are
    random but correctly shaped and typed (speed does not depend on pixel content).
    """
    pin_threads(threads)
    rng = np.random.default_rng(0)
    if engine == "torch":
        import torch

        from birdvision.checkpoint import load_classifier
        meta = checkpoint_meta(target)
        model = load_classifier(target)
        shape = spec_from_dict(meta["preprocess"]).net_input_shape(int(meta.get("in_chans", 3)))

        def torch_call(x: torch.Tensor):
            with torch.inference_mode():
                return model.predict_proba(x)

        return {b: (lambda x=torch.from_numpy(rng.standard_normal((b, *shape), dtype=np.float32)): torch_call(x))
                for b in batch_sizes}
    if engine in PHONE_ENGINES:
        return _phone_calls(engine, target, batch_sizes, threads, rng)
    from birdvision.exporting.runtime import make_session

    providers = None
    if engine == "ort_fp16" and _fp16_supported():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    sess = make_session(target, threads=threads, providers=providers)
    inp = sess.get_inputs()[0]
    pre = json.loads(sess.get_modelmeta().custom_metadata_map.get("preprocess", "{}"))
    # a graph that resizes photos of any size is timed on photos at the model's size (the in-graph resize is then
    # a copy); larger photos add the resize: about 0.15 s for 12 Mpx on 2 cores
    dims = [d if isinstance(d, int) else int(pre.get("size", 1)) if inp.type == "tensor(uint8)" else 1
            for d in inp.shape[1:]]
    out = {}
    for b in batch_sizes:
        if inp.type == "tensor(uint8)":
            x = rng.integers(0, 256, (b, *dims), dtype=np.uint8)
        else:
            x = rng.standard_normal((b, *dims), dtype=np.float32)
        out[b] = lambda x=x: sess.run(None, {inp.name: x})
    return out


def _phone_calls(engine: str, target: str, batch_sizes: tuple[int, ...], threads: int,
                 rng: np.random.Generator) -> dict[int, Any]:
    """LiteRT / ExecuTorch files take one photo (uint8 ``[1, size, size, 3]``) or window per call, as on a phone:
    a batch of ``b`` is ``b`` calls. The input size comes from ``model.onnx``'s metadata beside the file."""
    from birdvision.exporting.phone import example_input, session
    from birdvision.exporting.runtime import open_export

    onnx_file = Path(target).with_name(ENGINE_FILES["ort_fp32"])
    _, meta = open_export(onnx_file)
    example = example_input(dict(meta["preprocess"])).numpy()
    sess = session(PHONE_ENGINES[engine], Path(target), threads)
    name = sess.get_inputs()[0].name
    out = {}
    for b in batch_sizes:
        if example.dtype == np.uint8:
            x = rng.integers(0, 256, (b, *example.shape[1:]), dtype=np.uint8)
        else:
            x = rng.standard_normal((b, *example.shape[1:]), dtype=np.float32)
        out[b] = lambda x=x: sess.run(None, {name: x})
    return out


def _iters(iters: int, batch: int) -> int:
    return iters if batch == 1 else max(3, iters // 8)


def _one_round(calls: dict[int, Any], iters: int) -> dict[str, list[float]]:
    """Raw per-call times (ms) of one round, per batch size."""
    return {str(b): sample(f, warmup=1, iters=_iters(iters, b)) for b, f in calls.items()}


def _summarise(engine: str, rounds: list[dict[str, list[float]]]) -> dict[str, Any]:
    """Per batch size: statistics of all timed calls pooled over the rounds, plus each round's median.

    The per-round medians are what :func:`birdvision.timing.paired_ratio` pairs across engines.
    """
    out: dict[str, Any] = {"engine": engine, "rounds": len(rounds)}
    for b in rounds[0]:
        pooled = [t for r in rounds for t in r[b]]
        round_medians = [statistics.median(r[b]) for r in rounds]
        out[b] = Timing.of(pooled).as_dict() | {"round_medians": round_medians, "best_round_ms": min(round_medians)}
    return out


def time_inprocess(targets: dict[str, str], *, batch_sizes: tuple[int, ...] = (1, 16), threads: int = 2,
                   iters: int = 30, rounds: int = 3) -> dict[str, dict[str, Any]]:
    """Time several engines in this process, in alternating rounds (fast, for tests; pools may compete).

    Each round starts with an untimed call per batch size (:func:`_one_round`), which is the warm-up.
    """
    calls = {name: _calls(name, target, batch_sizes, threads) for name, target in targets.items()}
    per: dict[str, list] = {n: [] for n in targets}
    for _ in range(max(1, rounds)):
        for name, cs in calls.items():
            per[name].append(_one_round(cs, iters))
    return {n: _summarise(n, rs) for n, rs in per.items()}


def time_engine(engine: str, target: str, *, batch_sizes: tuple[int, ...] = (1, 16), threads: int = 2,
                iters: int = 30, rounds: int = 3) -> dict[str, Any]:
    """Time one engine in this process: ``{str(batch): timing dict}`` over ``rounds`` rounds."""
    return time_inprocess({engine: target}, batch_sizes=batch_sizes, threads=threads, iters=iters,
                          rounds=rounds)[engine]


def _serve() -> None:
    """Worker process: load one engine, then time a round each time the parent writes a line."""
    args = json.loads(sys.argv[1])
    calls = _calls(args["engine"], args["target"], tuple(args["batch_sizes"]), args["threads"])
    for f in calls.values():
        f()  # warm-up: first runs allocate and pick kernels
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        print(json.dumps(_one_round(calls, args["iters"])), flush=True)


def time_interleaved(targets: dict[str, str], *, batch_sizes: tuple[int, ...], threads: int, iters: int,
                     rounds: int = 4) -> dict[str, dict[str, Any]]:
    """Time several engines, each in its own process, in alternating rounds.

    Separate processes: no other engine's thread pool is alive in the timed process (on 2
    cores PyTorch's and ONNX Runtime's pools otherwise take each other's cores). Alternating
    rounds: every engine samples the same background load, and round ``i`` of one engine
    can be paired with round ``i`` of another (:func:`birdvision.timing.paired_ratio`).
    Idle workers block on a pipe.
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, target in targets.items():  # started one at a time: loading is CPU work too
            payload = json.dumps({"engine": name, "target": str(target), "batch_sizes": list(batch_sizes),
                                  "threads": threads, "iters": iters})
            p = subprocess.Popen([sys.executable, "-c", "from birdvision.bench import _serve; _serve()", payload],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env)
            procs[name] = p
            _read_line(p, name, lambda line: line == "ready")
        per: dict[str, list] = {n: [] for n in targets}
        for _ in range(max(1, rounds)):
            for name, p in procs.items():
                p.stdin.write("round\n")
                p.stdin.flush()
                per[name].append(json.loads(_read_line(p, name, lambda line: line.startswith("{"))))
        return {n: _summarise(n, rs) for n, rs in per.items()}
    finally:
        for p in procs.values():
            try:
                p.stdin.close()
                p.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()


def _read_line(p: subprocess.Popen, name: str, wanted) -> str:
    """The worker's next protocol line (libraries may print other lines first); a dead worker is an error."""
    while True:
        line = p.stdout.readline()
        if not line:
            tail = p.stderr.read().strip().splitlines()[-3:]
            raise RuntimeError(f"timing {name} failed: {' | '.join(tail)}")
        if wanted(line.strip()):
            return line.strip()


def time_isolated(engine: str, target: str, *, batch_sizes: tuple[int, ...], threads: int, iters: int,
                  rounds: int = 3) -> dict:
    """One engine in a fresh interpreter (see :func:`time_interleaved`)."""
    return time_interleaved({engine: target}, batch_sizes=batch_sizes, threads=threads, iters=iters,
                            rounds=rounds)[engine]


# ----------------------------------------------------------------------------- one checkpoint


def _json_record(path: Path) -> dict[str, Any] | None:
    """A JSON object written beside the exports, or None when missing or damaged (logged)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
        log.warning("ignoring damaged %s (%s)", path, str(e)[:120])
        return None
    return data if isinstance(data, dict) else None


def _loads(path: Path) -> bool:
    """Whether an earlier export's file still opens as a birdvision export (else it is exported again)."""
    from birdvision.exporting.runtime import open_export

    if not path.is_file():
        return False
    try:
        if path.suffix in (".tflite", ".pte"):  # no metadata inside: model.json must list it with this SHA-256
            from birdvision.artifacts import sha256_file
            from birdvision.exporting.metadata import read_model_json

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
    same = (_json_record(info) or {}).get("checkpoint") == str(ckpt)  # a damaged record means: export again
    if same and all(_loads(export_dir / n) for n in need):
        return
    pairs = (("int8", "ort_int8"), ("fp16", "ort_fp16"), *((f, e) for e, f in PHONE_ENGINES.items()))
    fmts = ["onnx"] + [f for f, e in pairs if e in engines]
    cfg = ExportConfig(ckpt=str(ckpt), format=",".join(fmts), output_dir=str(export_dir))
    try:
        export_checkpoint(cfg)
    except ParityError as e:  # still time what was exported; the failure is reported in the table
        log.warning("%s", e)


def benchmark_checkpoint(ckpt: str | Path, *, engines: tuple[str, ...] | list[str] = DEFAULT_ENGINES,
                         export_dir: str | Path | None = None, threads: int = 2, batch: int = 16, iters: int = 30,
                         isolate: bool = True, rounds: int = 4) -> dict[str, Any]:
    """Export (or reuse the export of) a checkpoint and time it on each engine.

    Returns ``{"checkpoint", "backbone", "recipe", "classes", "threads", "device", "engines": {name: row},
    "ratios": {...}}``; each row has ``file``, ``mb``, ``median_ms``/``p90_ms`` at batch 1,
    ``throughput_ips`` at ``batch``, ``speedup_vs_torch``, ``acc`` and ``acc_torch`` (from the
    export's parity reports), or ``skipped`` with the reason.

    Latencies pool every timed call of every round. Ratios (``speedup_vs_torch``,
    ``preprocess_overhead``) are paired by round (:func:`birdvision.timing.paired_ratio`):
    engines take turns, so each ratio compares calls made seconds apart under the same load.
    """
    from birdvision.exporting.samples import run_dir_of

    bad = [e for e in engines if e not in ENGINES]
    if bad:
        raise ConfigError(f"unknown engine(s) {bad}; valid: {', '.join(ENGINES)}")
    ck = find_checkpoint(ckpt)
    out_dir = Path(export_dir) if export_dir else run_dir_of(ck) / "export"
    check_output_dir(out_dir, key="export_dir")
    meta = checkpoint_meta(ck)
    _export_for(ck, out_dir, list(engines))
    sizes = (1, batch)
    rows: dict[str, dict[str, Any]] = {}
    targets: dict[str, str] = {}
    for e in engines:
        target = str(ck) if e == "torch" else str(out_dir / ENGINE_FILES[e])
        row: dict[str, Any] = {"file": Path(target).name}
        if e == "torch":
            row["mb"] = round(_param_bytes(ck) / 1e6, 2)
        elif not Path(target).is_file():
            rows[e] = row | {"skipped": "not exported (failed its parity gate or was not requested)"}
            continue
        else:
            row["mb"] = round(Path(target).stat().st_size / 1e6, 2)
        if e == "ort_fp16" and not _fp16_supported():
            rows[e] = row | {"skipped": "no FP16 provider (CPU)"}
            continue
        rep = _json_record(out_dir / ENGINE_PARITY[e]) if e in ENGINE_PARITY else None
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
    spec = spec_from_dict(meta["preprocess"])
    if spec.is_audio:  # windows per second -> seconds of audio per second, for files that take waveforms
        for e, r in rows.items():
            if (e in ("ort_fp32", "ort_int8", "ort_fp16") or e in PHONE_ENGINES) and "throughput_ips" in r:
                r["x_real_time"] = r["throughput_ips"] * spec.clip_seconds
    return {"checkpoint": str(ck), "backbone": meta.get("backbone"), "recipe": meta.get("recipe"),
            "classes": len(meta["classes"]), "input": getattr(spec, "size", None), "threads": threads,
            "device": device_name(), "load_avg_1min": _load(), "export_dir": str(out_dir), "engines": rows,
            "ratios": ratios}


def _param_bytes(ck: Path) -> int:
    """FP32 weight bytes of the network (what ``weights MB`` means in the study table)."""
    from birdvision.checkpoint import read_checkpoint

    sd = read_checkpoint(ck)["state_dict"]
    return sum(v.numel() * v.element_size() for k, v in sd.items() if k.startswith("net.") and v.is_floating_point())


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


# ----------------------------------------------------------------------------- tables


def engine_table(result: dict[str, Any]):
    """A rich table of one benchmark."""
    from rich.table import Table

    title = f"{result.get('backbone', result.get('model', ''))} on {result['device']}, {result['threads']} threads"
    t = Table(title=title)
    audio = any("x_real_time" in r for r in result["engines"].values())
    cols = ["engine", "file", "MB", "ms b=1 (median)", "p90", f"img/s b={next(iter(result['engines'].values())).get('batch', '')}",
            "x torch (paired)", "acc"] + (["x real time"] if audio else [])
    for col in cols:
        t.add_column(col, justify="right" if col not in ("engine", "file") else "left")
    for name, r in result["engines"].items():
        if "skipped" in r:
            t.add_row(name, r["file"], f"{r.get('mb', '')}", "skipped: " + r["skipped"], *[""] * (len(cols) - 4))
            continue
        acc = "" if r.get("acc") is None else f"{r['acc'] * 100:.1f}%"
        rt = [f"{r['x_real_time']:.0f}" if "x_real_time" in r else ""] if audio else []
        t.add_row(name, r["file"], f"{r['mb']:.1f}", f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}",
                  f"{r['throughput_ips']:.1f}", f"{r.get('speedup_vs_torch', 0):.2f}" if r.get("speedup_vs_torch") else "",
                  acc, *rt)
    return t


def compare_runs(targets: list[str], *, threads: int = 2, iters: int = 30, isolate: bool = True, rounds: int = 4,
                 engines: tuple[str, ...] = ("torch", "ort_fp32", "ort_int8")) -> dict[str, Any]:
    """The study table: per run, model, accuracy, weights MB and ms per image, all on this device."""
    from birdvision.exporting.samples import run_dir_of

    rows = []
    for target in targets:
        ck = find_checkpoint(target)
        res = benchmark_checkpoint(ck, engines=engines, threads=threads, iters=iters, isolate=isolate, rounds=rounds)
        s = _json_record(run_dir_of(ck) / "summary.json") or {}
        acc = s.get("test/acc", s.get("val/acc_best"))
        meta = checkpoint_meta(ck)
        e = res["engines"]
        rows.append({
            "model": meta.get("backbone"), "recipe": meta.get("recipe"), "run": str(run_dir_of(ck)),
            "accuracy": acc, "weights_mb": e.get("torch", {}).get("mb"),
            "ms_torch": e.get("torch", {}).get("median_ms"), "ms_ort_fp32": e.get("ort_fp32", {}).get("median_ms"),
            "ms_ort_int8": e.get("ort_int8", {}).get("median_ms"), "int8_mb": e.get("ort_int8", {}).get("mb"),
        })
    return {"device": device_name(), "threads": threads, "rows": rows}


def compare_table(result: dict[str, Any]):
    """A rich table of :func:`compare_runs`."""
    from rich.table import Table

    t = Table(title=f"models on {result['device']}, {result['threads']} threads, batch 1")
    for col in ("model", "recipe", "accuracy", "weights MB", "ms torch", "ms ORT fp32", "ms ORT int8", "int8 MB"):
        t.add_column(col, justify="left" if col in ("model", "recipe") else "right")

    def f(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    for r in result["rows"]:
        t.add_row(str(r["model"]), str(r["recipe"]), f(None if r["accuracy"] is None else r["accuracy"] * 100, ".1f"),
                  f(r["weights_mb"], ".1f"), f(r["ms_torch"], ".1f"), f(r["ms_ort_fp32"], ".1f"),
                  f(r["ms_ort_int8"], ".1f"), f(r["int8_mb"], ".1f"))
    return t


# ----------------------------------------------------------------------------- CLI


def run(cfg: Any) -> int:
    """Benchmark one model or compare several; print the table and write ``bench.json``."""
    setup_logging()
    engines = check_options(cfg)
    if cfg.output:
        check_output_file(cfg.output)
    if cfg.compare:
        if not cfg.output:
            check_output_file("bench.json")
        from birdvision.exporting.samples import run_dir_of

        for target in cfg.compare:  # every run is readable before the first one is timed
            ck = find_checkpoint(target)
            checkpoint_meta(ck)
            summary = run_dir_of(ck) / "summary.json"
            if summary.is_file() and _json_record(summary) is None:
                raise RunError(f"{summary} is damaged (not a JSON object); repair or remove it, then compare again")
        result = compare_runs(list(cfg.compare), threads=cfg.threads, iters=cfg.iters, isolate=cfg.isolate,
                              rounds=cfg.rounds,
                              engines=tuple(e for e in engines if e in ("torch", "ort_fp32", "ort_int8")))
        console.print(compare_table(result))
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
        cfg = parse_cli(BenchConfig, argv, preset_key="preset", preset_dir="bench_presets", prog="birdvision.bench",
                        description="Latency/throughput of a model on PyTorch and ONNX Runtime (fp32/int8/fp16).")
        return run(cfg)

    return run_cli(body, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
