"""Training vs data-loading throughput on this machine, side by side in one run.

    python benchmarks/bench_train.py [--photos ../shared/realdata/photos] [--size 224]

Prints images/s of a full training step (forward, backward, AdamW) for resnet18 and
efficientnet_b0 at 224 px on random tensors, then images/s of the photo loader (decode +
the training augmentations + normalise) on real photos with 0, 1 and 2 workers, and the
ratio loader/training: the loader must stay well ahead of the step or the cores idle.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from birdvision.data.photos.transforms import ImageDataset, train_transform
from birdvision.data.sources import discover
from birdvision.models import create_model, get_spec
from birdvision.spec import ImageSpec

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "photos"


def train_throughput(backbone: str, size: int, batch: int, steps: int) -> float:
    """Images per second of full training steps (2 warm-up steps not counted)."""
    model = create_model(backbone, 36).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 36, (batch,))
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def loader_throughput(photos: Path, size: int, batch: int, workers: int, n_images: int) -> float:
    """Images per second delivered by the training DataLoader (first batch not counted)."""
    samples = [s for s in discover(photos).samples if s.split == "train"][:n_images]
    spec = get_spec("resnet18")
    ds = ImageDataset(samples, {s.label: 0 for s in samples}, train_transform(ImageSpec(size, spec.mean, spec.std)))
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)
    it = iter(dl)
    next(it)
    t0, n = time.perf_counter(), 0
    for xb, _ in it:
        n += len(xb)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=REALDATA)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--images", type=int, default=640)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    console = Console()
    results: dict = {"cpu_count": os.cpu_count(), "size": args.size, "train": {}, "loader": {}}
    for bb in ("resnet18", "efficientnet_b0"):
        results["train"][bb] = train_throughput(bb, args.size, args.batch, args.steps)
        console.print(f"train step {bb}: {results['train'][bb]:.1f} img/s")
    if args.photos.is_dir():
        for w in (0, 1, 2):
            results["loader"][w] = loader_throughput(args.photos, args.size, args.batch, w, args.images)
            console.print(f"loader {w} workers: {results['loader'][w]:.1f} img/s")
    else:
        console.print(f"[yellow]{args.photos} not found: loader throughput skipped")
    t = Table(title=f"training vs loading at {args.size} px on {os.cpu_count()} CPU cores")
    t.add_column("what")
    t.add_column("images/s", justify="right")
    t.add_column("loader(2 workers) / this", justify="right")
    l2 = results["loader"].get(2)
    for bb, v in results["train"].items():
        t.add_row(f"training step {bb}", f"{v:.1f}", f"{l2 / v:.1f}x" if l2 else "-")
    for w, v in results["loader"].items():
        t.add_row(f"loader, {w} workers", f"{v:.1f}", "")
    console.print(t)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
