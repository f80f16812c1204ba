"""The predict schema: every key ``python -m birdvision.predict`` accepts, with its default and why."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from birdvision.prediction import PredictError
from birdvision.prediction.mic import is_mic, is_stream

PCM_FORMATS = {"s16le": 2, "s24_3le": 3, "s32le": 4, "f32le": 4}  # bytes per sample
_ALIASES = {**{k.replace("_", ""): k for k in PCM_FORMATS}, "floatle": "f32le"}  # arecord: S16_LE, S24_3LE, FLOAT_LE


def pcm_format(name: str) -> str | None:
    """The canonical name of a PCM format (``S16_LE`` -> ``s16le``), or None when unsupported."""
    return _ALIASES.get(str(name).strip().lower().replace("_", "").replace("-", ""))

MAX_BATCH = 4096  # windows / photos per forward pass: the buffer is allocated up front
MAX_BLOCK_SECONDS = 3600.0  # one decoded block is held in memory (an hour at 48 kHz is 0.7 GB of float32)
MAX_THREADS = 1024
MAX_PREFETCH = 64


@dataclass
class StreamConfig:
    """``input=-``: the raw PCM on standard input (it has no header, so its format is given here); ``input=mic:``:
    the format asked of the sound device."""

    sample_rate: int | None = None  # frames per second (required for input=-), e.g. 48000 for arecord -r 48000; mic: the device's default
    channels: int = 1  # interleaved channels, mixed to mono like a file's (arecord -c)
    format: str = "s16le"  # s16le | s24_3le | s32le | f32le (little-endian); arecord's names work too (-f S16_LE)


@dataclass
class PredictConfig:
    """Everything ``python -m birdvision.predict`` reads."""

    model: str | None = None  # a .ckpt, a run folder (its best checkpoint) or an exported .onnx / .ort
    input: str | None = None  # a file or a folder (searched recursively); files are decoded by content;
    #                           - = raw PCM from standard input (call models; format in stream.*), rows as windows end;
    #                           mic: / mic:DEVICE = a sound device (birdvision[mic]; number or name part), the same way
    output: str = "predictions.csv"  # the table; a run log is written beside it as OUTPUT.log; - = standard output
    #                                  (input=- only: each row is written and flushed as its window completes)
    species: str | None = None  # a species list (one name per line, # comments): answer only with these species
    species_renormalise: bool = True  # with species=: probabilities sum to 1 over the list (softmax of the listed
    #                                   classes); false keeps the model's own, so a low confidence means "off the list"
    top_k: int | None = None  # species per window / photo; null = 1 for recordings, 5 for photos
    min_confidence: float | None = None  # a species' row needs this probability; null = each class's threshold
    #                                      stored with the model (chosen on validation, threshold.fpr), else 0.1
    always_top1: bool | None = None  # write every window's / photo's best species even when nothing passes (a best
    #                                  guess); null = false for recordings (a window with no call gives no row),
    #                                  true for photos (false: a photo the model abstains on is "unknown")
    overlap_seconds: float = 0.0  # overlap of consecutive windows (0 = back to back; must be < the window length)
    merge: bool = False  # one row per run of consecutive windows with the same species (max confidence)
    raven: str | None = None  # also write a Raven selection table here (recordings only)
    batch_size: int = 4  # windows / photos per forward pass; small batches keep ONNX Runtime's intermediates (the
    #                      mel frontend's frames and DFT stages) in cache: on 2 cores 4 beat 16 by 20-30% per item
    threads: int = 0  # intra-op threads of ONNX Runtime / PyTorch; 0 = every core this process may use
    block_seconds: float = 60.0  # audio decoded per block: memory stays at one block whatever the file's length
    prefetch: int = 2  # batches decoded ahead in a background thread while the model runs (0 = decode inline)
    resume: bool = True  # folder inputs: skip files the journal beside the output (OUTPUT.journal) already holds
    #                      for this model and these settings; false = start the journal over
    stream: StreamConfig = field(default_factory=StreamConfig)  # input=-: the PCM format of standard input


def check_options(cfg: Any) -> None:
    """Ranges the schema's types cannot express, checked before the model is loaded; a bad value names its key."""

    def bad(key: str, want: str) -> PredictError:
        return PredictError(f"{key}={getattr(cfg, key)!r}: expected {want}")

    def finite(v: Any) -> bool:
        return isinstance(v, (int, float)) and math.isfinite(v)

    if cfg.top_k is not None and cfg.top_k < 1:
        raise bad("top_k", "an integer >= 1 (or null for the default)")
    if cfg.min_confidence is not None and not (finite(cfg.min_confidence) and 0.0 <= cfg.min_confidence <= 1.0):
        raise bad("min_confidence", "a number in [0, 1]")
    if not 1 <= cfg.batch_size <= MAX_BATCH:
        raise bad("batch_size", f"an integer in [1, {MAX_BATCH}]")
    if not 0 <= cfg.threads <= MAX_THREADS:
        raise bad("threads", f"an integer in [0, {MAX_THREADS}] (0 = the engine's default)")
    if not 0 <= cfg.prefetch <= MAX_PREFETCH:
        raise bad("prefetch", f"an integer in [0, {MAX_PREFETCH}] (batches decoded ahead; 0 = inline)")
    if not (finite(cfg.block_seconds) and 0 < cfg.block_seconds <= MAX_BLOCK_SECONDS):
        raise bad("block_seconds", f"a number of seconds in (0, {MAX_BLOCK_SECONDS:g}]")
    if not (finite(cfg.overlap_seconds) and cfg.overlap_seconds >= 0):
        raise bad("overlap_seconds", "a number of seconds >= 0 (and below the model's window length)")
    stream = getattr(cfg, "stream", None)
    live = is_mic(cfg.input)
    if is_stream(cfg.input) and stream is not None:
        if stream.sample_rate is None and not live:  # a sound device has a default rate
            raise PredictError("input=- needs stream.sample_rate= (raw PCM has no header), "
                               "e.g. stream.sample_rate=48000 for arecord -r 48000")
        if stream.sample_rate is not None and not 1000 <= stream.sample_rate <= 768000:
            raise PredictError(f"stream.sample_rate={stream.sample_rate}: expected frames per second in [1000, 768000]")
        if not 1 <= stream.channels <= 64:
            raise PredictError(f"stream.channels={stream.channels}: expected an integer in [1, 64]")
        if pcm_format(stream.format) is None:
            raise PredictError(f"stream.format={stream.format!r}: expected one of {', '.join(PCM_FORMATS)}")
        if cfg.merge:
            raise PredictError(f"merge=true needs every window before it writes a row; with input={cfg.input} rows are "
                               "written as windows complete (merge the table afterwards, or leave merge=false)")
    elif cfg.output == "-":
        raise PredictError("output=- (standard output) is for input=- and input=mic: streams; give a file for the table")
