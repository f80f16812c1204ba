"""Learning-rate range test before training (``tune.lr_find=true``), with Lightning's tuner.

The test (Smith, 2015) trains for ``num_training`` steps while the rate grows exponentially
from ``min_lr`` to ``max_lr`` and records the smoothed loss; the suggestion is the rate
where the loss falls fastest. The model and trainer are restored afterwards, so the real
run starts from the same weights. Two things differ from the run that follows, on
purpose: the staged fine-tuning callback is not active during the test (Lightning swaps
all callbacks for its own), and every parameter group sweeps the same rate; the
suggestion is used as the head's one-cycle peak, the backbone then gets
``backbone_lr_scale`` times it as usual.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
from lightning.pytorch.tuner import Tuner

from birdvision.reports.plots import lr_find_figure, save_figure

log = logging.getLogger("birdvision.training.lr_find")

MIN_POINTS = 20  # fewer recorded rates than this give a noise-driven suggestion; keep the recipe's rate


def find_lr(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    run_dir: str | Path,
    *,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_training: int = 100,
) -> float:
    """Run the range test, save ``RUN/lr_find.png`` and return the suggested peak rate.

    When no suggestion is possible (too few batches, or the loss diverged at once) the
    module's current rate is returned unchanged and a warning says so: a tuning aid must
    never stop a training run.
    """
    current = float(module.hparams.lr)
    # The sweep is bounded by max_epochs as well as by its step count: with a one-epoch
    # budget and a small data set it would stop after a handful of rates (and Lightning
    # would blame a diverging loss). Let it span epochs, then put the limit back.
    # Validation between sweep epochs only costs time (the finder reads training losses).
    max_epochs, val_every = trainer.fit_loop.max_epochs, trainer.check_val_every_n_epoch
    trainer.fit_loop.max_epochs = max(max_epochs or 0, num_training)
    trainer.check_val_every_n_epoch = 10**9
    try:
        finder = Tuner(trainer).lr_find(
            module, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr, num_training=num_training,
            update_attr=False,
        )
    finally:
        trainer.fit_loop.max_epochs, trainer.check_val_every_n_epoch = max_epochs, val_every
    if finder is None:  # fast_dev_run
        return current
    lrs = [float(x) for x in finder.results.get("lr", [])]
    losses = [float(x) for x in finder.results.get("loss", [])]
    # Lightning's default skips the first 10 points; on a short sweep that is everything.
    skip = 10 if len(losses) > 20 else max(0, len(losses) // 5)
    suggestion = finder.suggestion(skip_begin=skip) if len(losses) >= MIN_POINTS else None
    if suggestion is not None and not (math.isfinite(suggestion) and suggestion > 0):
        suggestion = None
    path = save_figure(lr_find_figure(lrs, losses, suggestion, skip), Path(run_dir) / "lr_find.png")
    if suggestion is None:
        log.warning("lr finder: no suggestion from %d steps; keeping lr=%g (plot: %s)", len(losses), current, path)
        return current
    log.info("lr finder: suggested peak lr %.3g (was %g) from %d steps; plot: %s", suggestion, current, len(losses), path)
    return float(suggestion)
