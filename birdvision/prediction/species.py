"""Species lists: restrict a model's answers to the species that can occur where and when it listens.

A list is a text file with one species per line; blank lines and ``#`` comments (whole lines or
the rest of a line) are ignored. Names match the model's classes ignoring case, runs of
whitespace, and ``_`` or ``-`` against a space, so ``Black-capped Chickadee`` finds the class
``black_capped_chickadee``. A name that matches no class is an error naming the closest class
(a typo must not silently drop a species from the list); so is a list that names nothing.

Restricting is a prior that gives every species off the list probability 0. By default the
probabilities are renormalised over the list (``p_c / sum of p_j over listed j``, which is
exactly the softmax of the listed classes' logits, temperature included), so the rows keep
meaning "probability, given that it is one of these". ``renormalise=False`` keeps the model's
own probabilities for the listed species instead: what the model gave to species off the list
is then missing from the row, and a low confidence says "probably something not on the list".

Numpy and difflib only (plus :class:`~birdvision.prediction.PredictError`), so an app can reuse it.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from birdvision.prediction import PredictError

_SEPARATORS = re.compile(r"[\s_\-]+")


class SpeciesListError(PredictError):
    """A species list that cannot be used: unreadable, empty, or naming a species the model does not know."""


def normalise_name(name: str) -> str:
    """The form names are compared in: case-folded, ``_`` / ``-`` / whitespace runs as one space, trimmed."""
    return _SEPARATORS.sub(" ", name).strip().casefold()


def parse_species_text(text: str) -> list[tuple[int, str]]:
    """``(line number, name)`` for every name in a species list's text (comments and blank lines dropped)."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if name:
            out.append((i, name))
    return out


def read_species_file(path: str | os.PathLike) -> list[tuple[int, str]]:
    """The names in a species list file, with their line numbers; one :class:`SpeciesListError` if unreadable."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8-sig")  # a BOM from a Windows editor is not part of the first name
    except FileNotFoundError:
        raise SpeciesListError(f"species list {p}: no such file") from None
    except IsADirectoryError:
        raise SpeciesListError(f"species list {p} is a folder; give a text file with one species per line") from None
    except UnicodeDecodeError as e:
        raise SpeciesListError(f"species list {p}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise SpeciesListError(f"species list {p}: cannot be read ({e.strerror or e})") from None
    return parse_species_text(text)


def species_mask(names: Sequence[tuple[int | None, str]] | Sequence[str], classes: Sequence[str], *,
                 where: str = "species list") -> np.ndarray:
    """Boolean mask ``[len(classes)]`` of the listed species; ``names`` are strings or ``(line, name)`` pairs.

    Raises :class:`SpeciesListError` for a name matching no class (naming the closest one), a name
    matching two classes that differ only in case or separators, and a list with no names.
    """
    by_key: dict[str, list[int]] = {}
    for i, c in enumerate(classes):
        by_key.setdefault(normalise_name(c), []).append(i)
    items = [(None, n) if isinstance(n, str) else n for n in names]
    if not items:
        raise SpeciesListError(f"{where} names no species (only blank lines and # comments)")
    mask = np.zeros(len(classes), bool)
    unknown: list[tuple[int | None, str]] = []
    for line, name in items:
        hits = by_key.get(normalise_name(name), [])
        if len(hits) > 1:
            raise SpeciesListError(f"{_at(where, line)}: {name!r} matches {len(hits)} classes of the model "
                                   f"({', '.join(repr(classes[i]) for i in hits)}), which differ only in case or "
                                   "separators; it cannot tell them apart")
        if not hits:
            unknown.append((line, name))
            continue
        mask[hits[0]] = True
    if unknown:
        line, name = unknown[0]
        more = f" (and {len(unknown) - 1} more unknown name(s))" if len(unknown) > 1 else ""
        raise SpeciesListError(f"{_at(where, line)}: {name!r} is not one of the model's {len(classes)} species; "
                               f"closest: {closest_class(name, classes)!r}{more}")
    return mask


def _at(where: str, line: int | None) -> str:
    return where if line is None else f"{where}, line {line}"


def closest_class(name: str, classes: Sequence[str]) -> str:
    """The class whose name is most like ``name`` (compared in :func:`normalise_name` form)."""
    keys = {normalise_name(c): c for c in classes}
    best = difflib.get_close_matches(normalise_name(name), list(keys), n=1, cutoff=0.0)
    return keys[best[0]] if best else classes[0]


def load_species_list(source: str | os.PathLike | Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Mask of the listed species from a species list file (a path) or a sequence of names."""
    if isinstance(source, (str, os.PathLike)):
        return species_mask(read_species_file(source), classes, where=f"species list {Path(source).expanduser()}")
    names = list(source)
    if not all(isinstance(n, str) for n in names):
        raise SpeciesListError("species= takes a path to a species list or a list of species names (strings)")
    return species_mask(names, classes, where="species=")


def restrict(probs: np.ndarray, mask: np.ndarray, renormalise: bool = True) -> np.ndarray:
    """Probabilities ``[B, K]`` with the species off the list set to 0 (a new float32 array).

    ``renormalise``: divide by the listed species' total, so each row sums to 1 over the list.
    A row whose listed probabilities are all 0 (float32 underflow: the model is certain of a species
    off the list) becomes uniform over the list: the model says nothing about the listed species.
    """
    p = np.asarray(probs, np.float32)
    mask = np.asarray(mask, bool)
    if p.ndim != 2 or mask.shape != (p.shape[1],):
        raise ValueError(f"probabilities [B, K] and a mask [K] expected, got {p.shape} and {mask.shape}")
    out = np.where(mask, p, np.float32(0))
    if renormalise and len(out):
        total = out.sum(axis=1, keepdims=True, dtype=np.float64)
        flat = (total[:, 0] <= 0) | ~np.isfinite(total[:, 0])
        total[flat] = 1.0
        out = (out / total).astype(np.float32)
        out[flat] = np.where(mask, np.float32(1.0 / max(1, int(mask.sum()))), np.float32(0))
    return out


def listed(probs: np.ndarray, classes: Sequence[str], mask: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """The listed species' columns of ``probs`` and their names (model order): what rows are ranked over."""
    if mask is None:
        return probs, list(classes)
    idx = np.flatnonzero(mask)
    return probs[:, idx], [classes[i] for i in idx]
