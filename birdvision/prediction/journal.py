"""The resume journal of a folder run: which files are done, with their rows, safe against ``kill -9``.

``predict`` over a folder keeps ``OUTPUT.journal`` beside the table: JSON lines, appended
and ``fsync``'d in groups (after each batch through the model), never rewritten in place.
The first line is a header naming the model (SHA-256 of the model file) and the settings
that shape the rows (``top_k``, ``min_confidence``, ``always_top1``, ``overlap_seconds``);
every other line is one finished file: its path, the SHA-256 of its content, and either its
rows and warnings or the reason it was skipped. The table is rebuilt from these records at
the end, in input order, so each file appears exactly once however often the run was cut.

Reading is suspicious, not trusting:

- a header for another model or other settings -> the journal is started over, and why is said;
- a last line cut short by a kill (no newline, or not JSON) -> dropped, and the file is cut back
  to the last whole line before anything is appended;
- a damaged line in the middle (not written by this code) -> it and everything after are dropped;
- a record whose file has changed since (another content hash) -> the file is predicted again;
- two records for one file (cannot happen when one run appends at a time) -> the last one counts.

One run at a time holds the journal (an exclusive ``flock``); a second run on the same output
is refused rather than interleaving lines.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from birdvision import __version__
from birdvision.prediction import PredictError

log = logging.getLogger("birdvision.predict")

FORMAT = 1
RESULT_SETTINGS = ("top_k", "min_confidence", "always_top1", "overlap_seconds")


def journal_path_for(output: str | Path) -> Path:
    """The journal beside the table: ``predictions.csv`` -> ``predictions.journal``."""
    p = Path(output)
    return p.with_suffix(".journal") if p.suffix else p.with_name(p.name + ".journal")


def result_settings(cfg: Any, *, audio: bool) -> dict[str, Any]:
    """The settings that change the rows (batching, threads and block size do not)."""
    out = {k: getattr(cfg, k) for k in RESULT_SETTINGS if audio or k != "overlap_seconds"}
    out["top_k"] = cfg.top_k or (1 if audio else 5)
    out["kind"] = "recordings" if audio else "photos"
    return out


@dataclass
class Record:
    """One finished file: predicted (rows, warnings, stats) or skipped (reason)."""

    file: str
    sha256: str
    status: str  # "predicted" | "skipped"
    rows: list[list[Any]] = field(default_factory=list)  # [species, confidence] or [species, confidence, start, end]
    notes: list[str] = field(default_factory=list)  # warnings (predicted) or [reason] (skipped)
    items: int = 0  # windows / photos through the model
    audio_seconds: float = 0.0
    max_block: int = 0

    def line(self) -> str:
        return json.dumps({"file": self.file, "sha256": self.sha256, "status": self.status, "rows": self.rows,
                           "notes": self.notes, "items": self.items, "audio_seconds": self.audio_seconds,
                           "max_block": self.max_block}, allow_nan=False) + "\n"  # ASCII: undecodable names (surrogates) survive

    @classmethod
    def parse(cls, d: Any) -> Record | None:
        """A record from a decoded line, or None when it is not one (wrong fields or types)."""
        try:
            if not isinstance(d, dict) or d.get("status") not in ("predicted", "skipped"):
                return None
            rows = d.get("rows", [])
            ok_rows = isinstance(rows, list) and all(
                isinstance(r, list) and len(r) in (2, 4) and isinstance(r[0], str)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r[1:]) for r in rows)
            notes = d.get("notes", [])
            if not (isinstance(d.get("file"), str) and isinstance(d.get("sha256"), str) and len(d["sha256"]) == 64
                    and ok_rows and isinstance(notes, list) and all(isinstance(n, str) for n in notes)):
                return None
            return cls(d["file"], d["sha256"], d["status"], rows, notes, int(d.get("items", 0)),
                       float(d.get("audio_seconds", 0.0)), int(d.get("max_block", 0)))
        except (TypeError, ValueError):
            return None


class Journal:
    """An open journal: the records that can be trusted, and an append handle holding the lock."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path, self.header = path, header
        self.records: dict[str, Record] = {}
        self.notes: list[str] = []  # what opening it found and did (started over, repaired), for the log
        self._fh: Any = None
        self._pending: list[str] = []

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path, *, model_digest: str, settings: dict[str, Any], resume: bool = True) -> Journal:
        """Open (or start) the journal at ``path`` for this model and these settings; locks it for this run."""
        path = Path(path)
        header = {"journal": FORMAT, "birdvision_version": __version__, "model_sha256": model_digest,
                  "settings": settings}
        j = cls(path, header)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PredictError(f"the journal {path} is in use by another predict run on the same output; "
                               "wait for it or choose another output=") from None
        j._fh = os.fdopen(fd, "r+b")
        try:
            keep = j._read(resume)
        except BaseException:
            j.close()
            raise
        j._fh.seek(keep)
        j._fh.truncate(keep)
        if keep == 0:
            j._fh.write((json.dumps(header, sort_keys=True) + "\n").encode())
        j._sync()
        return j

    def _read(self, resume: bool) -> int:
        """Load trusted records; return the byte length of the journal to keep (0: start over)."""
        fh = self._fh
        fh.seek(0)
        data = fh.read()
        if not data:
            return 0
        if not resume:
            self.notes.append(f"resume=false: the journal {self.path} was started over")
            return 0
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]  # a last piece without newline was cut short
        try:
            head = json.loads(complete[0]) if complete else None
        except (ValueError, UnicodeDecodeError):
            head = None
        if not isinstance(head, dict) or head.get("journal") != FORMAT:
            self.notes.append(f"the journal {self.path} has no readable header (not a birdvision journal, "
                              "or damaged): started over")
            return 0
        why = self._mismatch(head)
        if why:
            self.notes.append(f"the journal {self.path} {why}: started over, every file is predicted again")
            return 0
        keep = len(complete[0]) + 1
        for i, raw in enumerate(complete[1:], 1):
            try:
                rec = Record.parse(json.loads(raw))
            except (ValueError, UnicodeDecodeError):
                rec = None
            if rec is None:
                self.notes.append(f"the journal {self.path} has a damaged line ({i + 1}): it and the "
                                  f"{len(complete) - i - 1} line(s) after it were dropped (those files are predicted again)")
                return keep
            self.records[rec.file] = rec
            keep += len(raw) + 1
        if tail:
            self.notes.append(f"the journal {self.path} ended in a line cut short (a killed run): "
                              f"dropped {len(tail)} byte(s); that file is predicted again")
        return keep

    def _mismatch(self, head: dict[str, Any]) -> str | None:
        if head.get("model_sha256") != self.header["model_sha256"]:
            return (f"was written for another model (sha256 {str(head.get('model_sha256'))[:12]}..., "
                    f"this one is {self.header['model_sha256'][:12]}...)")
        old, new = head.get("settings"), self.header["settings"]
        if old != new:
            if not isinstance(old, dict):
                return "was written with unknown settings"
            diff = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                             if old.get(k) != new.get(k))
            return f"was written with other settings ({diff})"
        return None

    # ----------------------------------------------------------------- use
    def done(self, file: str, sha256: str) -> Record | None:
        """The record of ``file`` when its content is unchanged since it was journalled, else None."""
        rec = self.records.get(file)
        if rec is None:
            return None
        if rec.sha256 != sha256:
            self.notes.append(f"{file} changed since it was journalled (another content hash): predicted again")
            return None
        return rec

    def add(self, rec: Record) -> None:
        """Queue a finished file; it is durable after the next :meth:`commit`."""
        self.records[rec.file] = rec
        self._pending.append(rec.line())

    def commit(self) -> None:
        """Append the queued records and fsync: after this returns, a kill loses none of them."""
        if self._pending and self._fh is not None:
            self._fh.write("".join(self._pending).encode())
            self._pending = []
            self._sync()

    def _sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Commit what is queued and release the lock."""
        if self._fh is not None:
            try:
                self.commit()
            finally:
                self._fh.close()  # closing the descriptor releases the flock
                self._fh = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
