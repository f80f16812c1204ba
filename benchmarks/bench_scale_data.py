"""Data at scale, measured on the real photos: class balance on a 10:1 imbalanced split, and shards vs folders.

    python benchmarks/bench_scale_data.py balance [--photos ../shared/realdata/photos] [--out /tmp/bench_scale]
    python benchmarks/bench_scale_data.py shards  [--photos ...] [--out ...] [--seeds 7 8]

``balance``: the training split is subsampled to a 10:1 imbalance (every other species keeps a
tenth of its training photos, at least one; valid and test untouched), then the same fine-tune
(EfficientNet-Lite0 from its ImageNet weights, one head-only epoch, then everything) runs with
``data.balance=none``, ``sampler`` and ``loss``; the table gives macro recall on the (balanced)
test split over all species and over the minority species alone.

``shards``: the photos are written as LitData shards, and the same fine-tune runs from the folder
and from the shards (same seed and epochs), for each seed; the table gives test accuracy and training time.

Each fit runs in its own process (``python -m birdvision.fit``); numbers are printed, not asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from birdvision.data.manifest import write_manifest
from birdvision.data.sources import discover
from birdvision.data.splits import assign_splits

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "photos"
FIT = ["recipe=effnet_lite0", "finetune.head_init=random", "finetune.warmup_epochs=1", "trainer.max_epochs=3",
       "data.num_workers=2"]


def fit(out: Path, *args: str) -> tuple[dict, float]:
    """Run one fit in its own process; (summary, wall seconds)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "birdvision.fit", *FIT, f"output_dir={out}", *args],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"fit failed ({' '.join(args)}):\n{r.stderr[-3000:]}")
    summary = max(out.glob("*/*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(summary.read_text()), wall


def per_class_recall(run_dir: Path) -> dict[str, float]:
    """Recall per species on the evaluated split, from the run's eval/per_class.csv."""
    table = run_dir / "eval" / "per_class.csv"
    return {r["label"].lstrip("'"): float(r["recall"]) for r in csv.DictReader(open(table, newline="", encoding="utf-8"))}


def balance(photos: Path, out: Path) -> None:
    found = discover(photos)
    assign_splits(found.samples, valid_fraction=0.15, test_fraction=0.15, seed=0)
    classes = sorted({s.label for s in found.samples})
    minority = set(classes[1::2])
    rng = random.Random(0)
    kept = []
    for c in classes:
        train = [s for s in found.samples if s.label == c and s.split == "train"]
        if c in minority:
            train = rng.sample(train, max(1, len(train) // 10))
        kept += train + [s for s in found.samples if s.label == c and s.split != "train"]
    manifest = write_manifest(out / "imbalanced.csv", kept)
    counts = {c: sum(1 for s in kept if s.label == c and s.split == "train") for c in classes}
    Console().print(f"train photos per species: majority {min(counts[c] for c in classes if c not in minority)}-"
                    f"{max(counts[c] for c in classes if c not in minority)}, minority "
                    f"{min(counts[c] for c in minority)}-{max(counts[c] for c in minority)}")
    t = Table(title="data.balance on a 10:1 imbalanced training split (test: 30 photos per species)")
    for col in ("balance", "test acc", "macro recall", "minority recall", "majority recall", "fit s"):
        t.add_column(col)
    for mode in ("none", "sampler", "loss"):
        s, wall = fit(out / mode, f"data.manifest={manifest}", f"data.root={photos}", f"data.balance={mode}", "seed=7")
        rec = per_class_recall(Path(s["run_dir"]))
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        t.add_row(mode, f"{s['test/acc']:.4f}", f"{mean(list(rec.values())):.4f}",
                  f"{mean([rec[c] for c in minority]):.4f}", f"{mean([rec[c] for c in classes if c not in minority]):.4f}",
                  f"{wall:.0f}")
    Console().print(t)


def shards(photos: Path, out: Path, seeds: list[int]) -> None:
    """The same fine-tune from the folder and from shards, per seed: a single run's test accuracy moves by about
    a point with the seed alone (sample order, augmentation), so the comparison is made over seeds."""
    sh = out / "shards"
    if not (sh / "shards.json").is_file():
        subprocess.run([sys.executable, "-m", "birdvision.shards", f"data.root={photos}", f"output={sh}", "seed=7"],
                       check=True)
    t = Table(title="the same fine-tune from folders and from LitData shards")
    for col in ("seed", "source", "test acc", "val acc best", "fit s"):
        t.add_column(col)
    acc: dict[str, list[float]] = {"folders": [], "shards": []}
    for seed in seeds:
        for name, args in (("folders", [f"data.root={photos}"]), ("shards", [f"data.shards={sh}"])):
            s, wall = fit(out / f"fit_from_{name}_seed{seed}", *args, f"seed={seed}")
            acc[name].append(s["test/acc"])
            t.add_row(str(seed), name, f"{s['test/acc']:.4f}", f"{s['val/acc_best']:.4f}", f"{wall:.0f}")
    Console().print(t)
    mean = {k: sum(v) / len(v) for k, v in acc.items()}
    Console().print(f"mean test acc over seeds {seeds}: folders {mean['folders']:.4f}, shards {mean['shards']:.4f}, "
                    f"difference {(mean['shards'] - mean['folders']) * 100:+.2f} points; "
                    f"spread over seeds: folders {(max(acc['folders']) - min(acc['folders'])) * 100:.2f}, "
                    f"shards {(max(acc['shards']) - min(acc['shards'])) * 100:.2f} points")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("balance", "shards"))
    ap.add_argument("--photos", type=Path, default=REALDATA)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_scale"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8], help="shards: one fit per source and seed")
    a = ap.parse_args()
    if not a.photos.is_dir():
        raise SystemExit(f"{a.photos} is not there (../shared/realdata beside the checkout)")
    a.out.mkdir(parents=True, exist_ok=True)
    if a.what == "balance":
        balance(a.photos, a.out)
    else:
        shards(a.photos, a.out, a.seeds)


if __name__ == "__main__":
    main()
