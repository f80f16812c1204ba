"""The predict schema: every key ``python -m birdvision.predict`` accepts, with its default and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PredictConfig:
    """Everything ``python -m birdvision.predict`` reads."""

    model: str | None = None  # a .ckpt, a run folder (its best checkpoint) or an exported .onnx / .ort
    input: str | None = None  # a file or a folder (searched recursively); files are decoded by content
    output: str = "predictions.csv"  # the table; a run log is written beside it as OUTPUT.log
    top_k: int | None = None  # species per window / photo; null = 1 for recordings, 5 for photos
    min_confidence: float = 0.1  # rows below this are left out (ranks 2..top_k; see always_top1)
    always_top1: bool = True  # write every window's / photo's best species even below min_confidence,
    #                           so the table covers the whole recording and a quiet stretch is visible as such
    overlap_seconds: float = 0.0  # overlap of consecutive windows (0 = back to back; must be < the window length)
    merge: bool = False  # one row per run of consecutive windows with the same species (max confidence)
    raven: str | None = None  # also write a Raven selection table here (recordings only)
    batch_size: int = 16  # windows / photos per forward pass
    threads: int = 0  # intra-op threads of PyTorch / ONNX Runtime; 0 = the engine's default
    block_seconds: float = 60.0  # audio decoded per block: memory stays at one block whatever the file's length
