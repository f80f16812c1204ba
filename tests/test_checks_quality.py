"""The audit's cleanvision checks give exactly what plain cleanvision gives on the same files."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from birdvision.checks.duplicates import cosine_pairs, find_duplicates
from birdvision.checks.policy import CLEANVISION_PROPERTY_ISSUES, ThresholdsConfig
from birdvision.checks.quality import score_properties
from birdvision.checks.scan import ScanSettings, scan_file


def _images(folder: Path) -> list[str]:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(10):
        a = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        img = Image.fromarray(a).resize((64, 64), Image.Resampling.BICUBIC)
        paths.append(folder / f"p{i}.jpg")
        img.save(paths[-1], quality=90)
    Image.new("RGB", (64, 64), (3, 3, 3)).save(folder / "dark.png")
    Image.new("RGB", (64, 64), (252, 252, 252)).save(folder / "light.png")
    Image.open(paths[0]).convert("L").save(folder / "gray.png")
    Image.open(paths[1]).resize((200, 40)).save(folder / "wide.jpg")
    Image.open(paths[2]).filter(__import__("PIL.ImageFilter").ImageFilter.GaussianBlur(6)).save(folder / "blur.jpg")
    shutil.copy(paths[3], folder / "copy.jpg")
    Image.open(paths[4]).resize((32, 32)).save(folder / "small.jpg")
    return sorted(str(p) for p in folder.iterdir())


def test_property_and_duplicate_issues_match_plain_cleanvision(tmp_path):
    from cleanvision import Imagelab

    files = _images(tmp_path / "imgs")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        lab = Imagelab(filepaths=files)
        lab.find_issues(n_jobs=1)
    scans = {p: scan_file(p, ScanSettings()) for p in files}
    ours = score_properties({p: r["properties"] for p, r in scans.items()}, ThresholdsConfig())
    for issue in CLEANVISION_PROPERTY_ISSUES:
        col = f"is_{issue}_issue"
        theirs = set(lab.issues.index[lab.issues[col]])
        assert set(ours.index[ours[col]]) == theirs, issue
        np.testing.assert_allclose(ours.loc[files, f"{issue}_score"], lab.issues.loc[files, f"{issue}_score"])
    assert set(ours.index[ours["is_dark_issue"]]) >= {str(tmp_path / "imgs" / "dark.png")}
    d = find_duplicates(
        files,
        [scans[p]["pixel_md5"] for p in files],
        [scans[p]["phash"] for p in files],
        np.stack([scans[p]["descriptor"] for p in files]),
        1.01,  # cosine off: only cleanvision's own methods
    )
    assert sorted(map(sorted, d.exact_sets)) == sorted(map(sorted, lab.info["exact_duplicates"]["sets"]))
    near = {p for s in lab.info["near_duplicates"]["sets"] for p in s}
    assert set(d.near_partner) == near


def test_cosine_pairs_blocked_equals_full():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x[10] = x[3] + 0.01
    x[40] = x[3]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    full = {(i, j) for i, j, _ in cosine_pairs(x, 0.99, block=1000)}
    assert full == {(i, j) for i, j, _ in cosine_pairs(x, 0.99, block=7)}
    assert {(3, 10), (3, 40), (10, 40)} <= full
