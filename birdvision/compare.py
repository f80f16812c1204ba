"""``python -m birdvision.compare runs=DIR[,DIR...]``: one table of accuracy, size and speed across runs.

The table is :mod:`birdvision.benchmarking.table` (which accuracy, which bytes, what is timed, defined
once for this command and ``bench compare=``). Speed is measured here, now, for every model in this one
process with the same pinned thread count, one model after the other: latencies taken on different days,
machines or thread settings are not comparable, and two models timed concurrently on a 2-core machine
slow each other down.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from birdvision.benchmarking.table import compare, compare_table
from birdvision.config import ConfigError, parse_cli
from birdvision.console import console, run_cli, setup_logging
from birdvision.runs.artifacts import OutputError, check_output_dir
from birdvision.runs.folders import RunError, resolve_runs

log = logging.getLogger("birdvision.compare")

USER_ERRORS = (ConfigError, RunError, OutputError)


@dataclass
class CompareConfig:
    """Everything ``python -m birdvision.compare`` reads."""

    runs: str | None = None  # comma-separated run folders, or folders holding OUTPUT_DIR/<recipe>/<timestamp> runs
    output_dir: str = "compare"  # compare.md and compare.csv go here
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
    console.print(compare_table(rows, "birdvision compare"))
    console.print(f"written to {Path(cfg.output_dir) / 'compare.md'} and compare.csv")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m birdvision.compare``."""

    def body() -> int:
        cfg = parse_cli(CompareConfig, argv, preset_key="preset",
                        prog="birdvision.compare",
                        description="Compare trained runs: accuracy, weights size and latency timed here, now.")
        run(cfg)
        return 0

    return run_cli(body, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
