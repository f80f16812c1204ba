"""cleanvision's image-property issues (blurry, dark, light, ...), scored over the whole data set.

Per-file raw values come from the scan (cleanvision's own property classes, cached);
the scoring runs here through cleanvision's ``ImagePropertyIssueManager`` so thresholds,
score definitions and set-level statistics (``odd_size`` uses the inter-quartile range of
all images) are exactly cleanvision's. All splits are scored together.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from birdvision.checks.policy import CLEANVISION_PROPERTY_ISSUES, ThresholdsConfig


def cleanvision_params(t: ThresholdsConfig) -> dict[str, dict[str, Any]]:
    """The policy's thresholds in cleanvision's parameter layout."""
    return {
        "dark": {"threshold": t.dark},
        "light": {"threshold": t.light},
        "odd_aspect_ratio": {"threshold": t.odd_aspect_ratio},
        "low_information": {"threshold": t.low_information},
        "blurry": {"threshold": t.blurry},
        "grayscale": {},
        "odd_size": {"iqr_factor": t.odd_size_iqr_factor},
    }


def score_properties(raw: dict[str, dict[str, Any]], thresholds: ThresholdsConfig) -> pd.DataFrame:
    """cleanvision's ``<issue>_score`` and ``is_<issue>_issue`` columns for every path in ``raw``."""
    from cleanvision.issue_managers.image_property_issue_manager import ImagePropertyIssueManager

    if not raw:
        return pd.DataFrame()
    agg = pd.DataFrame.from_dict(raw, orient="index")
    manager = ImagePropertyIssueManager()
    manager.update_params(cleanvision_params(thresholds))
    manager.issue_types = list(CLEANVISION_PROPERTY_ISSUES)
    manager.issues = pd.DataFrame(index=agg.index)
    # cleanvision scores in reverse-sorted order (its dependency order); keep it.
    manager.update_issues(agg, sorted(CLEANVISION_PROPERTY_ISSUES, reverse=True))
    return manager.issues


def property_findings(scores: pd.DataFrame) -> list[tuple[str, str, float]]:
    """``(path, issue, score)`` for every image cleanvision marks, lower scores being worse."""
    out = []
    if scores.empty:
        return out
    for issue in CLEANVISION_PROPERTY_ISSUES:
        flagged = scores.index[scores[f"is_{issue}_issue"].astype(bool)]
        col = scores[f"{issue}_score"]
        out += [(str(p), issue, float(col.loc[p])) for p in flagged]
    return out
