"""``python -m birdvision.evaluate ckpt=PATH split=test``: honest metrics, plots and calibration for a checkpoint.

The model runs once over the evaluated split (and once over the validation split to fit
the softmax temperature and choose the decision thresholds, and for photo models over generated
non-bird images to choose the abstention threshold); everything else is computed from those
logits by :mod:`birdvision.reports`. By default the samples come from the run's own
``manifest.csv``, so the test split is exactly the one training never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from birdvision.config import ConfigError, ThresholdConfig, parse_cli
from birdvision.console import console, run_cli, setup_logging
from birdvision.data.manifest import DataSourceError, ManifestError
from birdvision.data.photos.decode import ImageLoadError
from birdvision.evaluation import EvaluationError
from birdvision.evaluation.evaluator import evaluate_checkpoint
from birdvision.evaluation.samples import default_output_dir
from birdvision.reports.metrics import metric_key
from birdvision.runs.artifacts import OutputError, check_output_file
from birdvision.runs.folders import RunError, find_checkpoint, run_dir_of

USER_ERRORS = (ConfigError, RunError, DataSourceError, ManifestError, EvaluationError, OutputError, ImageLoadError)



@dataclass
class EvaluateConfig:
    """Everything ``python -m birdvision.evaluate`` reads."""

    ckpt: str | None = None  # a .ckpt file, or a run folder (its best.ckpt)
    split: str = "test"  # train | valid | test
    output_dir: str | None = None  # None = RUN/eval (RUN/eval-SPLIT for other splits), ./eval for a loose checkpoint
    data: str | None = None  # manifest CSV or photo folder; None = the run's manifest.csv
    class_map: str | None = None  # JSON {"data label": "model label"} or 2-column CSV; "" / null drops a label
    calibrate: bool = True  # fit the temperature, choose the thresholds on the valid split; store them in the checkpoint
    batch_size: int = 64  # evaluation batch size
    num_workers: int = 0  # data-loading processes (0 = in this process)
    top_losses: int = 16  # images in the top-losses grid
    device: str = "auto"  # auto | cpu | cuda
    report: bool = True  # rewrite RUN/report.html afterwards (checkpoints inside a run folder only)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)  # targets of the decision thresholds



# ----------------------------------------------------------------------------- CLI


def run(cfg: Any) -> dict[str, Any]:
    """Evaluate as configured, print the headline numbers, refresh the run report."""
    setup_logging()
    if not cfg.ckpt:
        raise ConfigError("ckpt=PATH is required (a .ckpt file or a run folder)")
    ckpt = find_checkpoint(cfg.ckpt)
    out = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(ckpt, cfg.split)
    run = run_dir_of(ckpt)
    if cfg.report and run is not None:
        check_output_file(run / "report.html", key="report", label=f"report=true: {run / 'report.html'}")
    result = evaluate_checkpoint(
        ckpt, cfg.split, out, cfg.data, class_map=cfg.class_map, calibrate=cfg.calibrate,
        batch_size=cfg.batch_size, num_workers=cfg.num_workers, top_losses=cfg.top_losses, device=cfg.device,
        threshold=cfg.threshold,
    )
    stage = [metric_key(cfg.split, k) for k in ("acc", "acc5", "f1", "ece", "ece_calibrated", "ece_crossfit")]
    keys = ("split", "items", *stage, "temperature",
            "thresholds/fpr_pooled", "thresholds/recall_macro", "thresholds/background_silent",
            "nocall/generated_silent", "presence/threshold", "presence/call_windows_with_row", "abstain/threshold",
            "abstain/auroc_generated", "abstain/auroc_folder")
    console.print_json(json.dumps({k: result.get(k) for k in keys if k in result}))
    console.print(f"evaluation written to {out}")
    if cfg.report and run is not None:
        from birdvision.reports.html import write_run_report

        console.print(f"run report: {write_run_report(run)}")
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m birdvision.evaluate``."""

    def body() -> int:
        cfg = parse_cli(EvaluateConfig, argv, preset_key="preset", prog="birdvision.evaluate",
                        description="Evaluate a checkpoint: metrics, per-class table, confusion matrix, "
                                    "top losses, calibration (stores the fitted temperature in the checkpoint).")
        run(cfg)
        return 0

    return run_cli(body, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
