"""Predict on files with any :class:`~birdvision.prediction.predictor.Predictor`: the loop, the problems, the log.

Recordings are streamed window by window (:mod:`birdvision.prediction.grid`) and
windows from consecutive files share batches, so a folder of short clips runs at the
same batch size as one long recording. Decoding (reading, resampling and high-passing
the next block, or decoding the next photos) runs in a background thread a bounded
number of batches ahead of the model (:mod:`birdvision.prediction.prefetch`).

Every file ends in exactly one of: predicted, predicted with warnings (NaN samples, pure
silence, a low sample rate, decoding that stopped part-way), skipped with a reason (zero
frames, not audio / not a photo), taken from the resume journal of an earlier run over
the same folder (:mod:`birdvision.prediction.journal`), or passed over by its name in a
folder walk. All of them are listed in the run log.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from birdvision.data.audio.io import AudioError, info
from birdvision.data.photos.decode import ImageLoadError
from birdvision.prediction import PredictError
from birdvision.prediction.grid import StreamNotes, WindowGrid, stream_windows
from birdvision.prediction.inputs import Inputs, find_inputs
from birdvision.prediction.journal import Journal, Record, journal_path_for, result_settings
from birdvision.prediction.mic import is_stream
from birdvision.prediction.options import check_options
from birdvision.prediction.outputs import check_outputs, log_header, log_path_for, min_confidence_in_use
from birdvision.prediction.prefetch import prefetch
from birdvision.prediction.tables import (
    Row,
    merge_runs,
    predictions_csv,
    raven_table,
    write_table,
)
from birdvision.runs.artifacts import sha256_file
from birdvision.runs.folders import find_checkpoint

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
    resumed: list[str] = field(default_factory=list)  # taken from the journal of an earlier run, not predicted again
    journal: str | None = None  # the resume journal (folder runs)
    journal_notes: list[str] = field(default_factory=list)  # what opening the journal found (started over, repaired)
    items: int = 0  # windows or photos through the model (this run)
    audio_seconds: float = 0.0  # audio through the model (this run)
    max_block_samples: int = 0  # largest decoded block held (the streaming memory bound)
    predict_s: float = 0.0  # wall time of decoding + model, without loading the model
    min_confidence: str = ""  # what a row needed (min_confidence_in_use), for the console and the run log


@dataclass
class _Job:
    """One input file: its position in the table, its path and the key it has in the journal."""

    index: int
    path: Path
    key: str


@dataclass
class _Batch:
    """Inputs ready for the model: ``x [n, ...]`` (or a list of photos of their own sizes) and per row
    (job index, start, valid) or (job index,)."""

    meta: list[tuple[int, ...]]
    x: np.ndarray | list[np.ndarray]


@dataclass
class _Finished:
    """All of a file's items were handed to batches (or the file was skipped, or resumed from the journal)."""

    job: _Job
    status: str  # predicted | skipped | resumed
    notes: list[str] = field(default_factory=list)
    items: int = 0
    audio_seconds: float = 0.0
    max_block: int = 0
    sha256: str | None = None
    record: Record | None = None  # resumed: the journal's record


class _BatchBuilder:
    """Collect model inputs into fresh batches (never reused, so a batch can cross threads): rows of ``shape`` into
    one array, or, with ``shape=None``, photos of any sizes into a list (the engine batches each size)."""

    def __init__(self, batch_size: int, shape: tuple[int, ...] | None, dtype: Any) -> None:
        self.size, self.shape, self.dtype = max(1, batch_size), shape, dtype
        self._new()

    def _new(self) -> None:
        self.x: np.ndarray | list[np.ndarray] = [] if self.shape is None else np.empty((self.size, *self.shape), self.dtype)
        self.meta: list[tuple[int, ...]] = []

    def add(self, meta: tuple[int, ...], x: np.ndarray) -> _Batch | None:
        if isinstance(self.x, list):
            self.x.append(x)
        else:
            self.x[len(self.meta)] = x
        self.meta.append(meta)
        return self.take() if len(self.meta) == self.size else None

    def take(self) -> _Batch | None:
        if not self.meta:
            return None
        out = _Batch(self.meta, self.x[: len(self.meta)])
        self._new()
        return out


def _hash_and_lookup(job: _Job, journal: Journal | None) -> tuple[str | None, Record | None]:
    """The file's content hash and, when the journal holds it unchanged, its record (in the decode thread)."""
    if journal is None:
        return None, None
    try:
        sha = sha256_file(job.path)
    except OSError:
        return None, None  # unreadable: decoding says why, and nothing is journalled
    return sha, journal.done(job.key, sha)


def _decode_recordings(jobs: list[_Job], predictor: Any, grid: WindowGrid, cfg: Any,
                       journal: Journal | None) -> Iterator[_Batch | _Finished]:
    """Windows of every recording in batches (shared across files), each file closed by a :class:`_Finished`."""
    pre = predictor.preprocess
    sr = grid.sample_rate
    builder = _BatchBuilder(cfg.batch_size, (grid.clip,), np.float32)
    for job in jobs:
        path, name = job.path, str(job.path)
        sha, rec = _hash_and_lookup(job, journal)
        if rec is not None:
            yield _Finished(job, "resumed", sha256=sha, record=rec)
            continue
        notes = StreamNotes()
        file_notes: list[str] = []
        n_windows = 0
        with warnings.catch_warnings(record=True) as caught:  # only this thread decodes, so only its warnings land here
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
                    n_windows += 1
                    if (batch := builder.add((job.index, start, valid), x)) is not None:
                        yield batch
            except _DECODE_ERRORS as e:
                if n_windows == 0:
                    reason = str(e).removeprefix(f"{path}: ")
                    yield _Finished(job, "skipped", [reason], sha256=sha)
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
        yield _Finished(job, "predicted", file_notes, n_windows, notes.samples / sr, notes.max_block, sha)
    if (batch := builder.take()) is not None:
        yield batch


def _decode_photos(jobs: list[_Job], predictor: Any, cfg: Any, journal: Journal | None) -> Iterator[_Batch | _Finished]:
    """Decoded photos in batches (at their own sizes when the model resizes), each photo closed by a :class:`_Finished`."""
    from birdvision.prediction.predictor import InferenceError

    shape = tuple(predictor.input_shape)
    builder = _BatchBuilder(cfg.batch_size, None if None in shape else shape, np.uint8)
    for job in jobs:
        sha, rec = _hash_and_lookup(job, journal)
        if rec is not None:
            yield _Finished(job, "resumed", sha256=sha, record=rec)
            continue
        try:
            x = predictor.prepare(job.path)
        except (ImageLoadError, InferenceError, OSError, ValueError) as e:
            yield _Finished(job, "skipped", [str(e).removeprefix(f"{job.path}: ")], sha256=sha)
            continue
        if (batch := builder.add((job.index,), x)) is not None:
            yield batch
        yield _Finished(job, "predicted", items=1, sha256=sha)
    if (batch := builder.take()) is not None:
        yield batch


class _Collector:
    """The consumer side: run each batch, keep rows per file, close files whose every item has been through
    the model (result lists, journal records), commit the journal after each batch."""

    def __init__(self, predictor: Any, cfg: Any, result: PredictResult, journal: Journal | None,
                 jobs: list[_Job]) -> None:
        self.predictor, self.cfg, self.result, self.journal = predictor, cfg, result, journal
        self.names = [str(j.path) for j in jobs]
        n_files = len(jobs)
        self.audio = result.audio
        self.sr = int(predictor.preprocess["sample_rate"]) if self.audio else 0
        self.top_k = cfg.top_k or (1 if self.audio else 5)
        self.rows: list[list[Row] | None] = [None] * n_files
        self.seen = [0] * n_files  # items of each file through the model
        self.waiting: list[_Finished] = []

    def run(self, batch: _Batch) -> None:
        probs = self.predictor.predict_batch(batch.x)
        picked = self.predictor.decide(probs, top_k=self.top_k, min_confidence=self.cfg.min_confidence,
                                       always_top1=self.cfg.always_top1)
        for meta, pairs in zip(batch.meta, picked, strict=True):
            i = meta[0]
            rows = self.rows[i] if self.rows[i] is not None else []
            self.rows[i] = rows
            name = self.names[i]
            if self.audio:
                t0, t1 = round(meta[1] / self.sr, 6), round((meta[1] + meta[2]) / self.sr, 6)
                rows.extend(Row(name, sp, c, t0, t1) for sp, c in pairs)
            else:
                rows.extend(Row(name, sp, c) for sp, c in pairs)
            self.seen[i] += 1
        self.result.items += len(batch.meta)
        self._close_ready()
        if self.journal is not None:
            self.journal.commit()

    def finished(self, f: _Finished) -> None:
        self.waiting.append(f)
        self._close_ready()

    def _close_ready(self) -> None:
        still = []
        for f in self.waiting:
            if f.status == "predicted" and self.seen[f.job.index] < f.items:
                still.append(f)
            else:
                self._close(f)
        self.waiting = still

    def _close(self, f: _Finished) -> None:
        res, name, i = self.result, str(f.job.path), f.job.index
        if f.status == "resumed":
            rec = f.record
            assert rec is not None
            res.resumed.append(name)
            self.rows[i] = [Row(name, r[0], float(r[1]), *(float(v) for v in r[2:4])) for r in rec.rows]
            if rec.status == "skipped":
                res.skipped.append((name, rec.notes[0] if rec.notes else "skipped"))
            else:
                res.predicted.append(name)
                res.warned.extend((name, n) for n in rec.notes)
            return
        if f.status == "skipped":
            reason = f.notes[0]
            res.skipped.append((name, reason))
            log.warning("skipped %s: %s", name, reason)
        else:
            for note in f.notes:
                res.warned.append((name, note))
                log.warning("%s: %s", name, note)
            res.predicted.append(name)
            res.audio_seconds += f.audio_seconds
            res.max_block_samples = max(res.max_block_samples, f.max_block)
        if self.journal is not None and f.sha256 is not None:
            rows = [[r.species, r.confidence] + ([r.start_s, r.end_s] if self.audio else []) for r in self.rows[i] or []]
            self.journal.add(Record(f.job.key, f.sha256, f.status, rows, list(f.notes), f.items, f.audio_seconds,
                                    f.max_block))


def predict_files(predictor: Any, inputs: Inputs, cfg: Any, *, journal: Journal | None = None,
                  root: Path | None = None) -> PredictResult:
    """Run the predictor over the inputs (recordings or photos, as the model's spec says).

    Decoding runs ``cfg.prefetch`` batches ahead in a background thread while the model works on the
    current batch. With a ``journal`` (folder runs), files it holds unchanged are taken from it and each
    finished file is recorded; journal keys are paths relative to ``root``.
    """
    check_options(cfg)
    result = PredictResult(audio=bool(predictor.is_audio), passed_over=list(inputs.passed_over),
                           min_confidence=min_confidence_in_use(predictor, cfg))
    jobs = [_Job(i, p, _journal_key(p, root)) for i, p in enumerate(inputs.files)]
    if result.audio:
        pre = predictor.preprocess
        try:
            grid = WindowGrid.from_seconds(int(pre["sample_rate"]), float(pre["clip_seconds"]), float(cfg.overlap_seconds))
        except ValueError as e:
            raise PredictError(str(e)) from None
        events = _decode_recordings(jobs, predictor, grid, cfg, journal)
    else:
        events = _decode_photos(jobs, predictor, cfg, journal)
    collector = _Collector(predictor, cfg, result, journal, jobs)
    t0 = time.perf_counter()
    for ev in prefetch(events, depth=int(getattr(cfg, "prefetch", 2))):
        if isinstance(ev, _Batch):
            collector.run(ev)
        else:
            collector.finished(ev)
    if collector.waiting:  # pragma: no cover - every item went through a batch
        raise RuntimeError(f"{len(collector.waiting)} file(s) never completed")
    if journal is not None:
        journal.commit()
    result.predict_s = time.perf_counter() - t0
    result.rows = [r for rows in collector.rows if rows for r in rows]
    if cfg.merge and result.audio:
        result.rows = merge_runs(result.rows)
    return result


def _journal_key(path: Path, root: Path | None) -> str:
    """A file's name in the journal: its path relative to the input folder (stable across working directories)."""
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def run_log(result: PredictResult, predictor: Any, cfg: Any, *, load_s: float) -> str:
    """The run log: settings, per-file problems and warnings, throughput."""
    lines = [
        *log_header(predictor, cfg, audio=result.audio, input_desc=str(cfg.input),
                    settings=f"merge={cfg.merge} batch_size={cfg.batch_size} threads={cfg.threads}"
                    + (f" overlap_seconds={cfg.overlap_seconds} block_seconds={cfg.block_seconds}"
                       if result.audio else "")),
        f"files: {len(result.predicted)} predicted ({len({f for f, _ in result.warned})} with warnings), "
        f"{len(result.skipped)} skipped, {len(result.passed_over)} passed over by name"
        + (f"; {len(result.resumed)} of them already done (taken from the journal)" if result.resumed else ""),
        f"rows: {len(result.rows)} from {result.items} {'windows' if result.audio else 'photos'}",
    ]
    if result.audio and result.predict_s > 0:
        lines.append(f"audio: {result.audio_seconds:.1f} s in {result.predict_s:.2f} s "
                     f"({result.audio_seconds / result.predict_s:.0f}x real time; model load {load_s:.2f} s; "
                     f"largest block {result.max_block_samples} samples)")
    elif result.predict_s > 0:
        lines.append(f"photos: {result.items} in {result.predict_s:.2f} s; model load {load_s:.2f} s")
    if getattr(predictor, "species", None) is not None:
        lines.append(f"species: {len(predictor.species)} of {len(predictor.classes)} classes from {cfg.species} "
                     f"(renormalised over the list: {str(bool(cfg.species_renormalise)).lower()})")
    if result.journal:
        lines.append(f"journal: {result.journal}")
        lines += [f"JOURNAL {n}" for n in result.journal_notes]
    lines += [f"SKIPPED {f}: {r}" for f, r in result.skipped]
    lines += [f"WARNING {f}: {r}" for f, r in result.warned]
    lines += [f"PASSED OVER {f}: {r}" for f, r in result.passed_over]
    return "\n".join(lines) + "\n"


def model_digest(path: str | Path) -> str:
    """SHA-256 of the model file (a run folder's best checkpoint) that the journal is keyed by."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = find_checkpoint(p)
    return sha256_file(p)


def run_predict(cfg: Any) -> tuple[Any, Path | None]:
    """Load the model, predict on the input, write the table (+ Raven table) and the run log.

    A folder input keeps a resume journal beside the table (``resume=false`` starts it over).
    ``input=-`` is a live stream (:func:`birdvision.prediction.stream.run_stream`: a ``StreamResult``,
    and no run log for ``output=-``).
    """
    from birdvision.prediction.api import load

    if not cfg.model:
        raise PredictError("model= is required (a .ckpt, a run folder or an exported .onnx)")
    if not cfg.input:
        raise PredictError("input= is required (a file or a folder, - for raw PCM on standard input, or mic: for a "
                           "sound device)")
    if is_stream(cfg.input):
        from birdvision.prediction.stream import run_stream

        return run_stream(cfg)
    check_options(cfg)
    outputs = check_outputs(cfg)
    t0 = time.perf_counter()
    # While a thread decodes the next batch, ONNX Runtime's idle workers should sleep, not spin on its core.
    predictor = load(cfg.model, threads=int(cfg.threads), spinning=int(cfg.prefetch) == 0,
                     species=cfg.species, species_renormalise=bool(cfg.species_renormalise))
    load_s = time.perf_counter() - t0
    log.info("model %s: %s", cfg.model, predictor)
    inputs = find_inputs(cfg.input, audio=predictor.is_audio)
    clash = {f.resolve() for f in inputs.files} & set(outputs)
    if clash:
        raise PredictError(f"{outputs[min(clash)]}={min(clash)} is one of the input files; "
                           "choose an output path outside the inputs")
    root = Path(cfg.input).expanduser()
    journal = None
    if root.is_dir():
        settings = result_settings(cfg, audio=predictor.is_audio)
        if predictor.species is not None:  # another list gives other rows: journalled rows are only reused for the same
            settings.update(species=predictor.species, species_renormalise=bool(cfg.species_renormalise))
        journal = Journal.open(journal_path_for(cfg.output), model_digest=model_digest(predictor.source),
                               settings=settings, resume=bool(cfg.resume))
        for note in journal.notes:
            log.warning("%s", note)
    try:
        result = predict_files(predictor, inputs, cfg, journal=journal, root=root if journal else None)
    finally:
        if journal is not None:
            journal.close()
    if journal is not None:
        result.journal, result.journal_notes = str(journal.path), list(journal.notes)
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
