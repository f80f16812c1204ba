"""Audit throughput on the real photos: cold audit, warm re-audit, and plain cleanvision on the same files.

    python benchmarks/bench_audit.py [PHOTOS_ROOT] [--workers N]

Goals: the cold audit (cleanvision's checks plus unreadable files, leakage, robust near
duplicates, report) is no slower than plain ``cleanvision.Imagelab(...).find_issues()``;
a warm re-audit of the unchanged data is at least 10x faster than the cold one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_ROOT = REPO.parent / "shared" / "realdata" / "photos"


def audit_once(root: Path, out: Path, workers: int) -> tuple[float, dict]:
    """Seconds for one full audit run (inventory, scan, checks, all four outputs)."""
    import json

    from birdvision.checks.policy import AuditConfig
    from birdvision.checks.run import run
    from birdvision.config import load_config

    cfg = load_config(
        AuditConfig,
        [f"data.root={root}", f"output_dir={out}", f"scan.workers={workers}", "scan.progress=false"],
        preset_key="check",
        preset_dir="data_checks",
        default_preset="birds525",
    )
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run(cfg)
    dt = time.perf_counter() - t0
    return dt, json.loads((out / "summary.json").read_text())


def cleanvision_once(files: list[str], workers: int) -> float:
    """Seconds for plain cleanvision over the same files, all default checks."""
    from cleanvision import Imagelab

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        lab = Imagelab(filepaths=files)
        lab.find_issues(n_jobs=workers or None)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(DEFAULT_ROOT))
    ap.add_argument("--workers", type=int, default=0, help="0 = all cores (both tools)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs per tool")
    args = ap.parse_args()
    root = Path(args.root)
    if not root.is_dir():
        raise SystemExit(f"error: {root} not found (the real photos live in ../shared/realdata/photos)")
    import logging

    logging.disable(logging.WARNING)
    # The machine may be shared: alternate the tools and keep each one's best of --repeats runs.
    cold = warm = cv = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            out = Path(tmp) / f"audit{rep}"
            t, summary = audit_once(root, out, args.workers)
            cold = min(cold, t)
            t, summary2 = audit_once(root, out, args.workers)
            warm = min(warm, t)
            files = sorted(r["path"] for r in _manifest_rows(out / "manifest.csv"))
            cv = min(cv, cleanvision_once(files, args.workers))
    n = summary["files"]["audited"]
    print(f"{n} images under {root}")
    scan_s, cached = summary["scan"]["seconds"], summary2["scan"]["cached"]
    print(f"cold audit        {cold:7.2f} s  {n / cold:8.1f} images/s  (scan {scan_s:.2f} s)")
    print(f"warm re-audit     {warm:7.2f} s  {n / warm:8.1f} images/s  ({cached} from cache)")
    print(f"plain cleanvision {cv:7.2f} s  {len(files) / cv:8.1f} images/s")
    print(f"cold vs cleanvision: {cv / cold:.2f}x faster; warm vs cold: {cold / warm:.1f}x faster")


def _manifest_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))  # every audited file, dropped ones included


if __name__ == "__main__":
    main()
