"""Staged fine-tuning: train only the new head for ``warmup_epochs``, then everything; optionally an EMA of the weights."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging

from birdvision.models import split_parameters
from birdvision.training.module import BirdClassifier, freeze_batchnorm

log = logging.getLogger(__name__)


class StagedFinetuning(L.Callback):
    """Freeze the backbone (weights and batch-norm statistics) during the head-only warm-up.

    With ``freeze_bn`` the batch-norm statistics stay pretrained for the whole run (their
    scale and shift still train), as Keras' EfficientNet fine-tuning guide advises for small
    data: batches of 32 augmented photos re-estimate them badly, and the head fitted on the
    pretrained features (``head_init=embeddings``) would see shifted inputs.

    The optimiser holds every parameter from the start, so unfreezing needs no new
    parameter group and a resumed run restores the same optimiser state; frozen
    parameters simply receive no gradient and AdamW skips them.
    """

    def __init__(self, warmup_epochs: int, *, freeze_bn: bool = False) -> None:
        self.warmup_epochs = warmup_epochs
        self.freeze_bn = freeze_bn

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: BirdClassifier) -> None:
        head, body = split_parameters(pl_module.net, pl_module.hparams.backbone)
        frozen = trainer.current_epoch < self.warmup_epochs
        for p in body:
            p.requires_grad_(not frozen)
        if frozen or self.freeze_bn:
            freeze_batchnorm(pl_module.net)
            head_ids = {id(p) for p in head}
            # the head's own norm layers (if any) keep training
            for m in pl_module.net.modules():
                if any(id(p) in head_ids for p in m.parameters(recurse=False)):
                    m.train()
        if trainer.current_epoch == self.warmup_epochs and self.warmup_epochs > 0:
            log.info("epoch %d: unfreezing the backbone", trainer.current_epoch)
        pl_module.log("train/backbone_frozen", float(frozen), on_step=False, on_epoch=True)


class WeightEMA(EMAWeightAveraging):
    """Lightning's EMA of the weights, with checkpoints that test what they hold.

    Every checkpoint's ``state_dict`` is the average (so validation, ``best.ckpt``, evaluate,
    export and predict all use it) and ``current_model_state`` holds the raw weights for
    resuming. Lightning's callback restores the raw weights whenever a checkpoint is loaded
    with it attached, so ``trainer.test(ckpt_path=...)`` after fit would score the raw
    weights; outside fitting the average is what is loaded.
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == "fit":
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
