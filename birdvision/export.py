"""``python -m birdvision.export ckpt=PATH format=onnx|int8|fp16|ort|tensorrt|tflite|pte|tflite_int8|pte_int8|all``: ship a model.

Every exported file is checked against the checkpoint on real validation samples
(``parity*.json`` beside it); a file that fails is renamed ``*.FAILED.*`` and the
command exits 1. User mistakes (missing checkpoint, unknown format, no samples) exit 2.
"""

from __future__ import annotations

import logging
import sys

from rich.markup import escape

from birdvision.config import ConfigError, parse_cli, to_yaml
from birdvision.console import console, run_cli, setup_logging
from birdvision.data.manifest import DataSourceError, ManifestError
from birdvision.data.photos.decode import ImageLoadError
from birdvision.exporting import ExportError, ParityError
from birdvision.exporting.options import ExportConfig
from birdvision.runs.artifacts import OutputError
from birdvision.runs.checkpoint import CheckpointError
from birdvision.runs.folders import RunError

log = logging.getLogger("birdvision.export")

USER_ERRORS = (ConfigError, ExportError, CheckpointError, RunError, ManifestError, DataSourceError, ImageLoadError,
               OutputError)


def run(cfg) -> int:
    """Export and gate; 0 when every file passed, 1 when a parity gate failed."""
    from birdvision.exporting.pipeline import export_checkpoint

    setup_logging()
    console.print("[bold]birdvision export[/]\n" + to_yaml(cfg))
    try:
        res = export_checkpoint(cfg)
    except ParityError as e:
        print(f"error: parity gate failed: {e}", file=sys.stderr)  # one line, like run_cli's user errors
        return 1
    for role, path in res.files.items():
        console.print(f"  {role:10s} {escape(str(path))}")
    for note in res.notes:
        console.print(f"[yellow]note[/]: {escape(note)}")  # notes name extras like birdvision[apps]
    console.print(f"[green]export passed its parity gates[/] -> {res.output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m birdvision.export``."""

    def body() -> int:
        cfg = parse_cli(ExportConfig, argv, preset_key="preset", prog="birdvision.export",
                        description="Export a checkpoint to ONNX (INT8, FP16, ORT, TensorRT), each parity-gated.")
        return run(cfg)

    return run_cli(body, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
