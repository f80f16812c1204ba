"""Figures for evaluation and run reports, drawn with matplotlib's object API (no pyplot state).

``pyplot`` keeps global figures and picks a GUI backend; a training job on a headless
server or inside a DataLoader worker wants neither, so every figure here is a plain
:class:`~matplotlib.figure.Figure` rendered by the Agg canvas and written atomically.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from birdvision.reports.calibration import ReliabilityBins
from birdvision.runs.artifacts import atomic_path, for_people

DPI = 100


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _short(name: str, n: int = 24) -> str:
    """A name for a plot: cut to ``n`` characters, undecodable bytes as U+FFFD (the font has no glyph for
    a surrogate escape) and ``$`` escaped (a pair would start mathtext, a file name is no formula)."""
    name = for_people(name)
    name = name if len(name) <= n else name[: n - 1] + "…"
    return name.replace("$", r"\$")


# ----------------------------------------------------------------------------- confusion matrix


def confusion_figure(cm: np.ndarray, classes: list[str], title: str = "Confusion matrix") -> Figure:
    """The full matrix, rows normalised to recall, readable from 3 to 525+ classes.

    Each class gets a square of at least 3 pixels (525 classes -> ~1600 px), drawn
    without interpolation so no confusion is blurred away. Colours follow a square-root
    scale: at 525 classes most errors are a few percent of a row and would be invisible on
    a linear one. Up to 40 classes the axes carry names; beyond that they carry class
    indices, which the per-class and confused-pairs tables translate.
    """
    n = len(classes)
    support = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, support, out=np.zeros(cm.shape, dtype=np.float64), where=support > 0)
    cell_px = max(3, min(36, 1600 // max(n, 1)))
    side_in = max(5.0, n * cell_px / DPI)
    named = n <= 40
    margin = 3.2 if named else 1.2
    fig = Figure(figsize=(side_in + margin + 1.2, side_in + margin))
    ax = fig.add_subplot()
    masked = np.ma.masked_where(cm == 0, frac)
    im = ax.imshow(masked, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest",
                   aspect="equal")
    ax.set_facecolor("white")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="fraction of the true class (square-root scale)")
    if named:
        ax.set_xticks(range(n), [_short(c) for c in classes], rotation=90, fontsize=8)
        ax.set_yticks(range(n), [_short(c) for c in classes], fontsize=8)
        if n <= 20:
            for (t, p), v in np.ndenumerate(cm):
                if v:
                    ax.text(p, t, str(v), ha="center", va="center", fontsize=7,
                            color="black" if frac[t, p] > 0.5 else "white")
    else:
        step = 10 ** max(0, int(math.log10(n)) - 1) * (5 if n > 200 else 1)
        ticks = list(range(0, n, step))
        ax.set_xticks(ticks, [str(t) for t in ticks], rotation=90, fontsize=8)
        ax.set_yticks(ticks, [str(t) for t in ticks], fontsize=8)
        title += " (axes: class index, see per_class.csv)"
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


# ----------------------------------------------------------------------------- reliability


def _reliability_axes(ax, bins: ReliabilityBins, label: str) -> None:
    width = bins.edges[1] - bins.edges[0]
    centers = bins.edges[:-1] + width / 2
    used = bins.count > 0
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.bar(centers[used], bins.accuracy[used], width=width * 0.95, color="#4c72b0", edgecolor="black", lw=0.5,
           label="accuracy")
    gap_lo = np.minimum(bins.accuracy[used], bins.confidence[used])
    gap = np.abs(bins.accuracy[used] - bins.confidence[used])
    ax.bar(centers[used], gap, bottom=gap_lo, width=width * 0.95, color="none", hatch="///",
           edgecolor="#c44e52", lw=0.8, label="gap to mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{label}\nECE {bins.ece * 100:.2f} %")
    ax.legend(loc="upper left", fontsize=8)
    # Where the predictions sit matters: a low ECE over nearly empty bins means little.
    inset = ax.inset_axes([0.55, 0.06, 0.42, 0.22])
    inset.bar(centers, bins.count, width=width, color="#888888")
    inset.set_xlim(0, 1)
    inset.set_xticks([])
    inset.set_yticks([])
    inset.set_title("samples per bin", fontsize=7)


def reliability_figure(before: ReliabilityBins, after: ReliabilityBins | None, temperature: float | None) -> Figure:
    """Reliability diagrams before and (when fitted) after temperature scaling, side by side."""
    panels = 2 if after is not None else 1
    fig = Figure(figsize=(5.2 * panels, 5.4))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    _reliability_axes(axes[0], before, "raw logits (T = 1)")
    if after is not None:
        _reliability_axes(axes[1], after, f"temperature scaled (T = {temperature:.3f})")
    return fig


# ----------------------------------------------------------------------------- top losses


def top_losses_figure(images: list[np.ndarray], captions: list[str], *, spectrogram: bool, ncols: int = 4) -> Figure:
    """A grid of the worst predictions: photos as RGB (H, W, 3) in [0, 1], spectrograms as (H, W)."""
    n = max(1, len(images))
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    cell_w, cell_h = (3.4, 3.2) if not spectrogram else (4.2, 2.9)
    fig = Figure(figsize=(cell_w * ncols, cell_h * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= len(images):
            ax.axis("off")
            continue
        img = images[k]
        if spectrogram:
            ax.imshow(img, origin="lower", aspect="auto", cmap="magma", interpolation="nearest")
        else:
            ax.imshow(np.clip(img, 0, 1), interpolation="bilinear")
        ax.set_title(captions[k], fontsize=8, loc="left")
    if not images:
        axes.flat[0].text(0.5, 0.5, "no errors to show", ha="center", va="center")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- learning curves


def read_metrics_csv(path: str | Path) -> dict[str, dict[int, float]]:
    """Lightning CSVLogger output as ``column -> {epoch: last value logged in that epoch}``.

    The logger writes train and validation values of one epoch on separate rows (and lr
    on rows without an epoch), so rows are merged by epoch rather than read one by one.
    """
    out: dict[str, dict[int, float]] = {}
    last_epoch = -1
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            ep = (row.get("epoch") or "").strip()
            try:
                # Rows without an epoch come from the lr monitor at the start of the next epoch.
                epoch = last_epoch + 1 if ep == "" else int(float(ep))
            except ValueError:
                continue
            if ep != "":
                last_epoch = max(last_epoch, epoch)
            for k, v in row.items():
                if k in ("epoch", "step") or v in ("", None):
                    continue
                try:
                    out.setdefault(k, {})[epoch] = float(v)
                except ValueError:
                    continue
    return out


def learning_curves_figure(series: dict[str, dict[int, float]]) -> Figure | None:
    """Loss and accuracy per epoch for train and validation (and the learning rate); None if nothing was logged."""
    panels = [
        ("loss", ["train/loss", "val/loss"]),
        ("top-1 accuracy", ["train/acc", "val/acc"]),
        ("learning rate", sorted(k for k in series if k.startswith("lr-"))),
    ]
    panels = [(t, [k for k in keys if series.get(k)]) for t, keys in panels]
    panels = [(t, keys) for t, keys in panels if keys]
    if not panels:
        return None
    fig = Figure(figsize=(4.6 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for k in keys:
            pts = sorted(series[k].items())
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=k)
        if title == "learning rate":
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- lr finder


def lr_find_figure(lrs: list[float], losses: list[float], suggestion: float | None, skip_begin: int = 0) -> Figure:
    """Loss against learning rate (log scale) with the suggested rate marked; skipped warm-up points in grey."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    if skip_begin:
        ax.plot(lrs[: skip_begin + 1], losses[: skip_begin + 1], lw=1, color="#bbbbbb", label="not considered")
    ax.plot(lrs[skip_begin:], losses[skip_begin:], lw=1.5, color="#4c72b0")
    if suggestion is not None and lrs:
        i = int(np.argmin(np.abs(np.asarray(lrs) - suggestion)))
        ax.plot([lrs[i]], [losses[i]], "o", color="red", ms=8, label=f"suggestion {suggestion:.2e}")
        ax.legend()
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("learning-rate range test")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
