"""Generated images that are not birds: the out-of-distribution set photo abstention is tuned and tested on.

SYNTHETIC: noise, textures, gradients, stripes, checkerboards, blobs and flat colours, each
drawn from a seeded generator, so the same ``(kind, seed)`` always gives the same pixels and
two seeds give two different images. Thresholds are picked on one range of seeds and measured
on another (:func:`ood_images` with ``seed``), never on the same pixels.

They are a floor, not the real thing: a photo model that cannot tell a bird from television
static is broken, but one that can still needs checking on real non-bird photos (the
evaluation takes a folder of them, ``ood=``) and on birds of species it was not trained on.
Only numpy and Pillow are used, so the predict path could make them without PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

Maker = Callable[[np.random.Generator, int], np.ndarray]


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _uniform_noise(rng: np.random.Generator, s: int) -> np.ndarray:
    return rng.integers(0, 256, (s, s, 3), dtype=np.uint8)


def _gaussian_noise(rng: np.random.Generator, s: int) -> np.ndarray:
    return _u8(_colour(rng) + rng.normal(0, rng.uniform(10, 60), (s, s, 3)))


def _clouds(rng: np.random.Generator, s: int) -> np.ndarray:
    """Smooth random blobs: noise at a coarse scale, enlarged with a bicubic filter."""
    coarse = rng.integers(0, 256, (int(rng.integers(3, 12)),) * 2 + (3,), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((s, s), Image.Resampling.BICUBIC))


def _gradient(rng: np.random.Generator, s: int) -> np.ndarray:
    a, b = _colour(rng), _colour(rng)
    theta = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:s, 0:s] / max(s - 1, 1)
    t = (np.cos(theta) * x + np.sin(theta) * y)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    return _u8(a + t[..., None] * (b - a))


def _radial(rng: np.random.Generator, s: int) -> np.ndarray:
    a, b = _colour(rng), _colour(rng)
    cy, cx = rng.uniform(0, s, 2)
    r = np.hypot(*(np.mgrid[0:s, 0:s] - np.array([cy, cx])[:, None, None]))
    t = r / max(float(r.max()), 1e-9)
    return _u8(a + t[..., None] * (b - a))


def _stripes(rng: np.random.Generator, s: int) -> np.ndarray:
    a, b = _colour(rng), _colour(rng)
    period = rng.uniform(4, s / 3)
    theta = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:s, 0:s]
    t = (np.sin(2 * np.pi * (np.cos(theta) * x + np.sin(theta) * y) / period) > 0).astype(np.float64)
    return _u8(a + t[..., None] * (b - a))


def _checker(rng: np.random.Generator, s: int) -> np.ndarray:
    a, b = _colour(rng), _colour(rng)
    cell = int(rng.integers(4, max(5, s // 4)))
    y, x = np.mgrid[0:s, 0:s]
    t = (((x // cell) + (y // cell)) % 2).astype(np.float64)
    return _u8(a + t[..., None] * (b - a))


def _plaid(rng: np.random.Generator, s: int) -> np.ndarray:
    y, x = np.mgrid[0:s, 0:s] / s
    out = np.zeros((s, s, 3))
    for c in range(3):
        fx, fy = rng.uniform(1, 12, 2)
        out[..., c] = 127.5 + 127.5 * np.sin(2 * np.pi * fx * x + rng.uniform(0, 6.3)) * np.cos(
            2 * np.pi * fy * y + rng.uniform(0, 6.3))
    return _u8(out)


def _flat(rng: np.random.Generator, s: int) -> np.ndarray:
    return _u8(np.broadcast_to(_colour(rng), (s, s, 3)) + rng.normal(0, 2, (s, s, 3)))


def _shapes(rng: np.random.Generator, s: int) -> np.ndarray:
    """Random rectangles and discs on a flat ground, slightly blurred."""
    img = np.empty((s, s, 3))
    img[:] = _colour(rng)
    y, x = np.mgrid[0:s, 0:s]
    for _ in range(int(rng.integers(2, 9))):
        cy, cx, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(s / 20, s / 3)
        mask = (np.hypot(y - cy, x - cx) < r) if rng.random() < 0.5 else (
            (abs(y - cy) < r) & (abs(x - cx) < r * rng.uniform(0.3, 2)))
        img[mask] = _colour(rng)
    return np.asarray(Image.fromarray(_u8(img)).filter(ImageFilter.GaussianBlur(rng.uniform(0, 2))))


KINDS: dict[str, Maker] = {
    "uniform_noise": _uniform_noise, "gaussian_noise": _gaussian_noise, "clouds": _clouds,
    "gradient": _gradient, "radial": _radial, "stripes": _stripes, "checker": _checker,
    "plaid": _plaid, "flat": _flat, "shapes": _shapes,
}


def ood_image(kind: str, seed: int, size: int = 224) -> np.ndarray:
    """One generated non-bird image, uint8 RGB ``[size, size, 3]``; the same (kind, seed, size), the same pixels."""
    if kind not in KINDS:
        raise ValueError(f"unknown OOD image kind {kind!r}; expected one of {', '.join(KINDS)}")
    rng = np.random.default_rng([seed, list(KINDS).index(kind)])
    return np.ascontiguousarray(KINDS[kind](rng, int(size)), dtype=np.uint8)


def ood_images(n_per_kind: int, size: int = 224, *, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n_per_kind`` images of every kind (seeds ``seed .. seed + n_per_kind - 1``) and their kind names."""
    imgs, kinds = [], []
    for kind in KINDS:
        for i in range(n_per_kind):
            imgs.append(ood_image(kind, seed + i, size))
            kinds.append(kind)
    arr = np.stack(imgs) if imgs else np.zeros((0, size, size, 3), np.uint8)
    return arr, kinds
