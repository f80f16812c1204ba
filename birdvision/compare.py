"""``python -m birdvision.compare runs=DIR[,DIR...]``: one table of accuracy, size and speed across runs.

Accuracy comes from each run's own records (``summary.json``, and ``eval/metrics.json``
when the run was evaluated). Speed is measured here, now, for every model in this one
process with the same pinned thread count, one model after the other: latencies taken
on different days, machines or thread settings are not comparable, and two models timed
concurrently on a 2-core machine slow each other down.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from birdvision.artifacts import OutputError, check_output_dir, write_text
from birdvision.checkpoint import load_classifier, read_checkpoint
from birdvision.config import ConfigError, parse_cli
from birdvision.console import console, run_cli, setup_logging
from birdvision.reports.metrics import csv_text, markdown_table
from birdvision.runs import CHECKPOINTS, RunError, find_checkpoint
from birdvision.spec import from_dict as spec_from_dict
from birdvision.timing import measure, pin_threads

log = logging.getLogger("birdvision.compare")

USER_ERRORS = (ConfigError, RunError, OutputError)
COLUMNS = ["model", "recipe", "backbone", "mode", "best_val_acc", "test_acc", "test_source", "params_m", "weights_mb",
           "input", "ms_per_image", "ms_p90", "run"]


@dataclass
class CompareConfig:
    """Everything ``python -m birdvision.compare`` reads."""

    runs: str | None = None  # comma-separated run folders, or folders holding OUTPUT_DIR/<recipe>/<timestamp> runs
    output_dir: str = "compare"
    threads: int = 0  # intra-op threads for every model; 0 = all cores
    iters: int = 20  # timed calls per model (after 3 warm-up calls)
    min_seconds: float = 1.0  # keep timing each model at least this long
    device: str = "cpu"  # cpu | cuda


def check_options(cfg: Any) -> None:
    """Ranges the schema's types cannot express, checked before any run is read; a bad value names its key."""
    if not 0 <= cfg.threads <= 1024:
        raise ConfigError(f"threads={cfg.threads}: expected an integer in [0, 1024] (0 = all cores)")
    if not 1 <= cfg.iters <= 1_000_000:
        raise ConfigError(f"iters={cfg.iters}: expected an integer in [1, 1000000]")
    if not (math.isfinite(cfg.min_seconds) and 0 <= cfg.min_seconds <= 3600):
        raise ConfigError(f"min_seconds={cfg.min_seconds}: expected seconds in [0, 3600]")
    try:
        dev = torch.device(cfg.device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={cfg.device!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device}: CUDA is not available on this machine")


# ----------------------------------------------------------------------------- finding runs


def is_run_dir(d: Path) -> bool:
    """A run folder has a checkpoints/ folder or a summary.json beside its config."""
    return (d / CHECKPOINTS).is_dir() or ((d / "summary.json").is_file() and (d / "config.yaml").is_file())


def _newest_per_recipe(root: Path) -> list[Path]:
    """The newest run with a checkpoint of each recipe under ``root`` (``root/<recipe>/<timestamp>`` or deeper)."""
    found: dict[str, Path] = {}
    for d in sorted(p for p in root.rglob("*") if p.is_dir() and is_run_dir(p)):
        if not any((d / CHECKPOINTS).glob("*.ckpt")):
            log.warning("skipping %s: no checkpoints", d)
            continue
        recipe = d.parent.name
        # Timestamps sort as text (YYYYmmdd-HHMMSS[-n]); the last one is the newest.
        if recipe not in found or d.name > found[recipe].name:
            found[recipe] = d
    return [found[k] for k in sorted(found)]


def resolve_runs(spec: str) -> list[Path]:
    """Run folders from ``runs=``: each entry is a run folder or a folder of runs (newest per recipe)."""
    out: list[Path] = []
    for raw in (s.strip() for s in spec.split(",")):
        if not raw:
            continue
        p = Path(raw).expanduser()
        if not p.is_dir():
            raise RunError(f"runs: {p} is not a folder")
        if is_run_dir(p):
            find_checkpoint(p)  # a one-line error when the run has no checkpoint
            out.append(p)
            continue
        runs = _newest_per_recipe(p)
        if not runs:
            raise RunError(f"runs: no run folder with checkpoints under {p} (expected RECIPE/TIMESTAMP/checkpoints/*.ckpt)")
        out += runs
    if not out:
        raise ConfigError("runs=DIR[,DIR...] is required")
    unique = list(dict.fromkeys(p.resolve() for p in out))
    return unique


# ----------------------------------------------------------------------------- one row per run


def _read_json(p: Path) -> dict:
    """A run's JSON record, {} when it does not exist; a damaged one is an error (its numbers would be lost)."""
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
        raise RunError(f"{p} is damaged ({str(e)[:120]}); repair or remove it, then compare again") from None
    if not isinstance(data, dict):
        raise RunError(f"{p} is damaged (a JSON {type(data).__name__}, not an object); repair or remove it")
    return data


def check_run(run: Path) -> None:
    """Everything :func:`model_row` reads from a run, read once up front so a damaged run stops the
    comparison before any model is timed."""
    read_checkpoint(find_checkpoint(run))
    _read_json(run / "summary.json")
    _read_json(run / "eval" / "metrics.json")


def example_input(preprocess: dict[str, Any]) -> torch.Tensor:
    """A batch-1 input at the model's own input size: a photo tensor, or a waveform window for call models."""
    spec = spec_from_dict(preprocess)
    if spec.is_audio:
        return torch.randn(1, spec.clip_samples) * 0.1
    return torch.randn(1, *spec.net_input_shape(int(preprocess.get("in_chans", 3))))


def model_row(run: Path, *, device: torch.device, iters: int, min_seconds: float) -> dict[str, Any]:
    """Accuracy from the run's records, size from its weights, latency measured now."""
    ckpt = find_checkpoint(run)
    hp = read_checkpoint(ckpt)["hyper_parameters"]
    summary = _read_json(run / "summary.json")
    ev = _read_json(run / "eval" / "metrics.json")
    test_acc, source = summary.get("test/acc"), "fit" if summary.get("test/acc") is not None else ""
    if ev.get("top1") is not None:
        test_acc, source = ev["top1"], "evaluate"
    model = load_classifier(ckpt)
    net: torch.nn.Module = model.net
    front = spec_from_dict(hp["preprocess"]).frontend()
    # Photos: the network alone. Calls: mel frontend + network, as an exported model runs them.
    runner = torch.nn.Sequential(front, net) if front is not None else net
    runner = runner.to(device).eval()
    x = example_input(hp["preprocess"]).to(device)
    params = sum(p.numel() for p in net.parameters())
    weights = sum(t.numel() * t.element_size() for t in net.state_dict().values())

    def call() -> None:
        with torch.inference_mode():
            runner(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    t = measure(call, warmup=3, iters=iters, min_seconds=min_seconds)
    return {
        "model": f"{hp.get('recipe') or run.parent.name}/{run.name}",
        "recipe": hp.get("recipe") or summary.get("recipe", ""),
        "backbone": hp["backbone"],
        "mode": spec_from_dict(hp["preprocess"]).kind,
        "best_val_acc": summary.get("val/acc_best"),
        "test_acc": test_acc,
        "test_source": source,
        "params_m": round(params / 1e6, 3),
        "weights_mb": round(weights / 1e6, 2),
        "input": "x".join(str(s) for s in x.shape),
        "ms_per_image": round(t.median_ms, 3),
        "ms_p90": round(t.p90_ms, 3),
        "run": str(run),
    }


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
          "Accuracies from each run's summary.json (test: eval/metrics.json when present).\n"
          + (f"\n**Warning:** {busy}\n" if busy else "") + "\n" + markdown_table(rows, shown))
    write_text(out / "compare.md", md)
    return rows


# ----------------------------------------------------------------------------- CLI


def run(cfg: Any) -> list[dict[str, Any]]:
    """Compare as configured and print the table."""
    setup_logging()
    if not cfg.runs:
        raise ConfigError("runs=DIR[,DIR...] is required (run folders, or folders holding recipe/timestamp runs)")
    check_options(cfg)
    check_output_dir(cfg.output_dir)
    rows = compare(resolve_runs(cfg.runs), cfg.output_dir, threads=cfg.threads, iters=cfg.iters,
                   min_seconds=cfg.min_seconds, device=cfg.device)
    from rich.table import Table

    table = Table(title="birdvision compare")
    cols = ["model", "best_val_acc", "test_acc", "weights_mb", "ms_per_image"]
    for c in cols:
        table.add_column(c, justify="left" if c == "model" else "right")
    for r in rows:
        table.add_row(*(f"{r[c]:.4f}" if isinstance(r[c], float) and "acc" in c else "n/a" if r[c] is None else str(r[c])
                        for c in cols))
    console.print(table)
    console.print(f"written to {Path(cfg.output_dir) / 'compare.md'} and compare.csv")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m birdvision.compare``."""

    def body() -> int:
        cfg = parse_cli(CompareConfig, argv, preset_key="preset", preset_dir="compare_presets",
                        prog="birdvision.compare",
                        description="Compare trained runs: accuracy, weights size and latency timed here, now.")
        run(cfg)
        return 0

    return run_cli(body, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
