"""Which files to predict on: one file as given, or every plausible file under a folder.

A single file is always tried, whatever its name (recordings and photos are decoded by
content, so a WAV named ``.mp3`` works). In a folder, files are walked recursively in
sorted order (:func:`birdvision.data.files.walk_files`); hidden files are ignored; files
whose suffix says they are certainly not of the model's kind (a CSV index, photos beside
recordings), symlink loops and FIFOs are passed over and listed in the log, never silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from birdvision.data.audio.io import NON_AUDIO_SUFFIXES
from birdvision.data.files import walk_files
from birdvision.prediction import PredictError

AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".au", ".w64", ".rf64", ".m4a",
                  ".aac", ".wma"}
NON_PHOTO_SUFFIXES = (NON_AUDIO_SUFFIXES - {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}) \
    | AUDIO_SUFFIXES


@dataclass
class Inputs:
    """The files to try, and those passed over by name (path, reason)."""

    files: list[Path] = field(default_factory=list)
    passed_over: list[tuple[str, str]] = field(default_factory=list)


def find_inputs(path: str | Path, *, audio: bool) -> Inputs:
    """Files to predict on under ``path`` (a file or a folder) for an audio or a photo model."""
    p = Path(path).expanduser()
    if not p.exists():
        raise PredictError(f"input {p} does not exist")
    if p.is_file():
        return Inputs([p])
    if not p.is_dir():
        raise PredictError(f"input {p} is neither a file nor a folder")
    skip = NON_AUDIO_SUFFIXES if audio else NON_PHOTO_SUFFIXES
    kind = "a recording" if audio else "a photo"
    walk = walk_files(p)
    out = Inputs(passed_over=list(walk.skipped))
    for f in walk.files:
        if f.suffix.lower() in skip:
            out.passed_over.append((str(f), f"not {kind} by its name ({f.suffix})"))
            continue
        out.files.append(f)
    if not out.files:
        raise PredictError(f"no candidate {'recordings' if audio else 'photos'} under {p} "
                           f"({len(out.passed_over)} other file(s) passed over)")
    return out
