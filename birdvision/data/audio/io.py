"""Audio ingest: decode any recording by its content, resample, mix or split channels, filter.

Every recording enters training and prediction through :func:`load` or
:func:`stream_blocks`, which share one windowed-read routine, so a window cut from a
whole-file load, a window read on its own and a block streamed from a two-hour file are
the same samples (up to float rounding): what the model saw in training is what it sees
in prediction.

Decoding is done by libsndfile (via ``soundfile``), which sniffs the format from the
bytes, not the file name: WAV/WAVEX/RF64, FLAC, OGG/Vorbis/Opus and, from libsndfile
1.1 on, MP3. A RIFF/WAVE file named ``.mp3`` (real data has those) just works.

MP3 headers only *estimate* the frame count (from bitrate and file size); the decoded
length is often 1-3 % shorter. :func:`info` reports the header (fast), :func:`probe`
decodes the whole file in blocks to count frames exactly (constant memory) and is what
window making relies on.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from birdvision.data.audio.dsp import butter_highpass_sos, resample_poly, sosfiltfilt
from birdvision.data.files import class_tree
from birdvision.data.manifest import Sample, label_problem
from birdvision.runs.artifacts import sha256_file

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 32000
STEREO_MODES = ("mix", "split")
StereoMode = Literal["mix", "split"]
# Files in species folders that are certainly not recordings; they are reported, not decoded.
NON_AUDIO_SUFFIXES = {
    ".csv",
    ".txt",
    ".json",
    ".md",
    ".yaml",
    ".yml",
    ".jpg",
    ".jpeg",
    ".png",
    ".pdf",
    ".html",
    ".xml",
    ".zip",
    ".gz",
    ".py",
    ".npy",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".log",  # predict's run log and resume journal, when the output sits inside the input folder
    ".journal",
}
_PROBE_BLOCK_FRAMES = 1 << 18  # 262144 frames per read: ~6 s at 44.1 kHz, a few MB per block
_HIGHPASS_ORDER = 4
_HIGHPASS_MARGIN_S = 0.1  # context around a window so the zero-phase filter's edge transient falls outside


class AudioError(ValueError):
    """A recording that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class AudioInfo:
    """What a recording holds. ``exact`` is False when ``frames`` is a header estimate (MP3)."""

    sample_rate: int
    frames: int
    channels: int
    duration_s: float
    format: str = ""
    subtype: str = ""
    exact: bool = True
    notes: tuple[str, ...] = ()  # what :func:`probe` noticed (truncation, decode stopping early)


@dataclass(frozen=True)
class RecordingProblem:
    """A file found during discovery that will not be used, and why (for the caller to log)."""

    path: str
    label: str
    reason: str


# --------------------------------------------------------------------------------------------------
# Opening and describing files
# --------------------------------------------------------------------------------------------------


def _open(path: str | os.PathLike) -> sf.SoundFile:
    """Open a recording for reading, translating libsndfile's terse errors into :class:`AudioError`."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: file not found")
    if not p.is_file():
        raise AudioError(f"{p}: not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise AudioError(f"{p}: empty file (0 bytes)")
    try:
        f = sf.SoundFile(str(p))
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        msg = str(e)
        # libsndfile says "File does not exist or is not a regular file" for a file it simply
        # cannot parse (MP3 without a sync word, random bytes): say what really happened.
        if "does not exist" in msg or "not recognised" in msg or "Format not recognised" in msg:
            reason = f"not a recognised audio format ({size} bytes; formats are detected by content)"
        else:
            reason = f"cannot decode ({type(e).__name__}: {msg.splitlines()[0] if msg else ''})"
        raise AudioError(f"{p}: {reason}") from None
    if f.frames == 0 or f.samplerate <= 0 or f.channels <= 0:
        f.close()
        raise AudioError(f"{p}: zero frames (header says {f.frames} frames, {f.channels} channel(s))")
    return f


def info(path: str | os.PathLike) -> AudioInfo:
    """Describe a recording from its header only (fast; MP3 frame counts are estimates)."""
    with _open(path) as f:
        exact = f.format != "MP3"
        sr, frames = f.samplerate, f.frames
        return AudioInfo(sr, frames, f.channels, frames / sr, f.format, f.subtype, exact)


def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=65536)
def _probe_cached(key: tuple[str, int, int]) -> AudioInfo:
    path = key[0]
    notes: list[str] = []
    with _open(path) as f:
        frames = 0
        try:
            while True:
                block = f.read(_PROBE_BLOCK_FRAMES, dtype="float32", always_2d=True)
                frames += len(block)
                if len(block) < _PROBE_BLOCK_FRAMES:
                    break
        except (sf.SoundFileError, RuntimeError) as e:
            if frames == 0:
                raise AudioError(f"{path}: decoding failed before the first frame ({e})") from None
            notes.append(f"decoding stopped after {frames} frames ({e}); using what decoded")
        if frames == 0:
            raise AudioError(f"{path}: zero frames decoded (header claimed {f.frames}); truncated or corrupt")
        header = f.frames
        if f.format == "MP3" and header > 0 and frames < 0.95 * header:
            # Normal MP3 estimates are a few % high; a much shorter decode means the file was cut.
            notes.append(f"decoded {frames} of ~{header} frames the header implies; the file looks truncated")
        for n in notes:
            log.warning("%s: %s", path, n)
        return AudioInfo(
            f.samplerate, frames, f.channels, frames / f.samplerate, f.format, f.subtype, True, tuple(notes)
        )


def probe(path: str | os.PathLike) -> AudioInfo:
    """Decode the whole recording (block by block) to learn its exact length; raise :class:`AudioError`.

    Results are cached per (path, size, mtime), so windowing and datasets can call it freely;
    anything odd noticed while decoding is logged once and kept in ``AudioInfo.notes``.
    """
    try:
        key = _file_key(path)
    except OSError:
        raise AudioError(f"{path}: file not found") from None
    return _probe_cached(key)


# --------------------------------------------------------------------------------------------------
# Signal helpers
# --------------------------------------------------------------------------------------------------


def _ratio(orig_sr: int, target_sr: int) -> tuple[int, int]:
    g = math.gcd(int(orig_sr), int(target_sr))
    return int(target_sr) // g, int(orig_sr) // g


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased; exact rational ratio; see :mod:`birdvision.data.audio.dsp`)."""
    if orig_sr == target_sr:
        return x.astype(np.float32, copy=False)
    up, down = _ratio(orig_sr, target_sr)
    return resample_poly(np.asarray(x, np.float32), up, down)


def highpass(x: np.ndarray, sample_rate: int, cutoff_hz: float, order: int = _HIGHPASS_ORDER) -> np.ndarray:
    """Zero-phase Butterworth high-pass along the last axis.

    Zero-phase (forward-backward) so a call's onset is not delayed; the effective order is
    twice ``order``. Removes wind, traffic and handling rumble below most bird song.
    """
    if not 0 < cutoff_hz < sample_rate / 2:
        raise ValueError(f"highpass_hz must be in (0, {sample_rate / 2}), got {cutoff_hz}")
    if x.shape[-1] < 3 * (2 * _HIGHPASS_ORDER + 1) + 1:
        return x.astype(np.float32, copy=False)  # too short for filtfilt's padding; leave as is
    sos = butter_highpass_sos(order, float(cutoff_hz), float(sample_rate))
    if x.ndim == 2 and x.shape[0] == 1:  # one channel: no stacking copy
        return sosfiltfilt(sos, x[0])[None, :]
    return sosfiltfilt(sos, x)


def _channels(x: np.ndarray, stereo: str) -> np.ndarray:
    """[T, C] decoded frames -> [C', T]: one mixed channel, or every channel on its own."""
    if stereo == "mix":
        if x.shape[1] == 1:  # mono: nothing to mix (a mean over one channel costs a pass over the block)
            return x.T
        return x.mean(axis=1, dtype=np.float32)[None, :]
    if stereo == "split":
        return np.ascontiguousarray(x.T, dtype=np.float32)
    raise ValueError(f"stereo must be one of {STEREO_MODES}, got {stereo!r}")


def _finite(x: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    if np.isfinite(np.sum(x, dtype=np.float64)):  # one pass, no mask: a sum is finite iff every sample is
        return x
    bad = ~np.isfinite(x)
    if bad.any():
        n = int(bad.sum())
        warnings.warn(f"{path}: {n} NaN/inf sample(s) replaced by 0", stacklevel=3)
        x = np.where(bad, np.float32(0), x)
    return x


def dbfs(x: np.ndarray) -> float:
    """RMS level relative to a full-scale square wave (a full-scale sine is -3 dBFS; silence is -inf)."""
    ms = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return 10.0 * math.log10(ms) if ms > 0 else float("-inf")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def input_span(src_sr: int, sample_rate: int, o0: int, o1: int | None,
               highpass_hz: float | None) -> tuple[int, int | None]:
    """Input frames ``[a, b)`` that output samples ``[o0, o1)`` at ``sample_rate`` are computed from.

    ``b`` is past ``o1``'s input position by the resampler's half length and the high-pass's
    margin: a live stream can give the window ``[o0, o1)`` exactly once ``b`` frames have arrived.
    """
    up, down = _ratio(src_sr, sample_rate)
    margin = int(math.ceil(10 * max(up, down) / up)) + 16 if src_sr != sample_rate else 0
    if highpass_hz:
        margin += int(_HIGHPASS_MARGIN_S * src_sr)
    a = max(0, (o0 * down // up - margin) // down * down)
    b = None if o1 is None else int(math.ceil(o1 * down / up)) + margin
    return a, b


def read_range(source: sf.SoundFile, name: str | os.PathLike, sample_rate: int, o0: int, o1: int | None, *,
               stereo: StereoMode = "mix", highpass_hz: float | None = None) -> np.ndarray:
    """Output samples ``[o0, o1)`` as float32 ``[channels, T]`` from an open source, exactly as :func:`load` cuts them.

    ``source`` is a ``soundfile.SoundFile`` or anything with its ``samplerate``, ``seek(frame)`` and
    ``read(frames, dtype="float32", always_2d=True)`` (predict's buffer of standard input), so a
    live stream's windows are the same samples as a file's; ``name`` prefixes error messages.
    """
    return _read_range(source, name, sample_rate, o0, o1, stereo, highpass_hz)


def _read_range(
    f: sf.SoundFile,
    path: str | os.PathLike,
    sample_rate: int,
    o0: int,
    o1: int | None,
    stereo: str,
    highpass_hz: float | None,
) -> np.ndarray:
    """Output samples [o0, o1) at ``sample_rate`` (o1=None: to the end), read with enough context.

    Resampling by up/down maps output sample o to input position o*down/up. Reading from an
    input index ``a`` that is a multiple of ``down`` puts the chunk's first output sample on
    the global grid at a*up/down, so a window read alone lines up exactly with the same
    window of a whole-file resample. ``margin`` input samples either side hold the polyphase
    filter's half length (10*max(up, down)/up input samples in scipy) and the high-pass
    filter's transient, so only the true file edges see zero padding.
    """
    src_sr = f.samplerate
    up, down = _ratio(src_sr, sample_rate)
    a, b = input_span(src_sr, sample_rate, o0, o1, highpass_hz)
    try:
        f.seek(a)
        x = f.read(-1 if b is None else b - a, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(f"{path}: decoding failed at frame {a} ({e})") from None
    x = _finite(x, path)
    y = resample(_channels(x, stereo), src_sr, sample_rate)
    if highpass_hz:
        y = highpass(y, sample_rate, highpass_hz)
    first = a * up // down  # global output index of y[:, 0]
    y = y[:, o0 - first :]
    if o1 is not None:
        y = y[:, : o1 - o0]
    return np.ascontiguousarray(y, dtype=np.float32)


def load(
    path: str | os.PathLike,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    stereo: StereoMode = "mix",
    highpass_hz: float | None = None,
) -> np.ndarray:
    """Decode ``path`` (or the range ``[start_s, end_s)``) at ``sample_rate`` as float32 ``[channels, T]``.

    ``channels`` is 1 for ``stereo="mix"`` and the file's channel count for ``"split"``.
    A range past the end comes back shorter (never padded here: padding is a windowing
    decision, see :mod:`birdvision.data.audio.windows`). NaN/inf samples become 0 with a warning.
    """
    if stereo not in STEREO_MODES:
        raise ValueError(f"stereo must be one of {STEREO_MODES}, got {stereo!r}")
    if start_s is not None and start_s < 0:
        raise ValueError(f"start_s must be >= 0, got {start_s}")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
    o0 = 0 if start_s is None else int(round(start_s * sample_rate))
    o1 = None if end_s is None else int(round(end_s * sample_rate))
    with _open(path) as f:
        y = _read_range(f, path, sample_rate, o0, o1, stereo, highpass_hz)
    if y.shape[1] == 0:
        if o0 == 0:
            raise AudioError(f"{path}: zero frames decoded; truncated or corrupt")
        y = np.zeros((y.shape[0], 0), np.float32)
    return y


@dataclass(frozen=True)
class AudioBlock:
    """One streamed block: mono samples at the target rate starting ``start_s`` into the recording."""

    start_s: float
    samples: np.ndarray


def stream_blocks(
    path: str | os.PathLike,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    block_seconds: float = 60.0,
    overlap_seconds: float = 0.0,
    *,
    highpass_hz: float | None = None,
) -> Iterator[AudioBlock]:
    """Yield mono blocks of ``block_seconds`` (the last one may be shorter) with ``overlap_seconds``.

    Memory stays at one block plus context whatever the recording's length: a two-hour
    file is never held whole. Each block is cut exactly like :func:`load` would cut the
    same range, so predictions on blocks match predictions on a whole-file load.
    For window-by-window prediction, set ``overlap_seconds = clip_seconds - hop_seconds``
    so no window straddles two blocks unseen.
    """
    if block_seconds <= 0 or not 0 <= overlap_seconds < block_seconds:
        raise ValueError("need block_seconds > 0 and 0 <= overlap_seconds < block_seconds")
    n = int(round(block_seconds * sample_rate))
    step = n - int(round(overlap_seconds * sample_rate))
    with _open(path) as f:
        o0 = 0
        while True:
            y = _read_range(f, path, sample_rate, o0, o0 + n, "mix", highpass_hz)[0]
            if y.size == 0:
                if o0 == 0:
                    raise AudioError(f"{path}: zero frames decoded; truncated or corrupt")
                return
            yield AudioBlock(o0 / sample_rate, y)
            if y.size < n:
                return
            o0 += step


# --------------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------------


def discover_recordings(
    root: str | os.PathLike,
    *,
    decode: bool = True,
    hash_files: bool = True,
) -> tuple[list[Sample], list[RecordingProblem]]:
    """Find recordings in ``root/<species>/...`` (any depth); return usable samples and the problems.

    Each recording becomes one recording-level :class:`Sample` (label = top folder name,
    group = the recording's path, so every window and channel cut from it later stays in
    one split). Files are judged by content: a ``.mp3`` that is really WAV is fine, a
    ``.wav`` that decodes to nothing is a problem. With ``decode=True`` every file is fully
    decoded once (:func:`probe`: ~2 s for 75 real recordings, 1.2 h of audio) so truncated
    and zero-frame files are caught here rather than mid-epoch. Problems are returned,
    never dropped silently: the caller logs or reports them (symlink loops and FIFOs
    too, see :mod:`birdvision.data.files`). Files directly in ``root`` (such as an index
    CSV) are ignored. A species folder whose name cannot be a class name is an
    :class:`AudioError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise AudioError(f"{root}: recordings folder not found")
    samples: list[Sample] = []
    problems: list[RecordingProblem] = []
    tree = class_tree(root)
    problems += [RecordingProblem(p, "", why) for p, why in tree.top.skipped]
    for species_dir, walk in tree.classes.items():
        label = species_dir.name
        problem = label_problem(label)
        if problem:
            raise AudioError(f"species folder {str(species_dir)!r}: class name {label!r} {problem}; rename it")
        problems += [RecordingProblem(p, label, why) for p, why in walk.skipped]
        for p in walk.files:
            if p.suffix.lower() in NON_AUDIO_SUFFIXES:
                problems.append(RecordingProblem(str(p), label, f"skipped: {p.suffix} is not an audio file"))
                continue
            try:
                meta = probe(p) if decode else info(p)
                for note in meta.notes:  # kept, but the caller hears about it
                    problems.append(RecordingProblem(str(p), label, f"kept with warning: {note}"))
            except AudioError as e:
                problems.append(RecordingProblem(str(p), label, str(e).removeprefix(f"{p}: ")))
                continue
            samples.append(
                Sample(path=str(p), label=label, group=str(p), sha256=sha256_file(p) if hash_files else "")
            )
    for pr in problems:
        log.debug("recording problem: %s: %s", pr.path, pr.reason)
    return samples, problems
