"""The samples an evaluation runs on: the run's own manifest (checked against the checkpoint's digest) or
data given, a class map for data named differently, and the labels checked against the model's classes."""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
from pathlib import Path

from birdvision.data.manifest import SPLITS, Sample, manifest_digest
from birdvision.data.sources import discover, from_manifest
from birdvision.data.splits import assign_splits
from birdvision.evaluation import EvaluationError
from birdvision.runs.folders import run_dir_of

log = logging.getLogger("birdvision.evaluate")


# ----------------------------------------------------------------------------- where things are


def default_output_dir(ckpt: Path, split: str) -> Path:
    """``RUN/eval`` for the test split, ``RUN/eval-SPLIT`` otherwise, so a valid run never overwrites the test one."""
    run = run_dir_of(ckpt)
    name = "eval" if split == "test" else f"eval-{split}"
    return (run / name) if run is not None else Path(name)


def _run_seed(run: Path | None) -> int:
    try:
        import yaml

        return int((yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}).get("seed", 42))  # type: ignore[operator]
    except Exception as e:  # no run folder, no config, or no seed: the fit default
        if run is not None and (run / "config.yaml").is_file():
            log.warning("%s is unreadable (%s); splits the manifest leaves open use seed 42",
                        run / "config.yaml", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return 42


def load_samples(ckpt: Path, data: str | None, digest: str | None = None) -> tuple[list[Sample], str]:
    """Active samples with their splits, and where they came from (for the report).

    Without ``data`` the run's own ``manifest.csv`` is read, and it must still be the one the
    checkpoint was trained on (``digest``, the checkpoint's ``manifest_digest``): a truncated or
    edited manifest could put training samples in the test split without a word.
    """
    run = run_dir_of(ckpt)
    own = data is None
    if data is None:
        if run is None or not (run / "manifest.csv").is_file():
            raise EvaluationError(
                f"{ckpt} is not inside a run folder with a manifest.csv; pass data=MANIFEST.csv or data=PHOTO_FOLDER"
            )
        data = str(run / "manifest.csv")
    p = Path(data).expanduser()
    seed = _run_seed(run)
    if p.is_file():
        found = from_manifest(p)
    elif p.is_dir():
        found = discover(p)
    else:
        raise EvaluationError(f"data={data}: no such manifest file or folder")
    assign_splits(found.samples, valid_fraction=0.15, test_fraction=0.15, seed=seed, where=found.origin)
    if own and digest and manifest_digest(found.samples) != digest:
        raise EvaluationError(
            f"{p} is not the manifest {ckpt.name} was trained on (its digest differs from the checkpoint's "
            f"manifest_digest {digest}): damaged or edited since training. Restore it, or pass data={p} "
            "to evaluate on it as it is"
        )
    return found.samples, found.origin


def read_class_map(path: str | Path) -> dict[str, str | None]:
    """``data label -> model label`` from JSON (an object) or a two-column CSV; an empty target drops the label."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EvaluationError(f"class_map={path}: file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EvaluationError(f"class_map={path}: not a text file (byte {e.start} is not UTF-8)") from None
    if p.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise EvaluationError(f"class_map={path}: not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise EvaluationError(f"class_map={path}: expected a JSON object {{\"data label\": \"model label\"}}")
        return {str(k): (str(v) if v not in (None, "") else None) for k, v in obj.items()}
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["data", "model"], ["from", "to"], ["data_label", "model_label"]):
        rows = rows[1:]
    bad = [i for i, r in enumerate(rows, 1) if len(r) < 1 or len(r) > 2]
    if bad:
        raise EvaluationError(f"class_map={path}: expected two columns 'data label,model label' (row {bad[0]})")
    return {r[0].strip(): (r[1].strip() or None) if len(r) == 2 else None for r in rows}


def apply_class_map(samples: list[Sample], mapping: dict[str, str | None]) -> list[Sample]:
    """Relabel samples; labels mapped to nothing are left out of the evaluation."""
    out = []
    for s in samples:
        if s.label in mapping:
            target = mapping[s.label]
            if target is None:
                continue
            s = Sample(**{**s.__dict__, "label": target})
        out.append(s)
    return out


def check_labels(samples: list[Sample], classes: list[str], source: str) -> None:
    """Refuse data whose labels the model does not know, naming them and the nearest model classes."""
    known = set(classes)
    unknown = sorted({s.label for s in samples} - known)
    if not unknown:
        return
    lower = {c.lower(): c for c in classes}
    hints = []
    for u in unknown[:5]:
        close = [lower[u.lower()]] if u.lower() in lower else difflib.get_close_matches(u, classes, n=1, cutoff=0.6)
        hints.append(f"{u!r}" + (f" (model has {close[0]!r})" if close else ""))
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    raise EvaluationError(
        f"{len(unknown)} label(s) in {source} are not among the checkpoint's {len(classes)} classes: "
        f"{', '.join(hints)}{more}. Evaluate with the data the model was trained on, or pass "
        "class_map=FILE (JSON {\"data label\": \"model label\"}, null to drop a label)"
    )


def split_samples(samples: list[Sample], split: str, source: str) -> list[Sample]:
    chosen = [s for s in samples if s.split == split and s.active]
    if not chosen:
        counts = ", ".join(f"{k}={sum(1 for s in samples if s.split == k)}" for k in SPLITS)
        raise EvaluationError(f"split {split!r} of {source} has no samples ({counts})")
    return chosen
