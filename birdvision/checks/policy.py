"""The audit policy: what to check, thresholds, what to do per issue type, and human decisions.

A policy is data (``data_checks/NAME.yaml``), reviewed like code. Each issue type has one
action: ``drop`` (the file leaves the training set), ``flag`` (kept, marked for review),
``keep`` (kept, only reported) or ``fail`` (the audit exits non-zero while such a finding
remains). Human decisions override the automatic actions for single files: drop X,
relabel Y as Z, keep W, each with a reason that lands in the report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from birdvision.data.photos.decode import MAX_PIXELS

ACTIONS = ("drop", "flag", "keep", "fail")
DECISION_ACTIONS = ("drop", "relabel", "keep")

# cleanvision's issue types, in its own names.
CLEANVISION_DUPLICATE_ISSUES = ("exact_duplicates", "near_duplicates")
CLEANVISION_PROPERTY_ISSUES = (
    "blurry",
    "dark",
    "light",
    "low_information",
    "grayscale",
    "odd_aspect_ratio",
    "odd_size",
)
CLEANVISION_ISSUES = CLEANVISION_DUPLICATE_ISSUES + CLEANVISION_PROPERTY_ISSUES
# The audit's own issue types.
LEAKAGE_ISSUES = ("cross_split_duplicate", "cross_label_duplicate")
FILE_ISSUES = ("unreadable", "missing_file", "outside_root", "unlisted", "stray_file")
CLASS_ISSUES = ("class_missing_from_split", "class_below_min_count")
ISSUES = FILE_ISSUES + LEAKAGE_ISSUES + CLEANVISION_ISSUES + CLASS_ISSUES


class AuditError(ValueError):
    """A user error: bad data folder, bad policy value, a decision about a file that is not there."""


@dataclass
class AuditDataConfig:
    """What to audit and how splits are made when the data has none."""

    root: Optional[str] = None  # noqa: UP045 - BIRDS-525 folder (birds.csv), split folders, or one class-folder tree
    split: str = "auto"  # auto: keep the data's own splits, make grouped ones if it has none | regroup
    valid_fraction: float = 0.15  # share of each class's groups dealt to valid when splits are made here
    test_fraction: float = 0.15  # share dealt to test when splits are made here
    seed: int = 0  # seed of the grouped split (same data + seed = same split)
    allow_outside_root: bool = False  # birds.csv rows resolving outside root are outside_root findings, never read


@dataclass
class ScanConfig:
    """Per-file work: parallelism and the content-hash cache."""

    workers: int = 0  # 0 = all cores
    cache_dir: Optional[str] = None  # noqa: UP045 - None = OUTPUT_DIR/.cache; share one with e.g. ~/.cache/birdvision/audit
    trust_mtime: bool = True  # skip re-hashing files whose size and mtime are unchanged
    progress: bool = True  # a rich progress bar while files are scanned


@dataclass
class ActionsConfig:
    """One action per issue type: drop | flag | keep | fail."""

    unreadable: str = "drop"  # a file no decoder opens (truncated, empty, not an image)
    missing_file: str = "flag"  # birds.csv lists a file that is not on disk
    outside_root: str = "drop"  # a listed file that resolves outside data.root (never read)
    unlisted: str = "flag"  # an image on disk that birds.csv does not list
    stray_file: str = "drop"  # a file outside any species folder (no label)
    cross_split_duplicate: str = "drop"  # one photo in two splits: a leak that inflates test scores
    cross_label_duplicate: str = "flag"  # one photo under two species: a labelling error to review
    exact_duplicates: str = "keep"  # byte-identical copies within one split and species
    near_duplicates: str = "keep"  # the same photo re-encoded or resized, within one split and species
    blurry: str = "flag"  # cleanvision's blurry score below thresholds.blurry
    dark: str = "flag"  # cleanvision's dark score below thresholds.dark
    light: str = "flag"  # cleanvision's light score below thresholds.light
    low_information: str = "flag"  # cleanvision's low-information score below thresholds.low_information
    grayscale: str = "flag"  # a photo with no colour (birds' colours are features)
    odd_aspect_ratio: str = "flag"  # aspect ratio beyond thresholds.odd_aspect_ratio
    odd_size: str = "flag"  # size outside thresholds.odd_size_iqr_factor IQRs of the data set's sizes
    class_missing_from_split: str = "flag"  # a species with no photo in valid or test (its metrics are undefined)
    class_below_min_count: str = "flag"  # a species with fewer photos in a split than thresholds.min_*_per_class


@dataclass
class ThresholdsConfig:
    """Thresholds; the cleanvision ones default to cleanvision's own."""

    dark: float = 0.32  # cleanvision default
    light: float = 0.05  # cleanvision default
    odd_aspect_ratio: float = 0.35  # cleanvision default
    low_information: float = 0.3  # cleanvision default
    blurry: float = 0.29  # cleanvision default
    odd_size_iqr_factor: float = 3.0  # cleanvision default
    phash_size: int = 8  # cleanvision's near_duplicates hash size
    near_duplicate_cosine: float = 0.90  # thumbnail-descriptor cosine similarity counted as the same photo
    descriptor_px: int = 16  # side of the colour thumbnail behind the descriptor
    max_pixels: int = MAX_PIXELS  # declared width*height above this is a decompression bomb
    min_train_per_class: int = 10  # fewer training photos than this is class_below_min_count
    min_valid_per_class: int = 1  # fewer valid photos than this is class_below_min_count
    min_test_per_class: int = 1  # fewer test photos than this is class_below_min_count


@dataclass
class ReportConfig:
    """How much the HTML report shows."""

    max_thumbnails: int = 48  # per issue type
    thumbnail_px: int = 96  # thumbnail side in the report


@dataclass
class AuditConfig:
    """Everything ``python -m birdvision.audit`` reads."""

    check: str = "default"  # data_checks/NAME.yaml (or a YAML file): the policy for this data set
    output_dir: str = "audit"  # manifest.csv, findings.csv, summary.json, report.html go here
    data: AuditDataConfig = field(default_factory=AuditDataConfig)  # what to audit
    scan: ScanConfig = field(default_factory=ScanConfig)  # how files are read
    actions: ActionsConfig = field(default_factory=ActionsConfig)  # what each finding does to a file's manifest status
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)  # when a score is a finding
    report: ReportConfig = field(default_factory=ReportConfig)  # report.html
    # Human decisions, one per file:
    # {path: RELATIVE/TO/ROOT.jpg, action: drop|relabel|keep, label: NEW (relabel only), reason: WHY}
    decisions: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    """A reviewed, human decision about one file."""

    path: str  # as written in the policy, relative to data.root
    action: str
    reason: str
    label: str = ""


@dataclass
class Policy:
    """The validated policy the audit applies."""

    actions: dict[str, str]
    thresholds: ThresholdsConfig
    decisions: list[Decision]

    def action(self, issue: str) -> str:
        """The policy's action for an issue type."""
        return self.actions[issue]

    def min_count(self, split: str) -> int:
        """The minimum number of usable images a class needs in ``split``."""
        t = self.thresholds
        return {
            "train": t.min_train_per_class,
            "valid": t.min_valid_per_class,
            "test": t.min_test_per_class,
        }.get(split, t.min_train_per_class)


def _plain(obj: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return obj


def parse_decisions(raw: Any) -> list[Decision]:
    """Validate the ``decisions`` list; every entry needs a path, a known action and a reason."""
    raw = _plain(raw) or []
    if not isinstance(raw, list):
        raise AuditError("decisions must be a list of {path, action, reason[, label]} entries")
    out, seen = [], set()
    allowed = {"path", "action", "reason", "label"}
    for i, d in enumerate(raw):
        where = f"decisions[{i}]"
        if not isinstance(d, dict):
            raise AuditError(f"{where}: expected a mapping with path, action, reason, got {d!r}")
        extra = sorted(set(d) - allowed)
        if extra:
            raise AuditError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}")
        path, action = str(d.get("path") or "").strip(), str(d.get("action") or "").strip()
        reason, label = str(d.get("reason") or "").strip(), str(d.get("label") or "").strip()
        if not path:
            raise AuditError(f"{where}: missing 'path' (relative to data.root)")
        if action not in DECISION_ACTIONS:
            raise AuditError(f"{where} ({path}): action {action!r} is not one of {DECISION_ACTIONS}")
        if not reason:
            raise AuditError(f"{where} ({path}): every decision needs a 'reason' for the reviewers")
        if action == "relabel" and not label:
            raise AuditError(f"{where} ({path}): relabel needs the new 'label'")
        if action != "relabel" and label:
            raise AuditError(f"{where} ({path}): 'label' is only meaningful with action relabel")
        key = Path(path).as_posix()
        if key in seen:
            raise AuditError(f"{where}: a second decision about {path}; keep one per file")
        seen.add(key)
        out.append(Decision(key, action, reason, label))
    return out


def build_policy(cfg: Any) -> Policy:
    """Check the config's policy values and turn them into a :class:`Policy`."""
    actions = as_dict(cfg.actions)
    for issue, action in actions.items():
        if action not in ACTIONS:
            raise AuditError(f"actions.{issue}={action!r}: expected one of {', '.join(ACTIONS)}")
    t = ThresholdsConfig(**as_dict(cfg.thresholds))
    for name in ("dark", "light", "odd_aspect_ratio", "low_information", "blurry", "near_duplicate_cosine"):
        if not 0.0 <= getattr(t, name) <= 1.0:
            raise AuditError(f"thresholds.{name}={getattr(t, name)}: expected a value in [0, 1]")
    if t.max_pixels <= 0 or t.descriptor_px < 4 or t.phash_size < 2:
        raise AuditError("thresholds.max_pixels must be > 0, descriptor_px >= 4 and phash_size >= 2")
    return Policy(actions, t, parse_decisions(cfg.decisions))


def as_dict(obj: Any) -> dict:
    """A dataclass or OmegaConf node as a plain dict."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return dict(_plain(obj))
