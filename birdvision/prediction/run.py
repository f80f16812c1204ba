"""Predict on files with any :class:`~birdvision.inference.Predictor`: the loop, the problems, the log.

Recordings are streamed window by window (:mod:`birdvision.prediction.windows`) and
windows from consecutive files share batches, so a folder of short clips runs at the
same batch size as one long recording. Every file ends in exactly one of: predicted,
predicted with warnings (NaN samples, pure silence, a low sample rate, decoding that
stopped part-way), skipped with a reason (zero frames, not audio / not a photo), or
passed over by its name in a folder walk. All of them are listed in the run log.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from birdvision.artifacts import check_output_file
from birdvision.data.audio import AudioError, info
from birdvision.data.images import ImageLoadError
from birdvision.prediction import PredictError
from birdvision.prediction.inputs import Inputs, find_inputs
from birdvision.prediction.options import check_options
from birdvision.prediction.tables import Row, merge_runs, predictions_csv, raven_table, top_rows, write_table
from birdvision.prediction.windows import StreamNotes, WindowGrid, stream_windows
from birdvision.runs import RunError, find_checkpoint

log = logging.getLogger("birdvision.predict")

_DECODE_ERRORS = (AudioError, OSError, RuntimeError, ValueError, EOFError)


@dataclass
class PredictResult:
    """Rows and everything the run log lists."""

    rows: list[Row] = field(default_factory=list)
    audio: bool = False
    predicted: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): nothing predicted
    warned: list[tuple[str, str]] = field(default_factory=list)  # (file, note): predicted, but look
    passed_over: list[tuple[str, str]] = field(default_factory=list)  # by name, in a folder walk
    items: int = 0  # windows or photos through the model
    audio_seconds: float = 0.0
    max_block_samples: int = 0  # largest decoded block held (the streaming memory bound)
    predict_s: float = 0.0  # wall time of decoding + model, without loading the model


class _Batcher:
    """Fill a fixed buffer with model inputs; run the model when it is full (and at the end)."""

    def __init__(self, predictor: Any, batch_size: int, shape: tuple[int, ...], dtype: Any,
                 emit: Callable[[list[Any], np.ndarray], None]) -> None:
        self.predictor, self.emit = predictor, emit
        self.buf = np.zeros((max(1, batch_size), *shape), dtype=dtype)
        self.meta: list[Any] = []

    def add(self, meta: Any, x: np.ndarray) -> None:
        self.buf[len(self.meta)] = x
        self.meta.append(meta)
        if len(self.meta) == len(self.buf):
            self.flush()

    def flush(self) -> None:
        if self.meta:
            probs = self.predictor.predict_batch(self.buf[: len(self.meta)])
            self.emit(self.meta, probs)
            self.meta = []


def predict_audio(predictor: Any, files: list[Path], cfg: Any, result: PredictResult) -> None:
    """Stream each recording into windows, batch them across files, keep the rows worth writing."""
    pre = predictor.preprocess
    sr = int(pre["sample_rate"])
    try:
        grid = WindowGrid.from_seconds(sr, float(pre["clip_seconds"]), float(cfg.overlap_seconds))
    except ValueError as e:
        raise PredictError(str(e)) from None
    top_k = cfg.top_k or 1

    def emit(meta: list[tuple[str, int, int]], probs: np.ndarray) -> None:
        picked = top_rows(probs, predictor.classes, top_k=top_k, min_confidence=cfg.min_confidence,
                          always_top1=cfg.always_top1)
        for (name, start, valid), pairs in zip(meta, picked, strict=True):
            t0, t1 = round(start / sr, 6), round((start + valid) / sr, 6)
            result.rows.extend(Row(name, sp, c, t0, t1) for sp, c in pairs)

    batcher = _Batcher(predictor, cfg.batch_size, (grid.clip,), np.float32, emit)
    for path in files:
        name = str(path)
        notes = StreamNotes()
        file_notes: list[str] = []
        n_windows = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                meta = info(path)
                if meta.sample_rate < sr:
                    file_notes.append(f"recorded at {meta.sample_rate} Hz, below the model's {sr} Hz: "
                                      f"nothing above {meta.sample_rate // 2} Hz reaches the model")
                gen = stream_windows(path, grid, block_seconds=max(cfg.block_seconds, 2 * grid.clip / sr),
                                     highpass_hz=pre.get("highpass_hz"), notes=notes)
                while True:
                    try:
                        start, valid, x = next(gen)
                    except StopIteration:
                        break
                    batcher.add((name, start, valid), x)
                    n_windows += 1
            except _DECODE_ERRORS as e:
                if n_windows == 0:
                    reason = str(e).removeprefix(f"{path}: ")
                    result.skipped.append((name, reason))
                    log.warning("skipped %s: %s", name, reason)
                    continue
                notes.stopped = str(e)
        nan_blocks = [w for w in caught if "NaN/inf" in str(w.message)]
        if nan_blocks:
            file_notes.append(f"NaN/inf samples replaced by 0 (in {len(nan_blocks)} decoded block(s))")
        for w in caught:
            if w not in nan_blocks:
                log.debug("%s: %s", name, w.message)
        if notes.stopped:
            file_notes.append(f"decoding stopped at {notes.samples / sr:.1f} s ({notes.stopped.removeprefix(f'{path}: ')}); "
                              "predictions cover the part that decoded")
        if meta.format == "MP3" and notes.samples and not notes.stopped:
            decoded = notes.samples * meta.sample_rate / sr
            if decoded < 0.95 * meta.frames:  # MP3 headers estimate a few % high; far fewer means cut off
                file_notes.append(f"decoded {decoded / meta.sample_rate:.1f} s of the ~{meta.duration_s:.1f} s "
                                  "its header implies: the file looks truncated")
        if notes.peak == 0.0:
            file_notes.append("pure silence (every sample is 0): its predictions mean nothing")
        if notes.samples < grid.clip:
            file_notes.append(f"{notes.samples / sr:.2f} s is shorter than one {grid.clip / sr:g} s window: padded with silence")
        for note in file_notes:
            result.warned.append((name, note))
            log.warning("%s: %s", name, note)
        result.predicted.append(name)
        result.items += n_windows
        result.audio_seconds += notes.samples / sr
        result.max_block_samples = max(result.max_block_samples, notes.max_block)
    batcher.flush()


def predict_photos(predictor: Any, files: list[Path], cfg: Any, result: PredictResult) -> None:
    """Decode and resize each photo, batch them, keep the top-k rows."""
    from birdvision.inference import InferenceError

    top_k = cfg.top_k or 5

    def emit(meta: list[str], probs: np.ndarray) -> None:
        picked = top_rows(probs, predictor.classes, top_k=top_k, min_confidence=cfg.min_confidence,
                          always_top1=cfg.always_top1)
        for name, pairs in zip(meta, picked, strict=True):
            result.rows.extend(Row(name, sp, c) for sp, c in pairs)

    batcher = _Batcher(predictor, cfg.batch_size, predictor.input_shape, np.uint8, emit)
    for path in files:
        name = str(path)
        try:
            x = predictor.prepare(path)
        except (ImageLoadError, InferenceError, OSError, ValueError) as e:
            reason = str(e).removeprefix(f"{path}: ")
            result.skipped.append((name, reason))
            log.warning("skipped %s: %s", name, reason)
            continue
        batcher.add(name, x)
        result.predicted.append(name)
        result.items += 1
    batcher.flush()


def predict_files(predictor: Any, inputs: Inputs, cfg: Any) -> PredictResult:
    """Run the predictor over the inputs (recordings or photos, as the model's spec says)."""
    check_options(cfg)
    result = PredictResult(audio=bool(predictor.is_audio), passed_over=list(inputs.passed_over))
    t0 = time.perf_counter()
    if result.audio:
        predict_audio(predictor, inputs.files, cfg, result)
    else:
        predict_photos(predictor, inputs.files, cfg, result)
    result.predict_s = time.perf_counter() - t0
    if cfg.merge and result.audio:
        result.rows = merge_runs(result.rows)
    return result


def log_path_for(output: str | Path) -> Path:
    """The run log beside the table: ``predictions.csv`` -> ``predictions.log``."""
    p = Path(output)
    return p.with_suffix(".log") if p.suffix else p.with_name(p.name + ".log")


def run_log(result: PredictResult, predictor: Any, cfg: Any, *, load_s: float) -> str:
    """The run log: settings, per-file problems and warnings, throughput."""
    kind = "recordings" if result.audio else "photos"
    lines = [
        f"birdvision predict, {datetime.now().isoformat(timespec='seconds')}",
        f"model: {cfg.model} ({getattr(predictor, 'engine', '?')}, {len(predictor.classes)} classes, {kind})",
        f"input: {cfg.input}",
        f"output: {cfg.output}" + (f", raven: {cfg.raven}" if cfg.raven else ""),
        f"settings: top_k={cfg.top_k or (1 if result.audio else 5)} min_confidence={cfg.min_confidence} "
        f"always_top1={cfg.always_top1} merge={cfg.merge} batch_size={cfg.batch_size} threads={cfg.threads}"
        + (f" overlap_seconds={cfg.overlap_seconds} block_seconds={cfg.block_seconds}" if result.audio else ""),
        f"files: {len(result.predicted)} predicted ({len({f for f, _ in result.warned})} with warnings), "
        f"{len(result.skipped)} skipped, {len(result.passed_over)} passed over by name",
        f"rows: {len(result.rows)} from {result.items} {'windows' if result.audio else 'photos'}",
    ]
    if result.audio and result.predict_s > 0:
        lines.append(f"audio: {result.audio_seconds:.1f} s in {result.predict_s:.2f} s "
                     f"({result.audio_seconds / result.predict_s:.0f}x real time; model load {load_s:.2f} s; "
                     f"largest block {result.max_block_samples} samples)")
    elif result.predict_s > 0:
        lines.append(f"photos: {result.items} in {result.predict_s:.2f} s; model load {load_s:.2f} s")
    lines += [f"SKIPPED {f}: {r}" for f, r in result.skipped]
    lines += [f"WARNING {f}: {r}" for f, r in result.warned]
    lines += [f"PASSED OVER {f}: {r}" for f, r in result.passed_over]
    return "\n".join(lines) + "\n"


def check_outputs(cfg: Any) -> dict[Path, str]:
    """Every file predict will write (table, run log, Raven table), checked before the model is loaded.

    Returns resolved path -> option name. Refuses folders, unwritable places, two outputs on one path,
    and an output that is the model or the input file (it would be overwritten).
    """
    log_file = log_path_for(cfg.output)
    wanted = [("output", Path(cfg.output), None),
              ("the run log", log_file, f"the run log {log_file} (beside output={cfg.output})")]
    if cfg.raven:
        wanted.append(("raven", Path(cfg.raven), None))
    taken: dict[Path, str] = {}
    for key, path, label in wanted:
        check_output_file(path, key=key, label=label)
        r = path.expanduser().resolve()
        if r in taken:
            if key == "the run log":
                raise PredictError(f"output={cfg.output}: its run log would overwrite it; give the table "
                                   "a suffix other than .log (e.g. .csv)")
            raise PredictError(f"{key}={path} is also {taken[r]}; give them different paths")
        taken[r] = key
    model = Path(cfg.model).expanduser()
    if model.is_dir():  # a run folder: its checkpoint is what must not be overwritten
        try:
            model = find_checkpoint(model)
        except RunError:
            pass  # load() reports it
    for name, src in (("model", model), ("input", Path(cfg.input).expanduser())):
        if src.is_file() and src.resolve() in taken:
            raise PredictError(f"{taken[src.resolve()]}={src} is the {name} file; it would be overwritten")
    return taken


def run_predict(cfg: Any) -> tuple[PredictResult, Path]:
    """Load the model, predict on the input, write the table (+ Raven table) and the run log."""
    from birdvision.inference import load

    if not cfg.model:
        raise PredictError("model= is required (a .ckpt, a run folder or an exported .onnx)")
    if not cfg.input:
        raise PredictError("input= is required (a file or a folder)")
    check_options(cfg)
    outputs = check_outputs(cfg)
    t0 = time.perf_counter()
    predictor = load(cfg.model, threads=int(cfg.threads))
    load_s = time.perf_counter() - t0
    log.info("model %s: %s", cfg.model, predictor)
    inputs = find_inputs(cfg.input, audio=predictor.is_audio)
    clash = {f.resolve() for f in inputs.files} & set(outputs)
    if clash:
        raise PredictError(f"{outputs[min(clash)]}={min(clash)} is one of the input files; "
                           "choose an output path outside the inputs")
    result = predict_files(predictor, inputs, cfg)
    write_table(cfg.output, predictions_csv(result.rows, audio=result.audio))
    if cfg.raven:
        if result.audio:
            pre = predictor.preprocess
            mel = pre.get("mel") or {}
            low = max(float(mel.get("f_min_hz", 0.0)), float(pre.get("highpass_hz") or 0.0))
            high = float(mel.get("f_max_hz", int(pre["sample_rate"]) / 2))
            write_table(cfg.raven, raven_table(result.rows, low_hz=low, high_hz=high))
        else:
            log.warning("raven= is for recordings; this is a photo model, so no selection table was written")
    log_file = write_table(log_path_for(cfg.output), run_log(result, predictor, cfg, load_s=load_s))
    return result, log_file
