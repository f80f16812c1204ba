"""Audit at scale: grow a photo set from the real photos, time the audit at several sizes, extrapolate.

    python benchmarks/bench_audit_scale.py [--sizes 5000 10000 20000] [--target 90000]
                                           [--photos ROOT] [--work DIR] [--workers N]
                                           [--set KEY=VALUE ...] [--generate-only]

For each size N a BIRDS-525 photo set (``birds.csv``, train/valid/test/<SPECIES>/) is grown
under ``--work`` from the real photos, kept between runs, and audited twice in a child
process: cold (empty scan cache) and warm (the same output folder again, every file
cached). Printed per size: files/s, cold and warm seconds, peak memory, near-duplicate
recall on the planted pairs, flagged pairs that were not planted, and the time of each
audit stage; then each stage is fitted against N and summed at ``--target``.

What the grown set holds (seeded, so every size is reproducible):

* Distinct images, ~95 % of N: derived from the 2,305 real photos round-robin, so each
  photo yields about N/2,305 of them. Derivation 0 is the photo itself at 224x224 (the
  BIRDS-525 size); derivation k >= 1 is a random crop (40-85 % of the side), one of the 8
  rotations/flips (``k % 8``), mild colour jitter, at 224x224. A derived image sits in its
  photo's split and species. These stand in for distinct photos; they are *not* planted
  pairs among themselves.
* Planted near-duplicates, N/20 pairs: a distinct image (the base) and one copy of it,
  placed in the same folder (50 %), the same species in another split (30 %) or another
  species (20 %). Kinds, within what the audit's descriptor claims to survive
  (:func:`birdvision.checks.scan.descriptor`: resizing 0.3x-1.7x, JPEG quality 40-70):
  byte-identical copy (10 %), re-encode at quality 40-70 (30 %), resize 0.5x-1.5x (30 %),
  resize 0.3x-1.7x and re-encode at quality 40-70 (30 %). Flipped copies are not planted:
  the descriptor is a colour layout and does not claim to match mirror images.

Scoring, from the audit's ``findings.csv``: a planted pair is found when an
``exact_duplicates`` or ``near_duplicates`` row links its two files (``path`` and
``related_path``); recall = found / planted. Every other linked pair is either
*related* (both files derive from the same real photo, or from real photos the audit
already links to each other: rotated or overlapping crops of one picture may honestly be
near-duplicates) or a *false positive* (unrelated photos). The manifest's duplicate
``group`` gives a second recall: planted pairs that ended in one group, which is what
keeps them on one side of a split.

Peak memory is the largest sum of PSS (proportional set size: shared pages split between
the processes sharing them) over the audit process and its scan workers, sampled every
0.2 s, with the largest single process's ``ru_maxrss`` beside it. "Cold" means an empty
scan cache, not an empty OS page cache (dropping that needs root). The cold audits' CPU
seconds (scan workers included) over cores x wall time is printed as their CPU share: well
under 100 % means other processes were competing and the wall times are upper bounds.

The duplicate search is also timed alone at ``--target`` on random descriptors (its cost
does not depend on the content), in a child process; that replaces its fitted value when larger.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_PHOTOS = REPO.parent / "shared" / "realdata" / "photos"
DEFAULT_WORK = Path("/tmp/birdvision-audit-scale")
SIDE = 224  # BIRDS-525 photos are 224x224 JPEGs
GENERATOR_VERSION = 1  # bump when what a grown set holds changes: old sets are regrown
SPLIT_ORDER = ("train", "valid", "test")


# ---------------------------------------------------------------------------------------------
# Growing a photo set
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One real photo: where it is, its species and split, and its source group."""

    path: str
    label: str
    split: str
    group: int  # real photos the audit already links share a group


def real_photos(root: Path, threshold: float = 0.90) -> list[Source]:
    """The real photos, grouped where the audit's own descriptor already calls them near-duplicates."""
    from PIL import Image

    from birdvision.checks.scan import descriptor

    paths = sorted(p for split in SPLIT_ORDER for p in (root / split).glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"error: no photos under {root}/{{train,valid,test}}/*/")
    desc = np.stack([descriptor(Image.open(p), 16) for p in paths])
    parent = list(range(len(paths)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    sim = desc @ desc.T
    for i, j in zip(*np.nonzero(np.triu(sim >= threshold, 1)), strict=True):
        parent[find(int(i))] = find(int(j))
    return [Source(str(p), p.parent.name, p.parent.parent.name, find(i)) for i, p in enumerate(paths)]


_DIHEDRAL = (None, 2, 3, 4, 5, 6, 1, 0)  # Image.Transpose values: identity, rot90/180/270, transpose, transverse, v-flip, h-flip


def _derive(src: str, seed: int, source_index: int, k: int) -> bytes:
    """Derivation ``k`` of one real photo as JPEG bytes (see the module docstring)."""
    from PIL import Image, ImageEnhance

    rng = np.random.default_rng([seed, source_index, k])
    img = Image.open(src).convert("RGB")
    w, h = img.size
    if k == 0:
        box = (0, 0, w, h)
    else:
        f = rng.uniform(0.40, 0.85)
        cw, ch = max(8, int(w * f)), max(8, int(h * f))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        box = (x, y, x + cw, y + ch)
    img = img.resize((SIDE, SIDE), Image.Resampling.BICUBIC, box=box)
    t = _DIHEDRAL[k % 8]
    if t is not None:
        img = img.transpose(Image.Transpose(t))
    if k > 0:
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enhance(img).enhance(float(rng.uniform(0.85, 1.15)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _copy(base: bytes, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """A planted near-duplicate of ``base`` (JPEG bytes) and its parameters in words."""
    from PIL import Image

    if kind == "exact":
        return base, "same bytes"
    img = Image.open(io.BytesIO(base)).convert("RGB")
    quality = 90
    scale = 1.0
    if kind in ("reencode", "resize_reencode"):
        quality = int(rng.integers(40, 71))
    if kind == "resize":
        scale = float(rng.uniform(0.5, 1.5))
    elif kind == "resize_reencode":
        scale = float(rng.uniform(0.3, 1.7))
    if scale != 1.0:
        side = max(8, round(SIDE * scale))
        img = img.resize((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue(), f"scale {scale:.2f} quality {quality}"


def _write_job(job: tuple) -> None:
    """Write one distinct image and, when it is a planted base, its copy."""
    src, seed, si, k, dest, copy = job
    data = _derive(src, seed, si, k)
    Path(dest).write_bytes(data)
    if copy is not None:
        copy_dest, kind, copy_seed = copy
        Path(copy_dest).write_bytes(_copy(data, kind, np.random.default_rng(copy_seed))[0])


def grow_photo_set(sources: list[Source], n: int, out: Path, seed: int = 0, workers: int = 1) -> dict:
    """Write ``n`` files under ``out/data`` (BIRDS-525 layout) and the ground truth to ``out/truth.json``.

    Reuses a complete set of the same size, seed and generator version.
    """
    truth_path = out / "truth.json"
    key = {"n": n, "seed": seed, "version": GENERATOR_VERSION, "sources": len(sources)}
    if truth_path.is_file():
        truth = json.loads(truth_path.read_text())
        if truth.get("key") == key:
            return truth
    if out.exists():
        shutil.rmtree(out)
    data = out / "data"
    rng = np.random.default_rng([seed, n])
    n_pairs = n // 20
    n_distinct = n - n_pairs
    labels = sorted({s.label for s in sources})
    by_label_split = {(s.label, s.split) for s in sources}
    # Distinct images: round-robin over the real photos, so each photo yields ~n/len(sources).
    items = []  # (source index, derivation k, rel path)
    for i in range(n_distinct):
        si, k = i % len(sources), i // len(sources)
        s = sources[si]
        items.append((si, k, f"{s.split}/{s.label}/{i:06d}.jpg"))
    kinds = rng.choice(
        ["exact", "reencode", "resize", "resize_reencode"], size=n_pairs, p=[0.1, 0.3, 0.3, 0.3]
    )
    bases = rng.choice(n_distinct, size=n_pairs, replace=False)
    copy_of: dict[int, tuple[str, str, int]] = {}
    pairs = []
    for j, (b, kind) in enumerate(zip(bases.tolist(), kinds.tolist(), strict=True)):
        si, _, rel = items[b]
        s = sources[si]
        where = rng.choice(["same_folder", "other_split", "other_label"], p=[0.5, 0.3, 0.2])
        split, label = s.split, s.label
        if where == "other_split":
            others = [sp for sp in SPLIT_ORDER if sp != s.split and (s.label, sp) in by_label_split]
            split = str(rng.choice(others)) if others else split
        elif where == "other_label":
            label = str(rng.choice([x for x in labels if x != s.label]))
        copy_rel = f"{split}/{label}/{n_distinct + j:06d}.jpg"
        copy_of[b] = (str(data / copy_rel), kind, int(rng.integers(1 << 31)))
        pairs.append({"base": rel, "copy": copy_rel, "kind": kind, "placed": str(where)})
    for _, _, rel in items:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
    for p in pairs:
        (data / p["copy"]).parent.mkdir(parents=True, exist_ok=True)
    jobs = [
        (sources[si].path, seed, si, k, str(data / rel), copy_of.get(i))
        for i, (si, k, rel) in enumerate(items)
    ]
    from birdvision.console import progress_bar

    with progress_bar() as bar:
        task = bar.add_task(f"growing {n} files", total=len(jobs))
        if workers > 1:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(workers) as pool:
                for _ in pool.imap_unordered(_write_job, jobs, chunksize=64):
                    bar.advance(task)
        else:
            for job in jobs:
                _write_job(job)
                bar.advance(task)
    rows = [(rel, sources[si].label, sources[si].split) for si, _, rel in items]
    rows += [(p["copy"], p["copy"].split("/")[1], p["copy"].split("/")[0]) for p in pairs]
    with open(data / "birds.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["class id", "filepaths", "labels", "data set", "scientific name"])
        for rel, label, split in sorted(rows):
            w.writerow([f"{labels.index(label)}.0", rel, label, split, ""])
    origin = {rel: sources[si].group for si, _, rel in items}
    origin.update({p["copy"]: origin[p["base"]] for p in pairs})
    truth = {"key": key, "files": len(rows), "pairs": pairs, "origin": origin}
    truth_path.write_text(json.dumps(truth))
    return truth


# ---------------------------------------------------------------------------------------------
# Running the audit in a child process and measuring it
# ---------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: dict[int, list[int]] = defaultdict(list)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids[ppid].append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _pss_kb(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


@dataclass
class Run:
    """One audit run: wall seconds, peak memory, exit status and its summary."""

    wall_s: float
    peak_pss_mb: float
    maxrss_mb: float
    rc: int
    summary: dict
    cpu_s: float = 0.0


def measured(cmd: list[str], log: Path) -> tuple[float, float, float, int, float]:
    """Run ``cmd``: wall seconds, peak summed PSS (MB) of its process tree, largest ru_maxrss (MB),
    exit code, and CPU seconds (user + system, its scan workers included)."""
    peak = 0
    with open(log, "a") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _pss_kb(_children(proc.pid)))
            time.sleep(0.2)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime  # wait4 counts the child and every descendant it reaped
    return wall, peak / 1024, usage.ru_maxrss / 1024, proc.returncode, cpu


def audit_child(root: Path, out: Path, workers: int, extra: list[str], log: Path) -> Run:
    """``python -m birdvision.audit`` in its own process; memory sampled over its process tree."""
    cmd = [
        sys.executable, "-m", "birdvision.audit", "check=birds525", f"data.root={root}",
        f"output_dir={out}", f"scan.workers={workers}", "scan.progress=false", *extra,
    ]
    wall, peak, maxrss, rc, cpu = measured(cmd, log)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    return Run(wall, peak, maxrss, rc, summary, cpu)


def search_only(n: int, dim: int, threshold: float) -> None:
    """(Child process) time the duplicate stage alone on ``n`` random unit descriptors; print JSON."""
    from birdvision.checks.duplicates import find_duplicates

    rng = np.random.default_rng(0)
    desc = rng.standard_normal((n, dim), dtype=np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    paths = [f"/x/{i:06d}.jpg" for i in range(n)]
    keys = [f"{i:x}" for i in range(n)]
    t0 = time.perf_counter()
    find_duplicates(paths, keys, keys, desc, threshold)
    print(json.dumps({"n": n, "search_s": time.perf_counter() - t0}))


def score(truth: dict, out: Path, data: Path) -> dict:
    """Recall on the planted pairs and the other linked pairs, from findings.csv and manifest.csv."""
    from birdvision.checks.findings import read_findings

    root = str(data.resolve()) + "/"

    def rel(p: str) -> str:
        return p[len(root):] if p.startswith(root) else p

    linked = set()
    for f in read_findings(out / "findings.csv"):
        if f["issue"] in ("exact_duplicates", "near_duplicates") and f["related_path"]:
            linked.add(frozenset((rel(f["path"]), rel(f["related_path"]))))
    with open(out / "manifest.csv", newline="", encoding="utf-8") as f:
        group = {rel(r["path"]): r["group"] for r in csv.DictReader(f)}
    planted = {frozenset((p["base"], p["copy"])): p for p in truth["pairs"]}
    found = [k for k in planted if k in linked]
    missed_by_kind: dict[str, int] = defaultdict(int)
    for k, p in planted.items():
        if k not in linked:
            missed_by_kind[p["kind"]] += 1
    same_group = sum(1 for p in truth["pairs"] if group.get(p["base"]) == group.get(p["copy"]))
    origin = truth["origin"]
    related = fp = 0
    for pair in linked - set(planted):
        a, b = tuple(pair)
        if origin.get(a) == origin.get(b):
            related += 1
        else:
            fp += 1
    return {
        "planted": len(planted),
        "recall": len(found) / max(1, len(planted)),
        "group_recall": same_group / max(1, len(planted)),
        "missed_by_kind": dict(missed_by_kind),
        "related": related,
        "false_positives": fp,
    }


# ---------------------------------------------------------------------------------------------
# Stages, fits and the table
# ---------------------------------------------------------------------------------------------

# Stage -> how its time grows with N. The duplicate search is all pairs (N^2) with a linear
# part (stacking descriptors, clustering); everything else visits each file a fixed number of times.
STAGES = {
    "startup": "const",  # interpreter and imports: wall time minus the audit's own total
    "inventory": "linear",
    "scan": "linear",
    "dup_search": "quadratic",
    "checks": "linear",  # policy, findings, split (checks_s minus dup_search)
    "write": "linear",  # manifest, findings, report, summary
}


def stage_times(run: Run) -> dict[str, float]:
    """Seconds per stage of one run, from its summary's timings."""
    t = run.summary.get("timings_s", {})
    search = t.get("duplicate_search_s", t.get("duplicates_s", 0.0))
    return {
        "startup": max(0.0, run.wall_s - t.get("total_s", run.wall_s)),
        "inventory": t.get("inventory_s", 0.0),
        "scan": t.get("scan_s", 0.0),
        "dup_search": search,
        "checks": max(0.0, t.get("checks_s", 0.0) - search),
        "write": t.get("write_s", 0.0),
    }


def fit(ns: list[int], ys: list[float], model: str) -> tuple[list[float], str]:
    """Least-squares coefficients of ``model`` through (N, y) and the formula in words."""
    n = np.asarray(ns, dtype=float)
    y = np.asarray(ys, dtype=float)
    if model == "const":
        c = [float(y.mean())]
        return c, f"{c[0]:.3g}"
    cols = {"linear": [np.ones_like(n), n], "quadratic": [n, n**2], "nlogn": [n, n * np.log(n)]}[model]
    a = np.stack(cols, axis=1)
    c, *_ = np.linalg.lstsq(a, y, rcond=None)
    c = [float(v) for v in c]
    names = {"linear": ["", "N"], "quadratic": ["N", "N^2"], "nlogn": ["N", "N ln N"]}[model]
    return c, " + ".join(f"{v:.3g}" + (f"*{nm}" if nm else "") for v, nm in zip(c, names, strict=True))


def predict(c: list[float], model: str, n: float) -> float:
    """The fitted value at ``n``."""
    if model == "const":
        return c[0]
    cols = {"linear": [1.0, n], "quadratic": [n, n * n], "nlogn": [n, n * math.log(n)]}[model]
    return float(sum(a * b for a, b in zip(c, cols, strict=True)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    ap.add_argument("--target", type=int, default=90000, help="extrapolate to this many files")
    ap.add_argument("--photos", default=str(DEFAULT_PHOTOS), help="the real photos (BIRDS-525 layout)")
    ap.add_argument("--work", default=str(DEFAULT_WORK), help="grown sets and audit outputs go here")
    ap.add_argument("--workers", type=int, default=0, help="audit scan.workers (0 = all cores)")
    ap.add_argument("--gen-workers", type=int, default=2, help="processes growing the photo sets")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra audit override")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generate-only", action="store_true", help="grow the sets, audit nothing")
    ap.add_argument("--json", help="also write the measurements here")
    ap.add_argument("--no-search-at-target", action="store_true",
                    help="skip timing the duplicate search alone at --target on random descriptors")
    ap.add_argument("--search-only", type=int, help=argparse.SUPPRESS)  # the child of the above
    args = ap.parse_args()
    if args.search_only:
        return search_only(args.search_only, 768, 0.90)
    photos, work = Path(args.photos), Path(args.work)
    if not photos.is_dir():
        raise SystemExit(f"error: {photos} not found (the real photos live in ../shared/realdata/photos)")
    work.mkdir(parents=True, exist_ok=True)
    sources = real_photos(photos)
    groups = len({s.group for s in sources})
    print(f"{len(sources)} real photos ({groups} source groups) under {photos}", flush=True)
    truths = {n: grow_photo_set(sources, n, work / str(n), args.seed, args.gen_workers) for n in args.sizes}
    if args.generate_only:
        return

    rows = []
    for n in args.sizes:
        data, out = work / str(n) / "data", work / str(n) / "audit"
        if out.exists():
            shutil.rmtree(out)
        log = work / str(n) / "audit.log"
        log.unlink(missing_ok=True)
        cold = audit_child(data, out, args.workers, args.set, log)
        warm = audit_child(data, out, args.workers, args.set, log)
        if cold.rc not in (0, 1) or warm.rc not in (0, 1):
            raise SystemExit(f"error: audit of {data} exited {cold.rc}/{warm.rc}; see {log}")
        s = score(truths[n], out, data)
        rows.append({"n": truths[n]["files"], "cold": cold, "warm": warm, "score": s,
                     "stages": stage_times(cold), "warm_stages": stage_times(warm)})
        r = rows[-1]
        print(f"N={r['n']}: cold {cold.wall_s:.1f} s, warm {warm.wall_s:.1f} s, peak {cold.peak_pss_mb:.0f} MB, "
              f"recall {s['recall']:.3f}", flush=True)
    direct = None
    if not args.no_search_at_target:
        log = work / "search.log"
        log.unlink(missing_ok=True)
        wall, peak, _, rc, _ = measured([sys.executable, __file__, "--search-only", str(args.target)], log)
        if rc == 0:
            direct = {**json.loads(log.read_text().strip().splitlines()[-1]), "peak_pss_mb": peak}
    report(rows, args.target, direct)
    if args.json:
        Path(args.json).write_text(json.dumps([
            {**{k: v for k, v in r.items() if k not in ("cold", "warm")},
             "cold": {**r["cold"].__dict__, "summary": None}, "warm": {**r["warm"].__dict__, "summary": None},
             "cold_timings": r["cold"].summary.get("timings_s"), "warm_timings": r["warm"].summary.get("timings_s")}
            for r in rows
        ], indent=1))


def report(rows: list[dict], target: int, direct: dict | None = None) -> None:
    """The measured table, the per-stage fits and the extrapolation to ``target`` files."""
    cores = len(os.sched_getaffinity(0))
    print()
    print("|      N | files/s | cold s | warm s | cold CPU s | peak MB (PSS cold / warm) | max RSS MB | recall "
          "| group recall | related | false pos | " + " | ".join(f"{s} s" for s in STAGES) + " |")
    print("|" + "---|" * (11 + len(STAGES)))
    for r in rows:
        c, w, s = r["cold"], r["warm"], r["score"]
        print(f"| {r['n']:6d} | {r['n'] / c.wall_s:7.1f} | {c.wall_s:6.1f} | {w.wall_s:6.1f} | {c.cpu_s:6.1f} "
              f"| {c.peak_pss_mb:5.0f} / {w.peak_pss_mb:.0f} | {max(c.maxrss_mb, w.maxrss_mb):6.0f} "
              f"| {s['recall']:.3f} | {s['group_recall']:.3f} | {s['related']} | {s['false_positives']} | "
              + " | ".join(f"{r['stages'][k]:.2f}" for k in STAGES) + " |")
    misses = {r["n"]: r["score"]["missed_by_kind"] for r in rows if r["score"]["missed_by_kind"]}
    if misses:
        print(f"missed planted pairs by kind: {misses}")
    share = [r["cold"].cpu_s / (cores * r["cold"].wall_s) for r in rows]
    print(f"CPU share of the {cores} cores the cold audits used: " + ", ".join(f"{x:.0%}" for x in share)
          + " (well under 100% means other processes were competing)")
    if len(rows) < 2:
        return
    ns = [r["n"] for r in rows]
    print(f"\nextrapolation to N={target} (least squares over N={ns}):")
    total = 0.0
    for stage, model in STAGES.items():
        c, formula = fit(ns, [r["stages"][stage] for r in rows], model)
        y = predict(c, model, target)
        note = ""
        if stage == "dup_search" and direct and direct["n"] == target and direct["search_s"] > y:
            y, note = direct["search_s"], f"  (measured alone at N={target}: {direct['search_s']:.1f} s, used instead)"
        total += y
        print(f"  {stage:10s} {model:9s} t = {formula:40s} -> {y:7.1f} s{note}")
    print(f"  cold audit total  {total:7.1f} s = {total / 60:.1f} min   (target <= 15 min)")
    if direct:
        print(f"  duplicate search alone at N={direct['n']} on random 768-d descriptors: {direct['search_s']:.1f} s, "
              f"peak {direct['peak_pss_mb']:.0f} MB (PSS, whole process)")
    warm = sum(predict(fit(ns, [r["warm_stages"][k] for r in rows], m)[0], m, target) for k, m in STAGES.items())
    print(f"  warm re-audit     {warm:7.1f} s (same stage models over the warm runs)")
    mc, mf = fit(ns, [max(r["cold"].peak_pss_mb, r["warm"].peak_pss_mb) for r in rows], "linear")
    mem = predict(mc, "linear", target)
    if direct:
        mem = max(mem, direct["peak_pss_mb"])
    print(f"  peak memory (PSS) m = {mf} MB -> {mem:.0f} MB   (target <= 4096 MB)")
    print(f"  recall at every size >= 0.95: {all(r['score']['recall'] >= 0.95 for r in rows)}")


if __name__ == "__main__":
    main()
