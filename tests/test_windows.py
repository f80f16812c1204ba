"""Windows after the split, the window dataset, and the synthetic demo call set."""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from birdvision.config import AudioAugmentConfig
from birdvision.data.audio.augment import WaveAugment
from birdvision.data.audio.demo import make_demo_calls
from birdvision.data.audio.io import discover_recordings, load
from birdvision.data.audio.windows import AudioWindowDataset, make_windows, window_starts
from birdvision.data.manifest import Sample
from birdvision.data.splits import assert_no_leakage, grouped_split

SR = 32000


def write(path: Path, audio: np.ndarray, sr: int = SR) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr)
    return str(path)


def rec(path: str, label: str = "a", split: str = "train") -> Sample:
    return Sample(path=path, label=label, split=split, group=path)


@pytest.fixture(scope="module")
def demo_calls(tmp_path_factory) -> Path:
    return make_demo_calls(tmp_path_factory.mktemp("calls"), n_species=3, recordings_per_species=5, seconds=6)


def test_window_starts():
    assert window_starts(3.0, 5.0, 5.0) == [0.0]
    assert window_starts(10.0, 5.0, 5.0) == [0.0, 5.0]
    assert window_starts(12.0, 5.0, 5.0) == [0.0, 5.0, 7.0]  # 2 s uncovered > hop/2: end-aligned window
    assert window_starts(11.0, 5.0, 5.0) == [0.0, 5.0]  # 1 s left over is not worth a window
    assert window_starts(7.0, 5.0, 1.0) == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError):
        window_starts(7.0, 5.0, 0.0)


def test_make_windows_inherits_split_group_and_reports(tmp_path):
    rng = np.random.default_rng(0)
    long = write(tmp_path / "long.wav", rng.standard_normal(SR * 12).astype(np.float32) * 0.1)
    short = write(tmp_path / "short.wav", rng.standard_normal(SR * 2).astype(np.float32) * 0.1)
    half_silent = rng.standard_normal(SR * 10).astype(np.float32) * 0.1
    half_silent[SR * 5 :] = 0
    quiet = write(tmp_path / "quiet.wav", half_silent)
    silent = write(tmp_path / "silent.wav", np.zeros(SR * 10, np.float32))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....nonsense")
    recs = [rec(long, split="valid"), rec(short), rec(quiet), rec(silent), rec(str(broken))]
    report = make_windows(recs, clip_seconds=5.0, min_window_dbfs=-60)
    by_path = {}
    for w in report.windows:
        by_path.setdefault(w.path, []).append((w.start_s, w.end_s))
        assert w.group == w.path and w.label == "a"
    assert by_path[long] == [(0.0, 5.0), (5.0, 10.0), (7.0, 12.0)]
    assert all(w.split == "valid" for w in report.windows if w.path == long)
    assert by_path[short] == [(0.0, 5.0)] and report.padded == [short]
    assert by_path[quiet] == [(0.0, 5.0)] and (quiet, 5.0) in report.silent_dropped
    assert len(by_path[silent]) == 1 and report.all_silent == [silent]  # never dropped whole
    assert len(report.silent_dropped) == 2
    assert [p.path for p in report.problems] == [str(broken)]
    assert "1 unreadable" in report.summary()
    # without a threshold nothing is decoded for levels and nothing is dropped
    assert len(make_windows(recs[:3], clip_seconds=5.0).windows) == 6


def test_annotated_segment_is_windowed_within_its_range(tmp_path):
    p = write(tmp_path / "a.wav", np.zeros(SR * 20, np.float32) + 0.1)
    seg = Sample(path=p, label="a", split="train", group=p, start_s=4.0, end_s=15.5)
    wins = make_windows([seg], clip_seconds=5.0, hop_seconds=2.5).windows
    assert [(w.start_s, w.end_s) for w in wins] == [(4.0, 9.0), (6.5, 11.5), (9.0, 14.0), (10.5, 15.5)]


def test_no_leakage_across_splits_with_stereo_split(tmp_path):
    """Windows and channels of one recording never end up on two sides of a split."""
    rng = np.random.default_rng(0)
    recs = []
    for label in ("robin", "wren"):
        for i in range(6):
            n_ch = 2 if i % 2 == 0 else 1
            audio = rng.standard_normal((SR * 7, n_ch)).astype(np.float32) * 0.1
            recs.append(Sample(path=write(tmp_path / label / f"{i}.wav", audio), label=label))
            recs[-1].group = recs[-1].path
    grouped_split(recs, valid_fraction=0.2, test_fraction=0.2, seed=3)
    windows = make_windows(recs, clip_seconds=2.0, hop_seconds=1.0).windows
    assert len(windows) > len(recs) * 4
    assert_no_leakage(windows)
    groups = {}
    for split in ("train", "valid", "test"):
        ds = AudioWindowDataset(
            [w for w in windows if w.split == split], ["robin", "wren"], clip_seconds=2.0, stereo="split"
        )
        groups[split] = {ds.item_sample(i).group for i in range(len(ds))}
        assert {ds.item_sample(i).split for i in range(len(ds))} == {split}
        stereo_items = [i for i in range(len(ds)) if ds.item_channel(i) == 1]
        assert stereo_items  # the second channel of stereo windows is its own item
    assert not groups["train"] & groups["valid"]
    assert not groups["train"] & groups["test"]
    assert not groups["valid"] & groups["test"]
    assert set().union(*groups.values()) == {r.path for r in recs}


def test_dataset_items_match_load_and_pad_short(tmp_path):
    rng = np.random.default_rng(1)
    stereo = rng.standard_normal((44100 * 6, 2)).astype(np.float32) * 0.1
    p = write(tmp_path / "s.wav", stereo, 44100)
    short = write(tmp_path / "short.wav", rng.standard_normal(SR).astype(np.float32) * 0.1)
    windows = make_windows([rec(p), rec(short, label="b")], clip_seconds=2.0).windows
    for cache_mb in (64.0, 0.001):  # cached whole, and read window by window
        ds = AudioWindowDataset(
            windows, ["a", "b"], clip_seconds=2.0, stereo="split", highpass_hz=1000, cache_mb=cache_mb
        )
        assert len(ds) == 3 * 2 + 1
        for i in range(len(ds)):
            x, y = ds[i]
            s = ds.item_sample(i)
            assert x.dtype == torch.float32 and x.shape == (2 * SR,)
            ref = load(s.path, SR, start_s=s.start_s, end_s=s.end_s, stereo="split", highpass_hz=1000)
            ref = ref[max(ds.item_channel(i), 0)]
            np.testing.assert_allclose(x[: ref.size].numpy(), ref, atol=1e-5)
            assert (x[ref.size :] == 0).all()
            assert y == (0 if s.label == "a" else 1)
    assert ds.targets == [0] * 6 + [1]


def test_dataset_survives_bad_files(tmp_path, caplog):
    good = write(tmp_path / "good.wav", np.ones(SR * 3, np.float32) * 0.1)
    doomed = write(tmp_path / "doomed.wav", np.ones(SR * 3, np.float32) * 0.1)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        ds = AudioWindowDataset([rec(good), rec(str(bad)), rec(doomed)], ["a"], clip_seconds=1.0)
    assert len(ds) == 2 and [p.path for p in ds.problems] == [str(bad)]
    assert "bad.wav" in caplog.text
    Path(doomed).write_bytes(b"garbage now")  # the file breaks after setup
    with caplog.at_level(logging.WARNING):
        x, _ = ds[1]
        ds[1]
    assert (x == 0).all()
    assert caplog.text.count("became unreadable") == 1
    with pytest.raises(ValueError, match="not in the class list"):
        AudioWindowDataset([rec(good, label="zebra")], ["a"])


def test_dataset_pickles_and_runs_in_workers(demo_calls):
    samples, _ = discover_recordings(demo_calls)
    grouped_split(samples)
    windows = make_windows(samples, clip_seconds=2.0).windows
    classes = sorted({s.label for s in samples})
    aug = WaveAugment(AudioAugmentConfig(mix_p=0.5))
    train = [w for w in windows if w.split == "train"]
    ds = AudioWindowDataset(train, classes, clip_seconds=2.0, augment=aug)
    ds[0]
    assert ds._cache  # decoded recordings are cached in this process...
    clone = pickle.loads(pickle.dumps(ds))
    assert not clone._cache and len(clone) == len(ds)  # ...but never shipped to workers
    torch.manual_seed(0)
    batches = list(DataLoader(ds, batch_size=8, num_workers=2, shuffle=True))
    assert sum(len(b[0]) for b in batches) == len(ds)
    assert batches[0][0].shape == (8, 2 * SR) and batches[0][0].dtype == torch.float32
    # augmentation differs between epochs in the main process too
    a, b = ds[0][0], ds[0][0]
    assert not torch.equal(a, b)


def test_demo_calls_fast_deterministic_and_distinct(tmp_path):
    t = time.perf_counter()
    root = make_demo_calls(tmp_path / "a")
    elapsed = time.perf_counter() - t
    assert elapsed < 2.0
    files = sorted(root.rglob("*.wav"))
    assert len(files) == 24 and len({f.parent.name for f in files}) == 4
    info = sf.info(files[0])
    assert info.samplerate == SR and info.frames == 8 * SR
    assert any(sf.info(f).channels == 2 for f in files)
    again = make_demo_calls(tmp_path / "b")

    def digest(r: Path) -> str:
        return hashlib.sha256(b"".join(f.read_bytes() for f in sorted(r.rglob("*.wav")))).hexdigest()

    assert digest(root) == digest(again)
    assert digest(root) != digest(make_demo_calls(tmp_path / "c", seed=1))
    # species differ in where their energy sits: mean spectra of two species are far apart
    spectra = {}
    for f in files:
        x = load(f, SR)[0]
        s = np.abs(np.fft.rfft(x, 4096 * 8))[: 4096 * 4].reshape(256, -1).sum(1)
        spectra.setdefault(f.parent.name, []).append(s / s.sum())
    means = {k: np.mean(v, 0) for k, v in spectra.items()}
    names = sorted(means)
    within = np.mean([np.abs(v - means[k]).sum() for k in names for v in spectra[k]])
    between = np.mean([np.abs(means[a] - means[b]).sum() for a in names for b in names if a < b])
    assert between > 2 * within
