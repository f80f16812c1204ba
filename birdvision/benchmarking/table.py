"""The one model table: what ``python -m birdvision.compare`` and ``python -m birdvision.bench compare=...`` print.

Defined once, here, for both:

- **accuracy** (``test_acc``): the evaluated split's top-1 from the run's ``eval/metrics.json`` when the run
  was evaluated (``test_source=evaluate``), else fit's ``test/acc`` from ``summary.json`` (``fit``);
  ``best_val_acc`` is fit's ``val/acc_best``. Never a validation score passed off as a test one.
- **weights**: bytes of the network's floating-point tensors in the checkpoint (``net.*``: backbone and head,
  not optimiser state or the EMA's second copy), in MB of 10^6 bytes.
- **what is timed** for PyTorch: :func:`timed_module`, the checkpoint as an exported model runs it, one
  example at batch 1: photos as normalised tensors through the network and the calibrated softmax; calls
  as waveform windows through the mel frontend, the network and the softmax.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from birdvision.benchmarking.timing import measure, pin_threads
from birdvision.config import ConfigError
from birdvision.reports.metrics import csv_text, markdown_table, split_metric
from birdvision.runs.artifacts import check_output_dir, write_text
from birdvision.runs.checkpoint import Checkpoint, open_checkpoint
from birdvision.runs.folders import read_run_json

log = logging.getLogger("birdvision.compare")

COLUMNS = ["model", "recipe", "backbone", "mode", "best_val_acc", "test_acc", "test_source", "params_m", "weights_mb",
           "input", "ms_per_image", "ms_p90", "run"]


def weights_bytes(ck: Checkpoint) -> int:
    """Bytes of the network's floating-point tensors (``net.*`` in the state_dict)."""
    return sum(v.numel() * v.element_size() for k, v in ck.raw["state_dict"].items()
               if k.startswith("net.") and v.is_floating_point())


def params_count(ck: Checkpoint) -> int:
    """Parameters of the network (floating-point ``net.*`` tensors that are not buffers of running statistics)."""
    return sum(v.numel() for k, v in ck.raw["state_dict"].items()
               if k.startswith("net.") and v.is_floating_point() and not k.endswith(("running_mean", "running_var")))


class _Timed(torch.nn.Module):
    """A checkpoint as an exported model runs it: frontend (calls only), network, calibrated softmax."""

    def __init__(self, frontend: torch.nn.Module | None, model: torch.nn.Module) -> None:
        super().__init__()
        self.frontend, self.model = frontend, model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frontend is not None:
            x = self.frontend(x)
        return self.model.predict_proba(x)


def timed_module(ck: Checkpoint) -> tuple[torch.nn.Module, torch.Tensor]:
    """What PyTorch timings time (module docstring), and a batch-1 example input for it."""
    spec = ck.spec
    example = torch.randn(1, *spec.frontend_input_shape(int(ck.meta.get("in_chans", 3)))) * 0.1
    return _Timed(spec.frontend(), ck.classifier()).eval(), example


def run_accuracy(run: Path | None) -> dict[str, Any]:
    """``best_val_acc``, ``test_acc`` and ``test_source`` of a run (module docstring); Nones for a loose file."""
    summary = read_run_json(run / "summary.json") if run else {}
    ev = read_run_json(run / "eval" / "metrics.json") if run else {}
    test_acc, source = summary.get("test/acc"), "fit" if summary.get("test/acc") is not None else ""
    evaluated = split_metric(ev, "acc") if ev.get("split", "test") == "test" else None  # old files: "top1"
    if evaluated is not None:
        test_acc, source = evaluated, "evaluate"
    return {"best_val_acc": summary.get("val/acc_best"), "test_acc": test_acc, "test_source": source,
            "recipe": summary.get("recipe", "")}


def model_facts(ck: Checkpoint) -> dict[str, Any]:
    """Every column of the table that is read, not timed."""
    run = ck.run_dir
    meta = ck.meta
    acc = run_accuracy(run)
    return {
        "model": f"{meta.get('recipe') or (run.parent.name if run else ck.path.stem)}/{run.name if run else ck.path.name}",
        "recipe": meta.get("recipe") or acc["recipe"],
        "backbone": meta["backbone"],
        "mode": ck.spec.kind,
        "best_val_acc": acc["best_val_acc"],
        "test_acc": acc["test_acc"],
        "test_source": acc["test_source"],
        "params_m": round(params_count(ck) / 1e6, 3),
        "weights_mb": round(weights_bytes(ck) / 1e6, 2),
        "run": str(run or ck.path),
    }


def check_run(run: Path) -> None:
    """Everything :func:`model_row` reads from a run, read once up front so a damaged run stops the
    comparison before any model is timed."""
    open_checkpoint(run)
    run_accuracy(run)


def model_row(run: Path, *, device: torch.device, iters: int, min_seconds: float) -> dict[str, Any]:
    """The table's row for one run: its facts, and PyTorch eager latency measured now, in this process."""
    ck = open_checkpoint(run)
    module, x = timed_module(ck)
    module, x = module.to(device), x.to(device)

    def call() -> None:
        with torch.inference_mode():
            module(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    t = measure(call, warmup=3, iters=iters, min_seconds=min_seconds)
    return model_facts(ck) | {"input": "x".join(str(s) for s in x.shape), "ms_per_image": round(t.median_ms, 3),
                              "ms_p90": round(t.p90_ms, 3)}


def _busy_note() -> str:
    """A warning when other processes load the CPU: latencies measured then are not comparable to later ones."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return ""
    cores = os.cpu_count() or 1
    if load <= cores:
        return ""
    note = f"the 1-minute load average was {load:.1f} on {cores} cores while timing; latencies are inflated"
    log.warning(note)
    return note


def compare(runs: list[Path], output_dir: str | Path, *, threads: int = 0, iters: int = 20,
            min_seconds: float = 1.0, device: str = "cpu") -> list[dict[str, Any]]:
    """Rows for ``runs`` (timed one after the other), written as ``compare.md`` and ``compare.csv``."""
    out = check_output_dir(output_dir)
    for run in runs:
        check_run(run)
    n = threads or os.cpu_count() or 1
    pin_threads(n)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: CUDA is not available on this machine")
    dev = torch.device(device)
    rows = []
    for run in runs:
        log.info("timing %s", run)
        rows.append(model_row(run, device=dev, iters=iters, min_seconds=min_seconds))
    write_text(out / "compare.csv", csv_text(rows, COLUMNS))
    env = f"{torch.__version__}, {dev.type}, {n} thread(s), batch 1, eager, median of >= {iters} calls"
    shown = [c for c in COLUMNS if c not in ("run", "recipe")]
    busy = _busy_note()
    md = (f"# Model comparison\n\nLatency measured in one process: PyTorch {env}.\n"
          "Accuracies from each run's records (test: eval/metrics.json when evaluated, else summary.json).\n"
          + (f"\n**Warning:** {busy}\n" if busy else "") + "\n" + markdown_table(rows, shown))
    write_text(out / "compare.md", md)
    return rows


# ----------------------------------------------------------------------------- rich tables


def _f(v: Any, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def compare_table(rows: list[dict[str, Any]], title: str):
    """The model table on the console (``python -m birdvision.compare``)."""
    from rich.table import Table

    table = Table(title=title)
    cols = ["model", "best_val_acc", "test_acc", "weights_mb", "ms_per_image"]
    for c in cols:
        table.add_column(c, justify="left" if c == "model" else "right")
    for r in rows:
        table.add_row(*("n/a" if r[c] is None else f"{r[c]:.4f}" if isinstance(r[c], float) and "acc" in c
                        else str(r[c]) for c in cols))
    return table


def engine_table(result: dict[str, Any]):
    """A rich table of one benchmark (:func:`birdvision.benchmarking.benchmark.benchmark_checkpoint`)."""
    from rich.table import Table

    title = f"{result.get('backbone', result.get('model', ''))} on {result['device']}, {result['threads']} threads"
    t = Table(title=title)
    audio = any("x_real_time" in r for r in result["engines"].values())
    cols = ["engine", "file", "MB", "ms b=1 (median)", "p90",
            f"img/s b={next(iter(result['engines'].values())).get('batch', '')}", "x torch (paired)", "acc"] + (
        ["x real time"] if audio else [])
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


def engines_compare_table(result: dict[str, Any]):
    """The model table with each engine's latency (``python -m birdvision.bench compare=...``)."""
    from rich.table import Table

    t = Table(title=f"models on {result['device']}, {result['threads']} threads, batch 1")
    for col in ("model", "recipe", "test acc", "source", "weights MB", "ms torch", "ms ORT fp32", "ms ORT int8", "int8 MB"):
        t.add_column(col, justify="left" if col in ("model", "recipe", "source") else "right")
    for r in result["rows"]:
        t.add_row(str(r["model"]), str(r["recipe"]), _f(None if r["test_acc"] is None else r["test_acc"] * 100, ".1f"),
                  str(r["test_source"]), _f(r["weights_mb"], ".1f"), _f(r["ms_torch"], ".1f"),
                  _f(r["ms_ort_fp32"], ".1f"), _f(r["ms_ort_int8"], ".1f"), _f(r["int8_mb"], ".1f"))
    return t
