"""Run folders: ``OUTPUT_DIR/<recipe>/<timestamp>/`` with config, classes, checkpoints, metrics, summary."""

from __future__ import annotations

import time
from pathlib import Path

CHECKPOINTS = "checkpoints"


class RunError(ValueError):
    """A run folder or checkpoint that cannot be found or used."""


def new_run_dir(output_dir: str | Path, recipe: str) -> Path:
    """A fresh, timestamped run folder (a suffix keeps two runs in one second apart)."""
    base = Path(output_dir) / recipe
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        d = base / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            d.mkdir(parents=True, exist_ok=False)
            return d
        except FileExistsError:
            continue
    raise RunError(f"cannot create a run folder under {base}")


def checkpoints_of(run_dir: Path) -> list[Path]:
    """All checkpoints of a run, oldest first by modification time."""
    d = Path(run_dir) / CHECKPOINTS
    return sorted(d.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if d.is_dir() else []


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written checkpoint of a run (``last.ckpt`` or an epoch's)."""
    ck = checkpoints_of(run_dir)
    return ck[-1] if ck else None


def resolve_resume(resume: str, output_dir: str | Path, recipe: str) -> tuple[Path, Path]:
    """(run folder, checkpoint) to continue for ``resume=latest`` or ``resume=PATH``."""
    if resume == "latest":
        base = Path(output_dir) / recipe
        runs = sorted((d for d in base.glob("*") if d.is_dir() and latest_checkpoint(d)), key=lambda d: d.name)
        if not runs:
            raise RunError(f"resume=latest: no run of recipe {recipe!r} with a checkpoint under {base}")
        run = runs[-1]
        return run, latest_checkpoint(run)  # type: ignore[return-value]
    p = Path(resume).expanduser()
    if p.is_dir():
        ck = latest_checkpoint(p)
        if ck is None:
            raise RunError(f"resume={p}: the folder has no {CHECKPOINTS}/*.ckpt")
        return p, ck
    if p.is_file() and p.suffix == ".ckpt":
        run = p.parent.parent if p.parent.name == CHECKPOINTS else p.parent
        return run, p
    raise RunError(f"resume={resume}: expected 'latest', a run folder or a .ckpt file")


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a path to one, or to a run folder (its best, else its last)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (p / CHECKPOINTS / name).is_file():
                return p / CHECKPOINTS / name
        ck = latest_checkpoint(p)
        if ck:
            return ck
        raise RunError(f"{p} has no checkpoints (expected {p / CHECKPOINTS}/*.ckpt)")
    if p.exists():
        raise RunError(f"checkpoint {p} is not a regular file")
    raise RunError(f"checkpoint {p} does not exist")
