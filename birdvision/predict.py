"""``python -m birdvision.predict model=CKPT_OR_ONNX input=PATH output=FILE.csv``: species for new data.

The model's own preprocessing spec (in the checkpoint or the ONNX metadata) says what it
takes. A photo model writes ``file,species,confidence`` (top 5 per photo). A call model
slides its window over recordings of any length, streamed block by block, and writes
``file,start_s,end_s,species,confidence`` (top 1 per window); the last partial window is
zero-padded, so the table covers each recording to its end. Each window's / photo's best
species is always written (``always_top1``), further ones only at or above
``min_confidence``. A run log (``FILE.log``) beside the table lists every file that was
skipped or predicted with warnings; bad files never stop the run.

An exported model (``.onnx`` / ``.ort``) runs on ONNX Runtime without importing PyTorch or
Lightning, so the command starts in well under a second. Over a folder, a resume journal
(``FILE.journal``) records each finished file; running the same command again skips the
files it holds (same model, same settings, unchanged content), also after a crash or ``kill -9``.

``input=-`` reads raw PCM from standard input (``stream.sample_rate=``, ``stream.channels=``,
``stream.format=s16le|s24_3le|s32le|f32le``) and writes each window's rows as soon as the window
is complete (``output=-``: to standard output), e.g.
``arecord -f S16_LE -r 48000 -c 1 -t raw | python -m birdvision.predict model=M input=- stream.sample_rate=48000 output=-``.
``species=FILE`` (one name per line) restricts the answers to the listed species.

Exit codes: 0 done, 1 nothing could be predicted (every file unreadable), 2 a user error
(missing model or input, a bad option).
"""

from __future__ import annotations

import os

# numpy's OpenBLAS would start one thread per core for the resampler's and high-pass's matrix products,
# fighting ONNX Runtime's pool for the same cores; decoding runs in its own thread beside the model instead.
# Set before numpy is first imported (a no-op when the caller already imported it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import logging  # noqa: E402

from birdvision.config import ConfigError, parse_cli, to_yaml  # noqa: E402
from birdvision.console import console, run_cli, setup_logging  # noqa: E402
from birdvision.prediction import PredictError  # noqa: E402
from birdvision.prediction.mic import is_stream  # noqa: E402
from birdvision.prediction.options import PredictConfig  # noqa: E402
from birdvision.runs.artifacts import OutputError  # noqa: E402
from birdvision.runs.checkpoint import CheckpointError  # noqa: E402
from birdvision.runs.folders import RunError  # noqa: E402

log = logging.getLogger("birdvision.predict")

USER_ERRORS = (ConfigError, PredictError, CheckpointError, RunError, OutputError)


def run(cfg) -> int:
    """Predict and write the tables; 0 when at least one file was predicted."""
    from birdvision.prediction.run import run_predict

    setup_logging()
    console.print("[bold]birdvision predict[/]\n" + to_yaml(cfg))
    result, log_file = run_predict(cfg)
    if is_stream(cfg.input):
        return _stream_summary(result, cfg, log_file)
    what = "windows" if result.audio else "photos"
    console.print(f"{len(result.rows)} rows from {result.items} {what} of {len(result.predicted)} file(s) -> {cfg.output}")
    if result.items and not result.rows:
        console.print(f"[yellow]no {what[:-1]} passed its species' threshold[/] (min_confidence: "
                      f"{result.min_confidence}): the model found nothing it is sure of; that is its \"no call\" / "
                      "\"unknown\". always_top1=true writes each one's best guess anyway, min_confidence=0 every "
                      "species")
    if result.audio and result.predict_s > 0:
        console.print(f"{result.audio_seconds:.0f} s of audio in {result.predict_s:.1f} s "
                      f"({result.audio_seconds / result.predict_s:.0f}x real time)")
    if result.resumed:
        console.print(f"{len(result.resumed)} file(s) already done, taken from the journal {result.journal} "
                      "(resume=false to predict them again)")
    for note in result.journal_notes:
        console.print(f"[yellow]journal[/]: {note}")
    if result.skipped or result.warned or result.passed_over:
        console.print(f"[yellow]{len(result.skipped)} file(s) skipped, {len(result.warned)} warning(s), "
                      f"{len(result.passed_over)} passed over[/]: see {log_file}")
    if not result.predicted:
        console.print("[bold red]nothing could be predicted[/]: every input file was unreadable")
        return 1
    return 0


def _stream_summary(result, cfg, log_file) -> int:
    """The console summary of ``input=-`` (the rows went out as the windows completed)."""
    where = "standard output" if cfg.output == "-" else cfg.output
    from birdvision.prediction.stream import source_description

    console.print(f"{result.rows_written} rows from {result.items} windows of {source_description(result)} -> {where}")
    if result.predict_s > 0:
        console.print(f"{result.audio_seconds:.0f} s of audio in {result.predict_s:.1f} s")
    if result.warnings:
        console.print(f"[yellow]{len(result.warnings)} warning(s)[/]" + (f": see {log_file}" if log_file else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m birdvision.predict``."""

    def body() -> int:
        cfg = parse_cli(PredictConfig, argv, preset_key="preset",
                        prog="birdvision.predict",
                        description="Predict species for photos, or window by window for recordings of any length.")
        return run(cfg)

    return run_cli(body, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
