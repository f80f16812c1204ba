"""Audit a photo set before training.

``python -m birdvision.audit check=NAME data.root=PATH output_dir=PATH``

Writes ``manifest.csv`` (train with ``data.manifest=OUTPUT_DIR/manifest.csv``), ``findings.csv``,
``report.html`` and ``summary.json``. Exit status 1 when a finding whose policy action is
``fail`` remains, 2 for a user error (one line, no traceback).
"""

from __future__ import annotations

from birdvision.checks.policy import AuditConfig, AuditError
from birdvision.config import ConfigError, parse_cli
from birdvision.console import run_cli, setup_logging


def main(argv: list[str] | None = None) -> int:
    """Parse ``check=NAME key=value ...`` and run the audit."""

    def body() -> int:
        cfg = parse_cli(
            AuditConfig,
            argv,
            preset_key="check",
            preset_dir="data_checks",
            prog="birdvision.audit",
            description=__doc__.strip().splitlines()[0],
            default_preset="default",
        )
        setup_logging()
        from birdvision.checks.run import run

        return run(cfg)

    return run_cli(body, (ConfigError, AuditError))


if __name__ == "__main__":
    raise SystemExit(main())
