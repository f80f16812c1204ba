"""The data audit: cleanvision's checks plus leakage, label conflicts and broken files, as a manifest.

``python -m birdvision.audit check=NAME data.root=PATH`` is the CLI; the pieces are
:mod:`~birdvision.checks.inventory` (what files there are), :mod:`~birdvision.checks.scan`
(per-file decoding, hashing and features, cached by content), :mod:`~birdvision.checks.quality`
(cleanvision's image-property issues), :mod:`~birdvision.checks.duplicates` (exact, near and
robust duplicates, clusters), :mod:`~birdvision.checks.policy` (the policy schema and decisions),
:mod:`~birdvision.checks.run` (applying the policy, writing outputs) and
:mod:`~birdvision.checks.report` (the HTML report).
"""

from birdvision.checks.policy import AuditConfig, AuditError
from birdvision.checks.run import audit, run

__all__ = ["AuditConfig", "AuditError", "audit", "run"]
