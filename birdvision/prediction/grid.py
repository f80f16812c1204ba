"""A recording of any length -> fixed windows on a regular grid, streamed block by block.

Windows start every ``hop = clip - overlap`` samples from 0. Each one is cut from a
block of :func:`birdvision.data.audio.io.stream_blocks` (the same decode, resampling and
high-pass as training), so memory holds one block (plus one decoded ahead, to know
which block is the last) whatever the recording's length.

Block length is ``clip + m * hop`` for a whole ``m``, and blocks overlap by ``clip - hop``:
then block ``j`` starts at ``j * (m + 1) * hop``, on the window grid, and every window
lies wholly inside one block (no window is ever stitched from two reads).

The tail: the last window that starts before the end and is not already covered by the
previous one is zero-padded to full length (as training pads recordings shorter than a
window), and its reported end is the end of the audio, so a 600 s file is covered up to
600 s and a 0.1 s clip yields one window ``[0, 0.1)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from birdvision.data.audio.io import AudioError, stream_blocks


@dataclass(frozen=True)
class WindowGrid:
    """Window geometry in samples at the model's rate."""

    sample_rate: int
    clip: int
    hop: int

    @classmethod
    def from_seconds(cls, sample_rate: int, clip_seconds: float, overlap_seconds: float = 0.0) -> WindowGrid:
        if clip_seconds <= 0:
            raise ValueError(f"clip_seconds must be > 0, got {clip_seconds}")
        if not 0 <= overlap_seconds < clip_seconds:
            raise ValueError(f"overlap_seconds must be in [0, {clip_seconds:g}) for {clip_seconds:g} s windows, "
                             f"got {overlap_seconds:g}")
        clip = int(round(clip_seconds * sample_rate))
        hop = clip - int(round(overlap_seconds * sample_rate))
        return cls(int(sample_rate), clip, max(1, hop))

    def block_samples(self, block_seconds: float) -> int:
        """Block length ``clip + m * hop`` closest to ``block_seconds`` (at least one extra hop)."""
        m = max(1, int(round((block_seconds * self.sample_rate - self.clip) / self.hop)))
        return self.clip + m * self.hop


@dataclass
class StreamNotes:
    """What streaming one recording noticed: how far it got, its peak, decoding trouble."""

    samples: int = 0  # samples decoded (at the model's rate)
    peak: float = 0.0  # largest |sample| (0 = pure silence)
    max_block: int = 0  # largest block held, in samples (the memory bound)
    stopped: str | None = None  # decoding failed part-way: why (windows up to there were made)
    notes: list[str] = field(default_factory=list)


def stream_windows(path: str | os.PathLike, grid: WindowGrid, *, block_seconds: float = 60.0,
                   highpass_hz: float | None = None,
                   notes: StreamNotes | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, valid, window)`` in samples: ``window`` has ``grid.clip`` samples (a view, zero-padded
    past ``valid`` at the tail only; copy it before the next step). Raises :class:`AudioError` when
    nothing at all decodes; a failure part-way stops the stream and is recorded in ``notes.stopped``.
    """
    notes = notes if notes is not None else StreamNotes()
    sr = grid.sample_rate
    n = grid.block_samples(block_seconds)
    step = n - (grid.clip - grid.hop)
    blocks = stream_blocks(path, sr, block_seconds=n / sr, overlap_seconds=(grid.clip - grid.hop) / sr,
                           highpass_hz=highpass_hz)

    def advance() -> np.ndarray | None:
        try:
            return next(blocks).samples
        except StopIteration:
            return None
        except AudioError as e:
            if notes.samples == 0:
                raise
            notes.stopped = str(e)
            return None

    cur = advance()
    if cur is None:  # pragma: no cover - stream_blocks raises before yielding nothing
        raise AudioError(f"{path}: zero frames decoded")
    o0, start, covered = 0, 0, 0  # block start, next window start, end of audio covered so far
    pad = np.zeros(grid.clip, np.float32)
    while cur is not None:
        nxt = advance()
        end = o0 + len(cur)
        notes.samples = max(notes.samples, end)
        notes.max_block = max(notes.max_block, len(cur))
        if len(cur):
            notes.peak = max(notes.peak, float(cur.max()), -float(cur.min()))  # no |cur| temporary
        while start < end:
            off = start - o0
            if off + grid.clip <= len(cur):
                yield start, grid.clip, cur[off: off + grid.clip]
                covered = start + grid.clip
            elif nxt is None and covered < end:
                valid = len(cur) - off
                pad[:valid] = cur[off:]
                pad[valid:] = 0
                yield start, valid, pad
                covered = end
            else:
                break
            start += grid.hop
        cur, o0 = nxt, o0 + step
