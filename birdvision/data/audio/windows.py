"""Cutting recordings into fixed-length windows, after the split, and serving them to training.

Order matters: recordings are split first (``grouped_split``), then windowed here. A
window inherits its recording's ``split`` and ``group``, and in ``stereo="split"`` mode
each channel becomes its own example inside :class:`AudioWindowDataset` with that same
group, so no piece of one recording can sit on both sides of a split (checked by
``assert_no_leakage`` on the windows and by a test on the dataset items).

Decoding cache (the choice, and why): each DataLoader worker keeps an LRU of whole
decoded recordings (float32 at the target rate, high-passed) bounded by ``cache_mb``.
Decoding a 60 s MP3 and resampling it costs ~50 ms; a 5 s window then costs
microseconds, so with windows of the same recording drawn repeatedly the decode is
paid once per worker per eviction. Recordings larger than a quarter of the budget are
never cached whole: their windows are read on their own (libsndfile seeks inside MP3
accurately, ~25 ms per window). A float16 ``.npy`` disk cache would survive across
runs but needs a writable, invalidated cache folder; not worth it at this data size.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from birdvision.data.audio.augment import WaveAugment
from birdvision.data.audio.io import (
    DEFAULT_SAMPLE_RATE,
    STEREO_MODES,
    AudioError,
    RecordingProblem,
    dbfs,
    info,
    load,
    probe,
)
from birdvision.data.manifest import Sample

log = logging.getLogger(__name__)


@dataclass
class WindowReport:
    """The windows made and everything noteworthy about making them (for the run log)."""

    windows: list[Sample] = field(default_factory=list)
    padded: list[str] = field(default_factory=list)  # recordings shorter than one window: one padded window
    silent_dropped: list[tuple[str, float]] = field(
        default_factory=list
    )  # (path, start_s) under the threshold
    all_silent: list[str] = field(default_factory=list)  # every window silent: the loudest one was kept
    problems: list[RecordingProblem] = field(default_factory=list)  # recordings that could not be read

    def summary(self) -> str:
        recs = len({w.path for w in self.windows})
        return (
            f"{len(self.windows)} windows from {recs} recordings; {len(self.padded)} recording(s) shorter "
            f"than a window (padded), {len(self.silent_dropped)} silent window(s) dropped, "
            f"{len(self.all_silent)} all-silent recording(s) kept by their loudest window, "
            f"{len(self.problems)} unreadable recording(s) skipped"
        )


def window_starts(duration_s: float, clip_seconds: float, hop_seconds: float) -> list[float]:
    """Start times of windows covering ``duration_s``.

    Windows start every ``hop_seconds`` while they fit; if more than a fifth of a window
    (1 s for 5 s clips) is left uncovered at the end, one more window is aligned to the
    end (overlapping the previous one) rather than padded with silence: calls at the
    very end of a recording are not thrown away, nor is a sliver worth a near-duplicate.
    A recording shorter than one window gets a single window at 0 that the dataset pads.
    """
    if clip_seconds <= 0 or hop_seconds <= 0:
        raise ValueError("clip_seconds and hop_seconds must be positive")
    if duration_s <= clip_seconds:
        return [0.0]
    n = int(math.floor((duration_s - clip_seconds) / hop_seconds + 1e-9)) + 1
    starts = [round(i * hop_seconds, 6) for i in range(n)]
    tail = duration_s - (starts[-1] + clip_seconds)
    if tail > 0.2 * clip_seconds + 1e-9:
        starts.append(round(duration_s - clip_seconds, 6))
    return starts


def make_windows(
    recordings: Sequence[Sample],
    *,
    clip_seconds: float = 5.0,
    hop_seconds: float | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    min_window_dbfs: float | None = None,
    highpass_hz: float | None = None,
) -> WindowReport:
    """Turn recording-level samples (already split) into window-level samples.

    ``hop_seconds`` defaults to ``clip_seconds`` (no overlap). A recording sample that
    already has ``start_s``/``end_s`` (an annotated segment) is windowed within that
    range. With ``min_window_dbfs`` (e.g. -60), windows whose RMS level after the same
    mono mix and high-pass the model sees is below it are dropped; a recording is never
    dropped whole this way (its loudest window is kept and reported). Recordings that
    cannot be decoded are skipped and reported in ``problems``.
    """
    hop = clip_seconds if hop_seconds is None else hop_seconds
    report = WindowReport()
    n_clip = int(round(clip_seconds * sample_rate))
    for rec in recordings:
        if not rec.active:
            continue
        try:
            duration = probe(rec.path).duration_s
            audio = (
                load(rec.path, sample_rate, highpass_hz=highpass_hz)[0]
                if min_window_dbfs is not None
                else None
            )
        except AudioError as e:
            report.problems.append(RecordingProblem(rec.path, rec.label, str(e)))
            continue
        lo = rec.start_s or 0.0
        hi = min(duration, rec.end_s) if rec.end_s is not None else duration
        if hi - lo < clip_seconds:
            report.padded.append(rec.path)
        starts = [lo + s for s in window_starts(hi - lo, clip_seconds, hop)]
        wins = [replace(rec, start_s=round(s, 6), end_s=round(s + clip_seconds, 6)) for s in starts]
        if audio is not None:
            levels = [
                dbfs(audio[int(round(s * sample_rate)) : int(round(s * sample_rate)) + n_clip])
                for s in starts
            ]
            keep = [lvl >= min_window_dbfs for lvl in levels]
            if not any(keep):
                keep[int(np.argmax(levels))] = True
                report.all_silent.append(rec.path)
            report.silent_dropped += [(rec.path, w.start_s) for w, k in zip(wins, keep, strict=True) if not k]
            wins = [w for w, k in zip(wins, keep, strict=True) if k]
        report.windows.extend(wins)
    for p in report.problems:
        log.warning("skipping unreadable recording %s", p.reason)
    return report


class AudioWindowDataset(Dataset):
    """``(waveform float32 [clip_seconds * sample_rate], label index)`` per window (and channel).

    ``samples`` are window-level (from :func:`make_windows`); a sample without
    ``start_s`` is read from 0. With ``stereo="split"`` every channel of a window is its
    own item (same group). Files that cannot be read are found at construction
    (``problems``, logged once) and left out; a file that breaks later (changed on disk
    mid-run) yields silence and one warning per worker instead of killing the epoch.
    ``augment`` is for training only; randomness comes from a per-process generator
    seeded from ``torch.initial_seed()``, so Lightning's ``seed_everything`` with
    ``workers=True`` makes epochs reproducible and each worker and epoch differs.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: Sequence[str],
        *,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        clip_seconds: float = 5.0,
        stereo: str = "mix",
        highpass_hz: float | None = None,
        augment: WaveAugment | None = None,
        cache_mb: float = 512.0,
        check_files: bool = True,
    ) -> None:
        if stereo not in STEREO_MODES:
            raise ValueError(f"stereo must be one of {STEREO_MODES}, got {stereo!r}")
        self.classes = list(classes)
        index = {c: i for i, c in enumerate(self.classes)}
        self.sample_rate, self.clip_seconds, self.stereo = int(sample_rate), float(clip_seconds), stereo
        self.highpass_hz, self.augment, self.cache_mb = highpass_hz, augment, float(cache_mb)
        self.n_samples = int(round(self.clip_seconds * self.sample_rate))
        self.problems: list[RecordingProblem] = []
        self.samples: list[Sample] = []
        self.items: list[tuple[int, int]] = []  # (index into self.samples, channel; -1 = mono mix)
        channels: dict[str, int] = {}
        bad: set[str] = set()
        for s in samples:
            if not s.active:
                continue
            if s.label not in index:
                raise ValueError(f"{s.path}: label {s.label!r} is not in the class list")
            if s.path in bad:
                continue
            if s.path not in channels:
                try:
                    channels[s.path] = probe(s.path).channels if check_files else 1
                except AudioError as e:
                    bad.add(s.path)
                    self.problems.append(RecordingProblem(s.path, s.label, str(e)))
                    log.warning("leaving out unreadable recording: %s", e)
                    continue
            self.samples.append(s)
            i = len(self.samples) - 1
            if stereo == "split":
                self.items += [(i, ch) for ch in range(channels[s.path])]
            else:
                self.items.append((i, -1))
        self._label_index = [index[s.label] for s in self.samples]
        self._init_worker_state()

    @property
    def labels(self) -> list[int]:
        """The class index of every item (window, or window channel), in order (for samplers)."""
        return [self._label_index[i] for i, _ in self.items]

    # -- per-process state (never pickled) ------------------------------------------------------------

    def _init_worker_state(self) -> None:
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._warned: set[str] = set()
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_cache", "_cache_bytes", "_warned", "_rng", "_rng_key"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_worker_state()

    def _generator(self) -> np.random.Generator:
        key = (os.getpid(), torch.initial_seed())
        if self._rng is None or self._rng_key != key:
            self._rng, self._rng_key = np.random.default_rng(key[1] % 2**63), key
        return self._rng

    # -- reading --------------------------------------------------------------------------------------

    def _recording(self, path: str) -> np.ndarray | None:
        """Whole decoded recording ``[C, T]`` from the LRU, or None when it is too big to cache."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        meta = info(path)  # header estimate is enough to decide whether to cache
        n_ch = meta.channels if self.stereo == "split" else 1
        nbytes = 4 * n_ch * meta.duration_s * self.sample_rate
        budget = self.cache_mb * 2**20
        if nbytes > budget / 4:
            return None
        audio = load(path, self.sample_rate, stereo=self.stereo, highpass_hz=self.highpass_hz)
        while self._cache and self._cache_bytes + audio.nbytes > budget:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        self._cache[path] = audio
        self._cache_bytes += audio.nbytes
        return audio

    def _segment(self, sample: Sample, channel: int, context: int) -> np.ndarray:
        """The window's samples with ``context`` samples either side, zero-padded past the file's ends."""
        o0 = int(round((sample.start_s or 0.0) * self.sample_rate))
        lo, hi = o0 - context, o0 + self.n_samples + context
        rec = self._recording(sample.path)
        ch = max(channel, 0)
        if rec is None:
            part = load(
                sample.path,
                self.sample_rate,
                start_s=max(lo, 0) / self.sample_rate,
                end_s=hi / self.sample_rate,
                stereo=self.stereo,
                highpass_hz=self.highpass_hz,
            )[ch]
            got_lo = max(lo, 0)
        else:
            part, got_lo = rec[ch, max(lo, 0) : max(hi, 0)], max(lo, 0)
        out = np.zeros(hi - lo, np.float32)
        out[got_lo - lo : got_lo - lo + part.size] = part[: hi - got_lo]
        return out

    def background(self, n: int, rng: np.random.Generator) -> np.ndarray | None:
        """A random window of a random item, for the ``mix`` augmentation (no augmentation applied)."""
        i = int(rng.integers(len(self.items)))
        s_idx, ch = self.items[i]
        try:
            return self._segment(self.samples[s_idx], ch, 0)[:n]
        except AudioError:
            return None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s_idx, ch = self.items[i]
        sample = self.samples[s_idx]
        label = self._label_index[s_idx]
        aug = self.augment
        context = int(math.ceil(aug.context_seconds(self.clip_seconds) * self.sample_rate)) if aug else 0
        try:
            seg = self._segment(sample, ch, context)
        except (AudioError, OSError) as e:
            if sample.path not in self._warned:
                self._warned.add(sample.path)
                log.warning("recording became unreadable during training, serving silence: %s", e)
            seg = np.zeros(self.n_samples + 2 * context, np.float32)
        if aug is not None:
            wave = aug(
                seg,
                self.n_samples,
                context,
                self._generator(),
                sample_rate=self.sample_rate,
                background=self.background,
            )
        else:
            wave = seg[context : context + self.n_samples]
        return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), label

    # -- introspection --------------------------------------------------------------------------------

    @property
    def targets(self) -> list[int]:
        """Label index per item (for class-balanced samplers and class weights)."""
        return [self._label_index[s] for s, _ in self.items]

    def item_sample(self, i: int) -> Sample:
        """The window sample behind item ``i`` (its group, split, path and time range)."""
        return self.samples[self.items[i][0]]

    def item_channel(self, i: int) -> int:
        """The channel of item ``i`` (-1 for the mono mix)."""
        return self.items[i][1]
