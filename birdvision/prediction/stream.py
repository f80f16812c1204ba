"""``input=-``: predict on raw PCM from standard input, each window's rows written as it completes.

    arecord -f S16_LE -r 48000 -c 1 -t raw | python -m birdvision.predict model=model.onnx input=- \\
        stream.sample_rate=48000 output=-

Raw PCM has no header, so its format is given: ``stream.sample_rate``, ``stream.channels``
(interleaved, mixed to mono like a file's channels) and ``stream.format`` (``s16le``, ``s24_3le``,
``s32le``, ``f32le``; arecord's names ``S16_LE`` ... work too). Integers are scaled to [-1, 1)
exactly as libsndfile reads a WAV file of that format, so the samples equal a file's.

The frames read so far sit in a buffer that reads like an open sound file, and every window is
cut from it by :func:`birdvision.data.audio.io.read_range`, the routine files go through: the same
resampling, mono mix and high-pass, on the same window grid from 0 (``overlap_seconds`` too).
So a stream gives the rows a file with the same samples gives (to float rounding: a file is
filtered in long blocks, a stream window by window, with the same margin either side of each).

A window is predicted once the frames it needs have arrived: its own plus a margin past its
end for the resampler and the zero-phase high-pass (0.1 s with ``highpass_hz``, a few ms of
resampler taps otherwise). Its rows are written and flushed at once. When the stream runs ahead
of the model (a file piped in), ready windows share batches of up to ``batch_size``; decoding runs
``prefetch`` batches ahead in a thread, as for files.

The end: when standard input closes, the rest is predicted as the end of a file is. The last
window that starts before the end and is not already covered is zero-padded, and its row ends at
the end of the audio (a stream that stops 2.3 s into a 5 s window gives a row ``[t, t + 2.3)``).
Bytes left over that do not make a whole frame are dropped with a warning (a wrong
``stream.format`` or ``stream.channels``, or a writer killed mid-frame). NaN/inf samples (f32le)
become 0 with a warning, as in files, and no row is lost. Rows written stay written whatever
happens later (an error, Ctrl-C, a reader that closes the output).
"""

from __future__ import annotations

import logging
import math
import os
import select
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO, TextIO

import numpy as np

from birdvision.data.audio.io import AudioError, input_span, read_range
from birdvision.prediction import PredictError
from birdvision.prediction.grid import StreamNotes, WindowGrid
from birdvision.prediction.options import PCM_FORMATS, check_options, pcm_format
from birdvision.prediction.outputs import check_outputs, log_header, log_path_for
from birdvision.prediction.prefetch import prefetch
from birdvision.prediction.tables import Row, predictions_csv, raven_band, raven_table
from birdvision.runs.artifacts import write_text

log = logging.getLogger("birdvision.predict")

STREAM_NAME = "stdin"  # the file column of a stream's rows
_READ_BYTES = 1 << 16  # one read of standard input (a pipe holds 64 KiB)
_NAN_WARN_EVERY_S = 60.0  # NaN/inf warnings on the console: at most one per minute of stream


@dataclass(frozen=True)
class PcmSpec:
    """Interleaved little-endian PCM frames: ``format``, frames per second, channels."""

    format: str
    sample_rate: int
    channels: int = 1

    @classmethod
    def from_config(cls, stream: Any) -> PcmSpec:
        fmt = pcm_format(stream.format)
        if fmt is None:
            raise PredictError(f"stream.format={stream.format!r}: expected one of {', '.join(PCM_FORMATS)}")
        if stream.sample_rate is None:
            raise PredictError("input=- needs stream.sample_rate= (raw PCM has no header)")
        return cls(fmt, int(stream.sample_rate), int(stream.channels))

    @property
    def frame_bytes(self) -> int:
        return PCM_FORMATS[self.format] * self.channels

    def describe(self) -> str:
        return f"{self.format}, {self.channels} channel(s), {self.sample_rate} Hz"

    def decode(self, data: bytes) -> np.ndarray:
        """Whole frames -> float32 ``[frames, channels]`` (a new, writable array)."""
        if self.format == "s16le":
            x = np.frombuffer(data, "<i2").astype(np.float32) * np.float32(2.0**-15)
        elif self.format == "s32le":
            x = np.frombuffer(data, "<i4").astype(np.float32) * np.float32(2.0**-31)
        elif self.format == "s24_3le":
            b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
            v = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8) >> 8  # sign-extend 24 -> 32 bits
            x = v.astype(np.float32) * np.float32(2.0**-23)
        else:
            x = np.frombuffer(data, "<f4").astype(np.float32)
        return x.reshape(-1, self.channels)


@dataclass
class PcmNotes:
    """What reading the stream noticed: frames, replaced NaN/inf samples, bytes short of a frame at the end."""

    frames: int = 0
    nonfinite: int = 0
    stray_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def _reader(source: BinaryIO) -> tuple[Callable[[int], bytes], Callable[[], bool]]:
    """``read(n)`` returning what is available (at least one byte, or b"" at the end) and ``ready()``:
    whether more can be read without waiting. Raw ``os.read`` on a real file descriptor (no buffering
    that could hold a window's last bytes back), the object's own reads otherwise (a sound device, tests);
    an object with its own ``ready()`` (:class:`birdvision.prediction.mic.MicSource`) says itself."""
    if callable(getattr(source, "ready", None)):
        return source.read1, source.ready
    try:
        fd = source.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is not None:
        def ready() -> bool:
            try:
                return bool(select.select([fd], [], [], 0)[0])
            except (OSError, ValueError):
                return False

        return (lambda n: os.read(fd, n)), ready
    return getattr(source, "read1", None) or source.read, (lambda: True)


def read_pcm(source: BinaryIO, spec: PcmSpec, notes: PcmNotes, *, coalesce_bytes: int = _READ_BYTES) -> Iterator[np.ndarray]:
    """Frames ``[n, channels]`` float32 as they arrive; NaN/inf become 0 (warned), a partial last frame is dropped.

    Reads that can be made without waiting are joined up to ``coalesce_bytes`` (a piped file fills
    whole batches); a live source is handed on after every read, so no frame waits for company.
    """
    read, ready = _reader(source)
    fb = spec.frame_bytes
    rest = b""
    last_warned: float | None = None
    eof = False
    while not eof:
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                data = read(_READ_BYTES)
            except OSError as e:
                raise PredictError(f"the stream could not be read ({e.strerror or e})") from None
            if not data:
                eof = True
                break
            parts.append(data)
            size += len(data)
            if size >= coalesce_bytes or not ready():
                break
        buf = rest + b"".join(parts) if rest else b"".join(parts)
        whole = len(buf) // fb * fb
        rest = buf[whole:]
        if not whole:
            continue
        x = spec.decode(buf[:whole])
        if spec.format == "f32le" and not np.isfinite(np.sum(x, dtype=np.float64)):
            bad = ~np.isfinite(x)
            n_bad = int(bad.sum())
            t = (notes.frames + int(np.argmax(bad.any(axis=1)))) / spec.sample_rate
            x[bad] = 0.0
            notes.nonfinite += n_bad
            if last_warned is None or t - last_warned >= _NAN_WARN_EVERY_S:
                log.warning("%s: %d NaN/inf sample(s) at %.2f s replaced by 0 (%d so far; is stream.format=%s right?)",
                            STREAM_NAME, n_bad, t, notes.nonfinite, spec.format)
                last_warned = t
        notes.frames += len(x)
        yield x
    if rest:
        notes.stray_bytes = len(rest)
        msg = (f"the stream ended with {len(rest)} byte(s) short of a whole frame ({fb} bytes: {spec.format} x "
               f"{spec.channels} channel(s)); they were dropped. If this is not a writer stopped mid-frame, "
               "stream.format or stream.channels do not match the data")
        notes.notes.append(msg)
        log.warning("%s: %s", STREAM_NAME, msg)
    if notes.nonfinite:
        notes.notes.append(f"NaN/inf samples replaced by 0 ({notes.nonfinite} in all)")


class FrameBuffer:
    """The stream's frames that windows still need, read like an open ``soundfile.SoundFile``.

    Frames are numbered from the start of the stream; :meth:`drop_before` forgets those no window
    needs any more, so memory holds about one window plus its margins whatever the stream's length.
    """

    def __init__(self, samplerate: int, channels: int) -> None:
        self.samplerate, self.channels = int(samplerate), int(channels)
        self.base = 0  # frame number of data[0]
        self.end = 0  # frames received
        self._data = np.zeros((0, channels), np.float32)
        self._pending: list[np.ndarray] = []
        self._pos = 0

    def append(self, frames: np.ndarray) -> None:
        self._pending.append(frames)
        self.end += len(frames)

    def _join(self) -> np.ndarray:
        if self._pending:
            self._data = np.concatenate([self._data, *self._pending])
            self._pending = []
        return self._data

    def drop_before(self, frame: int) -> None:
        if frame > self.base:
            data = self._join()
            self._data = data[min(frame - self.base, len(data)):]
            self.base = frame

    def held(self) -> int:
        return self.end - self.base

    # the soundfile API that read_range uses
    def seek(self, frame: int) -> int:
        if frame < self.base:
            raise AudioError(f"{STREAM_NAME}: frame {frame} was already dropped (buffer starts at {self.base})")
        self._pos = int(frame)
        return self._pos

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        data = self._join()
        lo = self._pos - self.base
        hi = len(data) if frames < 0 else min(len(data), lo + frames)
        self._pos = self.base + hi
        return data[lo:hi]


def stream_windows_pcm(chunks: Iterable[np.ndarray], spec: PcmSpec, grid: WindowGrid, *,
                       highpass_hz: float | None = None,
                       notes: StreamNotes | None = None) -> Iterator[list[tuple[int, int, np.ndarray]]]:
    """After each chunk of frames, the windows it completed: ``[(start, valid, window)]`` in samples at the
    model's rate (new arrays; ``valid < grid.clip`` only for the zero-padded last window).

    The same windows, starts and samples as :func:`birdvision.prediction.grid.stream_windows` gives for
    a file holding the stream's frames. Raises :class:`PredictError` when the stream ends before a frame.
    """
    notes = notes if notes is not None else StreamNotes()
    src, sr, clip, hop = spec.sample_rate, grid.sample_rate, grid.clip, grid.hop
    g = math.gcd(src, sr)
    up, down = sr // g, src // g
    frames = FrameBuffer(src, spec.channels)
    start = covered = 0

    def needs(o0: int) -> int:  # frames that must have arrived before the window at o0 can be cut
        return int(input_span(src, sr, o0, o0 + clip, highpass_hz)[1] or 0)

    def cut(o0: int, o1: int) -> np.ndarray:
        return read_range(frames, STREAM_NAME, sr, o0, o1, highpass_hz=highpass_hz)[0]

    def done(s: int, valid: int, w: np.ndarray) -> tuple[int, int, np.ndarray]:
        if valid:
            notes.peak = max(notes.peak, float(np.abs(w[:valid]).max()))
        notes.max_block = max(notes.max_block, frames.held())
        return s, valid, w

    for chunk in chunks:
        frames.append(chunk)
        ready = []
        while frames.end >= needs(start):
            ready.append(done(start, clip, cut(start, start + clip)))
            covered, start = start + clip, start + hop
            frames.drop_before(input_span(src, sr, start, start + clip, highpass_hz)[0])
        notes.samples = frames.end * up // down
        if ready:
            yield ready
    if frames.end == 0:
        raise PredictError("the stream ended before a single frame of audio arrived")
    end = -(-frames.end * up // down)  # output samples of the whole stream, as resampling a file of it gives
    notes.samples = end
    tail = []
    while start < end:
        if start + clip <= end:
            tail.append(done(start, clip, cut(start, start + clip)))
            covered = start + clip
        elif covered < end:
            y = cut(start, end)
            w = np.zeros(clip, np.float32)
            w[: len(y)] = y
            tail.append(done(start, end - start, w))
            covered = end
        else:
            break
        start += hop
    if tail:
        yield tail


@dataclass
class StreamResult:
    """What a stream run did (the fields the run log and the console summary read)."""

    spec: PcmSpec
    rows: list[Row] = field(default_factory=list)  # kept only for a Raven table
    rows_written: int = 0
    items: int = 0  # windows through the model
    audio_seconds: float = 0.0
    predict_s: float = 0.0
    max_block_samples: int = 0
    warnings: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the stream run ended early (the output's reader went away), if it did
    source: str = STREAM_NAME  # the rows' file column: stdin, or the sound device (mic:...)


def _batches(windows: Iterable[list[tuple[int, int, np.ndarray]]],
             batch_size: int) -> Iterator[tuple[list[tuple[int, int]], np.ndarray]]:
    for ready in windows:
        for i in range(0, len(ready), batch_size):
            part = ready[i: i + batch_size]
            yield [(s, v) for s, v, _ in part], np.stack([w for _, _, w in part])


def predict_stream(predictor: Any, cfg: Any, source: BinaryIO, out: TextIO, result: StreamResult, *,
                   keep_rows: bool = False) -> StreamResult:
    """Predict the PCM stream ``source`` window by window, writing and flushing rows to ``out`` as they come.

    ``result`` is filled in as the stream goes (so what was done is known if it stops with an error).
    """
    pre = predictor.preprocess
    sr = int(pre["sample_rate"])
    try:
        grid = WindowGrid.from_seconds(sr, float(pre["clip_seconds"]), float(cfg.overlap_seconds))
    except ValueError as e:
        raise PredictError(str(e)) from None
    spec = result.spec
    pcm_notes, notes = PcmNotes(), StreamNotes()
    # Join reads that need no waiting up to a full batch of windows (a piped file), never wait for one.
    coalesce = max(_READ_BYTES, int(cfg.batch_size * grid.hop * spec.sample_rate / sr) * spec.frame_bytes)
    windows = stream_windows_pcm(read_pcm(source, spec, pcm_notes, coalesce_bytes=coalesce), spec, grid,
                                 highpass_hz=pre.get("highpass_hz"), notes=notes)
    top_k = cfg.top_k or 1
    t0 = time.perf_counter()
    try:
        for meta, x in prefetch(_batches(windows, int(cfg.batch_size)), depth=int(cfg.prefetch)):
            picked = predictor.decide(predictor.predict_batch(x), top_k=top_k, min_confidence=cfg.min_confidence,
                                      always_top1=cfg.always_top1)
            rows = [Row(result.source, sp, c, round(s / sr, 6), round((s + v) / sr, 6))
                    for (s, v), pairs in zip(meta, picked, strict=True) for sp, c in pairs]
            try:
                out.write(predictions_csv(rows, audio=True, header=False))
                out.flush()
            except BrokenPipeError:
                result.stopped = "the reader of the output went away; stopped reading the stream"
                log.warning("%s", result.stopped)
                break
            result.items += len(meta)
            result.rows_written += len(rows)
            if keep_rows:
                result.rows.extend(rows)
    finally:
        result.predict_s = time.perf_counter() - t0
        result.audio_seconds = notes.samples / sr
        result.max_block_samples = notes.max_block
        result.warnings += pcm_notes.notes
    if notes.peak == 0.0 and result.items:
        result.warnings.append("pure silence (every sample is 0): its predictions mean nothing")
    if 0 < notes.samples < grid.clip:
        result.warnings.append(f"{notes.samples / sr:.2f} s is shorter than one {grid.clip / sr:g} s window: "
                               "padded with silence")
    for w in result.warnings[len(pcm_notes.notes):]:
        log.warning("%s: %s", STREAM_NAME, w)
    return result


def _stdin_is_terminal(source: BinaryIO) -> bool:
    try:
        return bool(source.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def run_stream(cfg: Any, *, source: BinaryIO | None = None, out: TextIO | None = None) -> tuple[StreamResult, Path | None]:
    """``input=-`` / ``input=mic:``: load the model, predict standard input, a sound device (or ``source``) window
    by window, write rows to the output as they come, then the run log beside it (not for ``output=-``) and the
    Raven table if asked."""
    from birdvision.prediction import mic
    from birdvision.prediction.api import load

    check_options(cfg)
    live = mic.is_mic(cfg.input)
    stream_cfg = cfg.stream
    if live and stream_cfg.sample_rate is None:  # a device has a default rate; raw PCM on stdin has none
        stream_cfg = SimpleNamespace(format=stream_cfg.format, channels=stream_cfg.channels,
                                     sample_rate=mic.device_sample_rate(cfg.input))
    spec = PcmSpec.from_config(stream_cfg)
    if not live:
        source = source if source is not None else sys.stdin.buffer
    result = StreamResult(spec, source=cfg.input if live else STREAM_NAME)
    what = source_description(result)
    if not live and _stdin_is_terminal(source):
        raise PredictError("input=- reads raw PCM from standard input, but it is a terminal; pipe audio in, e.g. "
                           "arecord -f S16_LE -r 48000 -c 1 -t raw | python -m birdvision.predict ... "
                           "input=- stream.sample_rate=48000")
    to_stdout = cfg.output == "-"
    log_file = None if to_stdout else log_path_for(cfg.output)
    check_outputs(cfg, journal=False)

    t0 = time.perf_counter()
    predictor = load(cfg.model, threads=int(cfg.threads), spinning=int(cfg.prefetch) == 0,
                     species=cfg.species, species_renormalise=bool(cfg.species_renormalise))
    load_s = time.perf_counter() - t0
    if not predictor.is_audio:
        raise PredictError(f"input={cfg.input} streams audio, but {cfg.model} is a photo model; give photos as "
                           "input=FILE_OR_FOLDER")
    log.info("model %s: %s; reading %s from %s", cfg.model, predictor, spec.describe(), what)

    sink = out if out is not None else (sys.stdout if to_stdout else
                                        open(Path(cfg.output).expanduser(), "w", encoding="utf-8", newline=""))
    try:
        if live and source is None:  # opened last: capture starts once everything else is ready
            source = mic.MicSource(cfg.input, spec)
        sink.write(predictions_csv([], audio=True))
        sink.flush()
        predict_stream(predictor, cfg, source, sink, result, keep_rows=bool(cfg.raven))
    except KeyboardInterrupt:
        result.stopped = "interrupted (Ctrl-C); the window in progress was not predicted"
        raise
    finally:
        if isinstance(source, mic.MicSource):
            source.close()
            result.warnings += source.notes()
        if sink is not out and sink is not sys.stdout:
            sink.close()
        if result.stopped and to_stdout:
            _quiet_stdout()
        if cfg.raven:
            write_text(cfg.raven, raven_table(result.rows, **raven_band(predictor.preprocess)))
        if log_file is not None:
            write_text(log_file, stream_log(result, predictor, cfg, load_s=load_s))
    return result, log_file


def stream_log(result: StreamResult, predictor: Any, cfg: Any, *, load_s: float) -> str:
    """The run log of a stream: settings, what arrived, warnings, speed."""

    lines = [
        *log_header(predictor, cfg, audio=True, input_desc=f"{source_description(result)} ({result.spec.describe()})",
                    settings=f"batch_size={cfg.batch_size} threads={cfg.threads} "
                    f"overlap_seconds={cfg.overlap_seconds}"),
        f"rows: {result.rows_written} from {result.items} windows",
        f"audio: {result.audio_seconds:.1f} s in {result.predict_s:.2f} s (model load {load_s:.2f} s)",
    ]
    if predictor.species is not None:
        lines.append(f"species: {len(predictor.species)} of {len(predictor.classes)} classes from {cfg.species} "
                     f"(renormalised over the list: {str(bool(cfg.species_renormalise)).lower()})")
    if result.stopped:
        lines.append(f"stopped: {result.stopped}")
    lines += [f"WARNING {STREAM_NAME}: {w}" for w in result.warnings]
    return "\n".join(lines) + "\n"


def _quiet_stdout() -> None:
    """The reader of standard output went away: point it at /dev/null so the interpreter's last flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def source_description(result: StreamResult) -> str:
    """Where a stream's audio came from, for the console and the run log."""
    return "standard input" if result.source == STREAM_NAME else f"the sound device {result.source}"
