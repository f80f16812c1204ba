"""What one predict command writes beside its rows, checked before any work: the output paths (table, run log,
journal, Raven table) and the run log's header, shared by file runs (:mod:`~birdvision.prediction.run`) and
streams (:mod:`~birdvision.prediction.stream`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from birdvision.prediction import PredictError
from birdvision.prediction.journal import journal_path_for
from birdvision.prediction.mic import is_stream
from birdvision.prediction.tables import DEFAULT_MIN_CONFIDENCE
from birdvision.runs.artifacts import check_output_file
from birdvision.runs.folders import RunError, find_checkpoint


def thresholds_in_use(predictor: Any) -> str:
    """What a row's threshold is when ``min_confidence`` is not given, for the run log."""
    th = predictor.metadata.get("thresholds") if isinstance(getattr(predictor, "metadata", None), dict) else None
    if not th:
        return f"{DEFAULT_MIN_CONFIDENCE} (the model stores no thresholds)"
    return f"per class (the model's, {th.get('target')}={th.get('target_value')} on {th.get('split')})"


def min_confidence_in_use(predictor: Any, cfg: Any) -> str:
    """What a row needs: ``min_confidence`` when given, else the model's own thresholds (:func:`thresholds_in_use`)."""
    return str(cfg.min_confidence) if cfg.min_confidence is not None else thresholds_in_use(predictor)


def log_path_for(output: str | Path) -> Path:
    """The run log beside the table: ``predictions.csv`` -> ``predictions.log``."""
    p = Path(output)
    return p.with_suffix(".log") if p.suffix else p.with_name(p.name + ".log")


def log_header(predictor: Any, cfg: Any, *, audio: bool, input_desc: str, settings: str) -> list[str]:
    """The first lines of every run log (files and streams): when, model, input, output, decision settings."""
    return [
        f"birdvision predict, {datetime.now().isoformat(timespec='seconds')}",
        f"model: {cfg.model} ({getattr(predictor, 'engine', '?')}, {len(predictor.classes)} classes, "
        f"{'recordings' if audio else 'photos'})",
        f"input: {input_desc}",
        f"output: {cfg.output}" + (f", raven: {cfg.raven}" if cfg.raven else ""),
        f"settings: top_k={cfg.top_k or (1 if audio else 5)} min_confidence={min_confidence_in_use(predictor, cfg)} "
        f"always_top1={cfg.always_top1 if cfg.always_top1 is not None else not audio} " + settings,
    ]


def check_outputs(cfg: Any, *, journal: bool = True) -> dict[Path, str]:
    """Every file predict will write (table, run log, journal, Raven table), checked before the model is loaded.

    Returns resolved path -> option name. Refuses folders, unwritable places, two outputs on one path,
    and an output that is the model or the input file (it would be overwritten). ``output=-`` (rows to
    standard output) has no table, run log or journal; a stream (``journal=False``) keeps no journal.
    """
    wanted: list[tuple[str, Path, str | None]] = []
    if cfg.output != "-":
        log_file = log_path_for(cfg.output)
        wanted += [("output", Path(cfg.output), None),
                   ("the run log", log_file, f"the run log {log_file} (beside output={cfg.output})")]
        if journal:
            j = journal_path_for(cfg.output)
            wanted.append(("the journal", j, f"the resume journal {j} (beside output={cfg.output})"))
    if cfg.raven:
        wanted.append(("raven", Path(cfg.raven), None))
    taken: dict[Path, str] = {}
    for key, path, label in wanted:
        check_output_file(path, key=key, label=label)
        r = path.expanduser().resolve()
        if r in taken:
            if key in ("the run log", "the journal"):
                raise PredictError(f"output={cfg.output}: {key} would overwrite it; give the table "
                                   "a suffix other than .log or .journal (e.g. .csv)")
            raise PredictError(f"{key}={path} is also {taken[r]}; give them different paths")
        taken[r] = key
    model = Path(cfg.model).expanduser()
    if model.is_dir():  # a run folder: its checkpoint is what must not be overwritten
        try:
            model = find_checkpoint(model)
        except RunError:
            pass  # load() reports it
    sources = [("model", model)] + ([] if is_stream(cfg.input) else [("input", Path(cfg.input).expanduser())])
    for name, src in sources:
        if src.is_file() and src.resolve() in taken:
            raise PredictError(f"{taken[src.resolve()]}={src} is the {name} file; it would be overwritten")
    return taken
