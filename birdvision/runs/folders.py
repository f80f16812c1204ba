"""Run folders: ``OUTPUT_DIR/<recipe>/<timestamp>/`` with config, classes, checkpoints, metrics, summary.

One process writes a run folder at a time (:func:`run_lock`); a resumed run continues from its
newest training state (:func:`resume_checkpoint`), and its ``metrics.csv`` keeps every earlier
epoch (:func:`trim_metrics`, :func:`append_metrics`).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from birdvision.runs.artifacts import remove_stale_temporaries, write_text

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
METRICS = "metrics.csv"
LOCK = ".lock"
ORPHAN_WAIT_S = 30.0  # how long a run whose process is gone may stay locked by its exiting workers
_EPOCH_FILE = re.compile(r"^epoch=(\d+)\.ckpt$")


class RunError(ValueError):
    """A run folder or checkpoint that cannot be found or used."""


def new_run_dir(output_dir: str | Path, recipe: str) -> Path:
    """A fresh, timestamped run folder (a suffix keeps two runs in one second apart)."""
    base = Path(output_dir) / recipe
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"output_dir={output_dir}: cannot create {base} ({e.strerror or e})") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        d = base / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            d.mkdir(exist_ok=False)
            return d
        except FileExistsError:
            continue
        except OSError as e:
            raise RunError(f"output_dir={output_dir}: cannot create a run folder in {base} ({e.strerror or e})") from None
    raise RunError(f"cannot create a run folder under {base}")


def checkpoints_of(run_dir: Path) -> list[Path]:
    """All checkpoints of a run, oldest first by modification time."""
    d = Path(run_dir) / CHECKPOINTS
    return sorted(d.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if d.is_dir() else []


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written checkpoint of a run (any, ``best.ckpt`` included)."""
    ck = checkpoints_of(run_dir)
    return ck[-1] if ck else None


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest training state of a run: ``last.ckpt``, or the highest ``epoch=N.ckpt`` if a kill
    came between writing it and ``last.ckpt``. Never ``best.ckpt``: evaluation rewrites it (with the
    fitted temperature), which makes it the newest file without making it the newest state."""
    d = Path(run_dir) / CHECKPOINTS
    epochs = sorted(((int(m.group(1)), p) for p in d.glob("epoch=*.ckpt") if (m := _EPOCH_FILE.match(p.name))),
                    key=lambda t: t[0])
    last = d / "last.ckpt"
    newest_epoch = epochs[-1][1] if epochs else None
    if last.is_file() and (newest_epoch is None or last.stat().st_mtime >= newest_epoch.stat().st_mtime):
        return last
    return newest_epoch


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` looks like a birdvision run folder: a checkpoints folder, or a finished run's summary
    beside its config (a run whose checkpoints were moved away)."""
    path = Path(path)
    return (path / CHECKPOINTS).is_dir() or ((path / "summary.json").is_file() and (path / "config.yaml").is_file())


def resolve_resume(resume: str, output_dir: str | Path, recipe: str) -> tuple[Path | None, Path]:
    """(run folder, checkpoint) to continue for ``resume=latest``, ``resume=RUN_DIR`` or ``resume=FILE``.

    The run folder is None for a checkpoint that is not inside a birdvision run folder: the
    run continues in a new folder rather than writing beside someone else's file.
    """
    if resume == "latest":
        base = Path(output_dir) / recipe
        runs = sorted((d for d in base.glob("*") if d.is_dir() and resume_checkpoint(d)), key=lambda d: d.name)
        if not runs:
            raise RunError(f"resume=latest: no run of recipe {recipe!r} with a checkpoint under {base}")
        run = runs[-1]
        return run, resume_checkpoint(run)  # type: ignore[return-value]
    p = Path(resume).expanduser()
    if p.is_dir():
        ck = resume_checkpoint(p)
        if ck is None:
            raise RunError(f"resume={p}: the folder has no {CHECKPOINTS}/last.ckpt or epoch=N.ckpt")
        return p, ck
    if p.is_file():  # continue in its run folder only when birdvision wrote one there (its config)
        run = run_dir_of(p)
        return (run if run is not None and (run / "config.yaml").is_file() else None), p
    raise RunError(f"resume={resume}: expected 'latest', a run folder or a checkpoint file (none at {p})")


def _pid_of_holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _flock(fd: int, path: Path) -> bool:
    """Take the run's lock; False when a live process holds it.

    A run killed with SIGKILL dies at once, but its data-loader workers (forked, so they share the
    lock's open file) exit only when they notice, seconds later on a loaded machine. While the
    process named in the lock file is gone, the lock is waited for (up to ``ORPHAN_WAIT_S``) instead
    of refusing a ``resume=`` that came right after the kill.
    """
    deadline = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if _alive(_pid_of_holder(path)):
                return False
            now = time.monotonic()
            if deadline is None:
                deadline = now + ORPHAN_WAIT_S
                log.info("the run's last process (pid %s) is gone; waiting for its worker processes to exit",
                         _pid_of_holder(path))
            if now >= deadline:
                return False
            time.sleep(0.2)


_HELD: dict[str, int] = {}  # run folders this process holds, with a depth: fit holds its run while evaluating it


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for this process: a second writer is refused with a clear message.

    An advisory ``flock`` on ``RUN_DIR/.lock``, released by the kernel when the process ends,
    however it ends, so a killed run never leaves a stale lock behind. Re-entrant within a process.
    Temporary files that an interrupted write left in the folder are removed once it is held.
    """
    key = os.path.realpath(run_dir)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path = Path(run_dir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if not _flock(fd, path):
        os.close(fd)
        raise RunError(f"{run_dir} is in use by another birdvision process (pid {_pid_of_holder(path)}); "
                       "wait for it to finish or stop it first") from None
    _HELD[key] = 1
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        for d in (Path(run_dir), Path(run_dir) / CHECKPOINTS, Path(run_dir) / "eval"):
            for p in remove_stale_temporaries(d):
                log.info("removed %s, left by a write that was interrupted", p)
        yield
    finally:
        del _HELD[key]
        os.close(fd)


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint file belongs to (``RUN/checkpoints/x.ckpt`` -> ``RUN``), or None for a loose
    file. The one answer to "which run is this?" for every command."""
    run = Path(checkpoint).parent.parent
    return run if Path(checkpoint).parent.name == CHECKPOINTS and run.is_dir() else None


def export_dir_of(checkpoint: Path) -> Path:
    """Where a checkpoint's exports go by default: ``RUN/export``, or ``export/`` beside a loose file."""
    return (run_dir_of(checkpoint) or Path(checkpoint).parent) / "export"


def read_run_json(path: Path) -> dict:
    """A run's JSON record (``summary.json``, ``eval/metrics.json``), {} when it does not exist; a damaged one is
    a :class:`RunError` (a table built without it would silently lose its numbers)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
        raise RunError(f"{path} is damaged ({str(e)[:120]}); repair or remove it, then try again") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} is damaged (a JSON {type(data).__name__}, not an object); repair or remove it")
    return data


def read_json_record(path: Path) -> dict | None:
    """A JSON record that can be made again (an export's ``export.json``, ``parity.json``): None when missing
    or damaged (logged), so the caller redoes the work instead of failing."""
    try:
        return read_run_json(path) or None
    except RunError as e:
        log.warning("ignoring %s", e)
        return None


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
    """Run folders from a comma-separated list: each entry is a run folder or a folder of runs (newest per recipe)."""
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
        raise RunError("runs=DIR[,DIR...] names no run folder")
    return list(dict.fromkeys(p.resolve() for p in out))


# ----------------------------------------------------------------------------- metrics history


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k is not None} for row in csv.DictReader(f)]


def _write_rows(path: Path, rows: list[dict]) -> None:
    keys = sorted({k for r in rows for k in r})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def append_metrics(run_dir: Path, rows: list[dict]) -> None:
    """Add rows to ``metrics.csv`` (the header grows to the union of keys), atomically."""
    if rows:
        path = Path(run_dir) / METRICS
        _write_rows(path, _read_rows(path) + rows)


def trim_metrics(run_dir: Path, after_epoch: int) -> int:
    """Drop training/validation rows logged after ``after_epoch`` (the epoch a resumed checkpoint
    ended): they belong to an attempt that was interrupted. Test rows stay as history.
    Returns the number of rows dropped."""
    path = Path(run_dir) / METRICS
    rows = _read_rows(path)

    def later(r: dict) -> bool:
        e = r.get("epoch") or ""
        tested = any(k.startswith("test/") and r[k] not in ("", None) for k in r)
        return e.isdigit() and int(e) > after_epoch and not tested

    kept = [r for r in rows if not later(r)]
    if len(kept) != len(rows):
        _write_rows(path, kept)
    return len(rows) - len(kept)


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
