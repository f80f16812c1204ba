"""Duplicate photos: cleanvision's exact and near sets, plus a robust descriptor, joined into clusters.

cleanvision finds exact duplicates (same decoded pixels) and near duplicates (equal
perceptual hash). A perceptual hash flips bits under resizing and JPEG re-compression,
so copies of one photo saved at another size can be missed; the thumbnail descriptor
(:func:`birdvision.checks.scan.descriptor`) with a cosine threshold catches those. Every
pair found by any method links two files; the connected components are the duplicate
clusters, which the manifest keeps in one ``group`` so a split never separates them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Partner:
    """The closest duplicate of a file: which file, how similar, and which method found it."""

    path: str
    similarity: float
    method: str  # exact | phash | cosine


@dataclass
class Duplicates:
    """Duplicate sets and clusters over the readable files."""

    exact_sets: list[list[str]] = field(default_factory=list)  # cleanvision exact_duplicates
    near_partner: dict[str, Partner] = field(default_factory=dict)  # near, not exact
    exact_partner: dict[str, Partner] = field(default_factory=dict)
    clusters: list[list[str]] = field(default_factory=list)  # connected components with 2+ files
    cluster_of: dict[str, int] = field(default_factory=dict)
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    _desc: np.ndarray | None = field(default=None, repr=False)

    def similarity(self, a: str, b: str) -> float:
        """Descriptor cosine similarity of two files (1.0 for identical pixels)."""
        if self._desc is None:
            return 0.0
        return float(self._desc[self._index[a]] @ self._desc[self._index[b]])


PROGRESS_PAIRS = 50_000_000


def _searched(desc: np.ndarray, threshold: float, progress: bool) -> list[tuple[int, int, float]]:
    """:func:`cosine_pairs`, with a progress bar (in millions of pairs) when the search is long."""
    from birdvision.console import progress_bar

    n = len(desc)
    total = n * (n - 1) / 2
    if not progress or total < PROGRESS_PAIRS:
        return cosine_pairs(desc, threshold)
    with progress_bar() as bar:
        task = bar.add_task("[bold]audit[/] near-duplicate search (million pairs)", total=total / 1e6)
        return cosine_pairs(desc, threshold, progress=lambda k: bar.advance(task, k / 1e6))


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


# One step holds a rows x N float32 similarity block and its rows x N mask: <= 160 MB whatever N.
BLOCK_ELEMENTS = 1 << 25


def cosine_pairs(
    desc: np.ndarray,
    threshold: float,
    block: int | None = None,
    *,
    progress: Callable[[float], None] | None = None,
) -> list[tuple[int, int, float]]:
    """All pairs ``i < j`` whose descriptors' cosine similarity reaches ``threshold``.

    Exact, in blocks of rows against the rows after them: N^2/2 dot products, ~4 s for 20k
    photos on two idle cores and ~2 min for 90k on two shared ones, a small part of decoding
    them (``benchmarks/bench_audit_scale.py``), so no approximate index is needed. ``block`` rows
    per step (default: as many as keep the block near ``BLOCK_ELEMENTS`` entries, 2048 at
    most) bounds memory; ``progress`` is told the number of pairs each step compared.
    """
    out: list[tuple[int, int, float]] = []
    n = len(desc)
    if block is None:
        block = max(64, min(2048, BLOCK_ELEMENTS // max(1, n)))
    for i0 in range(0, n, block):
        s = desc[i0 : i0 + block] @ desc[i0:].T
        rows, cols = np.nonzero(s >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i, j = i0 + r, i0 + c
            if j > i:
                out.append((i, j, float(s[r, c])))
        if progress is not None:
            k = len(s)
            progress(k * (n - i0) - k * (k + 1) / 2)  # pairs i < j with i in this block
    return out


def find_duplicates(
    paths: list[str],
    pixel_md5: list[str],
    phash: list[str],
    desc: np.ndarray,
    cosine_threshold: float,
    *,
    progress: bool = False,
) -> Duplicates:
    """Exact sets (pixel md5), near pairs (equal phash or cosine >= threshold), clusters of all.

    ``progress`` shows a bar over the descriptor search when it compares more than
    ``PROGRESS_PAIRS`` pairs (10k photos; about a second's work on two cores).
    """
    d = Duplicates(_index={p: i for i, p in enumerate(paths)}, _desc=desc)
    uf = _UnionFind(len(paths))
    by_md5: dict[str, list[int]] = defaultdict(list)
    by_phash: dict[str, list[int]] = defaultdict(list)
    for i, (m, h) in enumerate(zip(pixel_md5, phash, strict=True)):
        by_md5[m].append(i)
        by_phash[h].append(i)
    md5_of = dict(zip(paths, pixel_md5, strict=True))
    for members in by_md5.values():
        if len(members) > 1:
            d.exact_sets.append([paths[i] for i in members])
            for i in members:
                uf.union(members[0], i)
                other = members[1] if i == members[0] else members[0]
                d.exact_partner[paths[i]] = Partner(paths[other], 1.0, "exact")

    def near(i: int, j: int, sim: float, method: str) -> None:
        uf.union(i, j)
        a, b = paths[i], paths[j]
        if md5_of[a] == md5_of[b]:
            return  # an exact duplicate, reported as such
        for x, y in ((a, b), (b, a)):
            best = d.near_partner.get(x)
            if best is None or sim > best.similarity:
                d.near_partner[x] = Partner(y, sim, method)

    for members in by_phash.values():
        if len(members) > 1:
            for i in members:
                for j in members:
                    if i < j:
                        near(i, j, float(desc[i] @ desc[j]), "phash")
    for i, j, sim in _searched(desc, cosine_threshold, progress):
        near(i, j, sim, "cosine")
    comps: dict[int, list[str]] = defaultdict(list)
    for i, p in enumerate(paths):
        comps[uf.find(i)].append(p)
    for members in comps.values():
        if len(members) > 1:
            for p in members:
                d.cluster_of[p] = len(d.clusters)
            d.clusters.append(sorted(members))
    return d
