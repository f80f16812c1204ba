"""Per-file work: read, hash, decode once, and compute everything the audit needs from it.

One decode per file feeds cleanvision's own image-property functions, cleanvision's
duplicate hashes (pixel md5, perceptual hash), the robust near-duplicate descriptor and
the report thumbnail. Plain cleanvision decodes every image twice (properties, then
hashes); decoding once is how the audit does more and still runs faster.

Files that cannot be decoded never reach cleanvision (it stops at the first one with a
traceback); each gets a reason instead: zero bytes, not an image, a declared size
beyond the policy's pixel limit (read from the header before any pixel is decoded),
truncated or corrupt data, or no read permission.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import stat
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from birdvision.checks.cache import ScanCache
from birdvision.data.photos.decode import MAX_PIXELS
from birdvision.runs.artifacts import sha256_file

SCAN_VERSION = 1  # bump when what scan_file computes changes: old cache entries stop matching


@dataclass(frozen=True)
class ScanSettings:
    """Everything that changes a file's scan result (part of the cache key)."""

    max_pixels: int = MAX_PIXELS
    phash_size: int = 8
    descriptor_px: int = 16
    thumbnail_px: int = 96

    def signature(self) -> str:
        """A short string naming these settings and the scan version."""
        return (
            f"v{SCAN_VERSION}-p{self.max_pixels}-h{self.phash_size}"
            f"-d{self.descriptor_px}-t{self.thumbnail_px}"
        )


def _unreadable(path: str, reason: str, sha256: str = "", size: int = 0) -> dict[str, Any]:
    return {"path": path, "sha256": sha256, "readable": False, "reason": reason, "bytes": size}


def descriptor(img: Image.Image, px: int) -> np.ndarray:
    """A resize- and recompression-robust signature: the mean-centred ``px`` x ``px`` colour thumbnail.

    Box-averaging to a tiny thumbnail removes exactly what resizing and JPEG
    re-compression change (fine detail, block artefacts) and keeps the layout of colour;
    centring each channel removes brightness shifts. Cosine similarity of two descriptors
    near 1 means the same photo. Tested against 0.3x-1.7x resizing with JPEG quality 40-70.
    """
    a = np.asarray(img.convert("RGB").resize((px, px), Image.Resampling.BOX), dtype=np.float32)
    a = a - a.mean(axis=(0, 1), keepdims=True)
    v = a.ravel()
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else v


# cleanvision's per-pixel brightness is sqrt(0.241 r^2 + 0.691 g^2 + 0.068 b^2) / 255 on int64
# channels; looking the three terms up in tables gives bit-identical float64 values at half the
# cost (it dominates the per-image time). Other layouts fall back to cleanvision's own code.
_SQUARES = np.arange(256, dtype=np.int64) ** 2
_LUT_R, _LUT_G, _LUT_B = 0.241 * _SQUARES, 0.691 * _SQUARES, 0.068 * _SQUARES
_PERCENTILES = (1, 5, 10, 15, 90, 95, 99)


def _brightness(img: Image.Image) -> dict[str, Any]:
    from cleanvision.issue_managers.image_property import BrightnessProperty, calc_avg_brightness

    a = np.asarray(img)
    if a.ndim != 3 or a.dtype != np.uint8 or a.shape[2] < 3:
        return BrightnessProperty("dark").calculate(img)
    per_pixel = np.sqrt(_LUT_R[a[:, :, 0]] + _LUT_G[a[:, :, 1]] + _LUT_B[a[:, :, 2]]) / 255
    values = np.percentile(per_pixel, _PERCENTILES)
    out: dict[str, Any] = {f"brightness_perc_{p}": v for p, v in zip(_PERCENTILES, values, strict=True)}
    out["brightness"] = calc_avg_brightness(img)
    return out


def _cleanvision_properties(img: Image.Image) -> dict[str, Any]:
    """cleanvision's raw per-image values, from its own property classes (scored later over the set)."""
    from cleanvision.issue_managers.image_property import (
        AspectRatioProperty,
        BlurrinessProperty,
        ColorSpaceProperty,
        EntropyProperty,
        SizeProperty,
    )

    out: dict[str, Any] = _brightness(img)
    for prop in (
        AspectRatioProperty(),
        EntropyProperty(),
        BlurrinessProperty(),
        ColorSpaceProperty(),
        SizeProperty(),
    ):
        out.update(prop.calculate(img))
    return {k: (v if isinstance(v, str) else float(v)) for k, v in out.items()}


def _thumbnail(img: Image.Image, px: int) -> bytes:
    factor = max(1, max(img.size) // px)  # integer box reduction: cheap, and good enough to look at
    t = (img.reduce(factor) if factor > 1 and img.mode in ("L", "RGB", "RGBA") else img).convert("RGB")
    if max(t.size) > px * 1.5:
        t.thumbnail((px, px), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    t.save(buf, "JPEG", quality=70)
    return buf.getvalue()


def scan_file(path: str, settings: ScanSettings) -> dict[str, Any]:
    """Everything the audit needs from one file; never raises for a bad file."""
    from cleanvision.issue_managers.duplicate_issue_manager import get_hash

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read forever
            return _unreadable(path, "not a regular file")
        data = Path(path).read_bytes()
    except PermissionError:
        return _unreadable(path, "no read permission")
    except OSError as e:
        return _unreadable(path, f"cannot read file ({e.strerror or e})")
    sha = hashlib.sha256(data).hexdigest()
    if not data:
        return _unreadable(path, "zero bytes", sha)
    truncated_flag = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail here, not load half grey
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(io.BytesIO(data))  # reads the header only
            except Image.DecompressionBombError as e:
                return _unreadable(path, f"decompression bomb: {e}", sha, len(data))
            except UnidentifiedImageError:
                return _unreadable(
                    path, "not an image (no known image format; broken header?)", sha, len(data)
                )
            except (OSError, SyntaxError, ValueError) as e:
                return _unreadable(path, f"not an image ({type(e).__name__}: {e})", sha, len(data))
            w, h = img.size
            if w * h > settings.max_pixels:
                return _unreadable(
                    path,
                    f"decompression bomb: declares {w}x{h} = {w * h} pixels, limit {settings.max_pixels}",
                    sha,
                    len(data),
                )
            if w == 0 or h == 0:
                return _unreadable(path, f"empty image ({w}x{h})", sha, len(data))
            try:
                img.load()
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                return _unreadable(path, f"truncated or corrupt ({type(e).__name__}: {e})", sha, len(data))
            try:
                props = _cleanvision_properties(img)
                md5 = get_hash(img, {"hash_type": "md5"})
                phash = get_hash(img, {"hash_type": "phash", "hash_size": settings.phash_size})
                desc = descriptor(img, settings.descriptor_px)
                thumb = _thumbnail(img, settings.thumbnail_px)
            except Exception as e:  # noqa: BLE001 - any decoder/analysis failure is a finding, not a crash
                return _unreadable(
                    path, f"cannot analyse decoded image ({type(e).__name__}: {e})", sha, len(data)
                )
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_flag
    return {
        "path": path,
        "sha256": sha,
        "readable": True,
        "reason": "",
        "bytes": len(data),
        "width": w,
        "height": h,
        "mode": img.mode,
        "format": img.format or "",
        "properties": props,
        "pixel_md5": md5,
        "phash": phash,
        "descriptor": desc,
        "thumb": thumb,
    }


def _scan_job(args: tuple[str, ScanSettings]) -> dict[str, Any]:
    return scan_file(*args)


@dataclass
class ScanStats:
    """How the scan went: what came from the cache, what was computed, how long it took."""

    files: int = 0
    cached: int = 0
    computed: int = 0
    seconds: float = 0.0
    workers: int = 1


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def scan_all(
    paths: list[str],
    settings: ScanSettings,
    cache: ScanCache | None,
    *,
    workers: int = 0,
    trust_mtime: bool = True,
    progress: bool = True,
) -> tuple[dict[str, dict[str, Any]], ScanStats]:
    """Scan every path, from the cache where the content is known, in parallel otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from birdvision.console import console

    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    stat_of: dict[str, tuple[int, int]] = {}
    todo: list[str] = []
    with Progress(
        TextColumn("[bold]audit[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
        transient=True,
    ) as bar:
        # A re-audit of unchanged files spends its scan time here: a stat, two SQLite look-ups, unpacking.
        looking = bar.add_task("checking the scan cache", total=len(paths), visible=cache is not None)
        for p in paths:
            hit = None
            if cache is not None:
                try:
                    st = os.stat(p)
                    stat_of[p] = (st.st_size, st.st_mtime_ns)
                except OSError:
                    st = None
                sha = None
                if st is not None and stat.S_ISREG(st.st_mode) and os.access(p, os.R_OK):
                    if trust_mtime:
                        sha = cache.known_sha(p, st.st_size, st.st_mtime_ns)
                    if sha is None and st.st_size < (1 << 28):
                        try:
                            sha = sha256_file(p)
                        except OSError:
                            sha = None
                if sha is not None:
                    hit = cache.get(sha)
                    if hit is not None and trust_mtime and st is not None:
                        cache.remember(p, st.st_size, st.st_mtime_ns, sha)
                bar.advance(looking)
            if hit is not None:
                hit["path"], hit["cached"] = p, True
                results[p] = hit
            else:
                todo.append(p)
        bar.update(looking, visible=False)
        stats = ScanStats(files=len(paths), cached=len(results), computed=len(todo))
        n_workers = min(workers or default_workers(), max(1, len(todo)))
        if len(todo) < 16:
            n_workers = 1  # a pool costs more than it saves on a handful of files
        stats.workers = n_workers
        task = bar.add_task("scanning files", total=len(todo), visible=bool(todo))
        jobs = [(p, settings) for p in todo]

        def take(r: dict[str, Any]) -> None:
            r["cached"] = False
            results[r["path"]] = r
            if cache is not None:
                size, mtime = stat_of.get(r["path"], (None, None))
                cache.put(r, size, mtime)
            bar.advance(task)

        if n_workers == 1:
            for job in jobs:
                take(_scan_job(job))
        else:
            ctx = multiprocessing.get_context(
                "fork" if "fork" in multiprocessing.get_all_start_methods() else None
            )
            chunk = max(1, min(32, len(jobs) // (n_workers * 8)))
            with ctx.Pool(n_workers) as pool:
                for r in pool.imap_unordered(_scan_job, jobs, chunksize=chunk):
                    take(r)
    if cache is not None:
        cache.commit()
    stats.seconds = time.perf_counter() - t0
    return results, stats
