"""The embedded demo photo set: synthetic "species" drawn as coloured birds, no download needed.

Each species has its own body colour, wing colour and beak length; position, size, pose and
background vary, so a model must learn the species' look, not a fixed image. It is written
in the BIRDS-525 layout (``train/ valid/ test/<SPECIES>/*.jpg`` and ``birds.csv``), so the
demo exercises the same code path as the real data set. Synthetic: it says nothing about
accuracy on real birds.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from birdvision.runs.artifacts import write_text

SPECIES = [
    ("CRIMSON DEMO FINCH", (200, 30, 40), (90, 10, 20), 0.25),
    ("AZURE DEMO JAY", (40, 90, 210), (230, 230, 240), 0.35),
    ("GOLDEN DEMO WARBLER", (235, 200, 30), (60, 60, 60), 0.2),
    ("EMERALD DEMO PARROT", (30, 170, 70), (220, 40, 40), 0.5),
    ("SLATE DEMO DOVE", (120, 125, 140), (200, 190, 180), 0.15),
    ("RUSTY DEMO ROBIN", (190, 100, 40), (70, 50, 40), 0.3),
]


def _bird(rng: random.Random, body: tuple, wing: tuple, beak: float, size: int) -> Image.Image:
    bg = tuple(rng.randint(60, 200) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    for _ in range(3):  # background clutter: leaves and branches
        x, y = rng.randint(0, size), rng.randint(0, size)
        r = rng.randint(size // 10, size // 4)
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(max(0, c + rng.randint(-40, 40)) for c in bg))
    s = size * rng.uniform(0.45, 0.7)
    cx, cy = size * rng.uniform(0.35, 0.65), size * rng.uniform(0.4, 0.6)
    jitter = lambda c: tuple(min(255, max(0, v + rng.randint(-20, 20))) for v in c)  # noqa: E731
    d.ellipse([cx - s / 2, cy - s / 4, cx + s / 2, cy + s / 4], fill=jitter(body))  # body
    d.ellipse([cx - s / 6, cy - s / 10, cx + s / 3, cy + s / 6], fill=jitter(wing))  # wing
    hx, hy, hr = cx - s / 2, cy - s / 5, s / 5
    d.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=jitter(body))  # head
    d.ellipse([hx - hr / 3, hy - hr / 3, hx - hr / 6, hy - hr / 6], fill=(0, 0, 0))  # eye
    bl = s * beak
    d.polygon([(hx - hr * 0.8, hy - hr / 4), (hx - hr * 0.8 - bl, hy), (hx - hr * 0.8, hy + hr / 4)], fill=(240, 170, 40))
    d.polygon([(cx + s / 2, cy), (cx + s * 0.8, cy - s / 5), (cx + s * 0.8, cy + s / 5)], fill=jitter(wing))  # tail
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = img.rotate(rng.uniform(-15, 15), fillcolor=bg)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def make_demo_photos(
    root: str | Path,
    *,
    n_species: int = 4,
    per_split: tuple[int, int, int] = (40, 10, 10),
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write the demo set under ``root`` (skipped when an identical one is there already)."""
    root = Path(root)
    if not 2 <= n_species <= len(SPECIES):
        raise ValueError(f"n_species must be in 2..{len(SPECIES)}")
    stamp = f"{n_species}-{per_split}-{size}-{seed}"
    if (root / ".demo_stamp").is_file() and (root / ".demo_stamp").read_text() == stamp:
        return root
    rng = random.Random(seed)
    rows = []
    for cid, (name, body, wing, beak) in enumerate(SPECIES[:n_species]):
        for split, n in zip(("train", "valid", "test"), per_split, strict=True):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                buf = io.BytesIO()
                _bird(rng, body, wing, beak, size).save(buf, "JPEG", quality=90)
                rel = f"{split}/{name}/{i:03d}.jpg"
                (root / rel).write_bytes(buf.getvalue())
                rows.append([float(cid), rel, name, split, f"DEMO {name.split()[0].title()}"])
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["class id", "filepaths", "labels", "data set", "scientific name"])
    w.writerows(rows)
    write_text(root / "birds.csv", out.getvalue())
    write_text(root / ".demo_stamp", stamp)
    return root
