"""BirdClassifier: one LightningModule for photos and spectrograms alike.

It sees (C, H, W) tensors and integer labels; whether they came from a JPEG or a mel
frontend is decided at the data edge. Everything needed to run the model later (class
list, preprocessing spec, manifest digest, temperature, decision thresholds, the no-call
class) is stored in its hyperparameters, hence in every checkpoint.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from birdvision.models import create_model, split_parameters

log = logging.getLogger(__name__)


class OneCycle(torch.optim.lr_scheduler.OneCycleLR):
    """One-cycle schedule that a resumed run can re-plan.

    Restored from a checkpoint planned for the same number of steps, it continues exactly.
    Restored from one planned for a different number (``trainer.max_epochs`` raised to extend a
    finished run, or changed on resume), it keeps the new plan, as if the run had been planned for
    the new length from the start, and continues at the step reached: extending a finished
    3-epoch run to 4 moves it from the end of a 3-epoch cycle to step 3/4 of a 4-epoch one, so the
    extra epoch starts at a learning rate a quarter-cosine above the end and anneals again.
    (torch's own OneCycleLR would raise "Tried to step N times" on the first extra step.)
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        planned = {k: self.__dict__[k] for k in ("total_steps", "_schedule_phases")}
        super().load_state_dict(state_dict)
        done = int(self.last_epoch)
        if self.total_steps == planned["total_steps"] or done >= planned["total_steps"]:
            return  # same plan, or nothing left to train: restore as saved
        log.info("learning-rate schedule re-planned: %d of %d steps done, now %d steps in all",
                 done, self.total_steps, planned["total_steps"])
        self.__dict__.update(planned)
        self.last_epoch = done - 1
        self.step()  # sets every group's lr for step ``done`` of the new plan


def _metrics(num_classes: int) -> MetricCollection:
    # compute_groups=False: torchmetrics groups metrics whose states are equal after the first batch, and
    # a first batch classified perfectly makes top-5 accuracy's and macro F1's equal, so F1 then
    # reported top-5 accuracy for the rest of the epoch (test/f1 0.993 beside a 0.960 top-1, measured)
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        },
        compute_groups=False,
    )


class BirdClassifier(L.LightningModule):
    """Backbone + new head, cross-entropy, one-cycle AdamW with a lower backbone learning rate."""

    def __init__(
        self,
        backbone: str,
        classes: list[str],
        *,
        pretrained: bool = False,
        weights_path: str | None = None,
        in_chans: int = 3,
        drop_rate: float | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        pct_start: float = 0.25,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        label_smoothing: float = 0.0,
        backbone_lr_scale: float = 0.1,
        warmup_epochs: int = 2,
        channels_last: bool = False,
        preprocess: dict[str, Any] | None = None,
        manifest_digest: str = "",
        recipe: str = "",
        temperature: float = 1.0,
        thresholds: dict[str, Any] | None = None,
        abstain: dict[str, Any] | None = None,
        background_class: str | None = None,
        class_weights: list[float] | None = None,
        load_weights: bool = True,
    ) -> None:
        """``load_weights=False`` builds the network without reading pretrained weights (a checkpoint
        is about to overwrite them); ``pretrained`` and ``weights_path`` stay as the run's record.

        ``temperature``, ``thresholds`` (per-class decision thresholds) and ``abstain`` (the photo abstention
        threshold) are set after training by evaluation (:mod:`birdvision.reports.thresholds`);
        ``background_class`` names the no-call class of a call model, which predictions never report."""
        super().__init__()
        self.save_hyperparameters(ignore=["load_weights"])
        self.classes = list(classes)
        self.net = create_model(
            backbone, len(classes), pretrained=pretrained and load_weights,
            weights_path=weights_path if load_weights else None,
            in_chans=in_chans, drop_rate=drop_rate,
        )
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        n = len(classes)
        self.train_metrics = _metrics(n).clone(prefix="train/")
        self.val_metrics = _metrics(n).clone(prefix="val/")
        self.test_metrics = _metrics(n).clone(prefix="test/")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        if class_weights is not None and len(class_weights) != n:
            raise ValueError(f"class_weights has {len(class_weights)} entries for {n} classes")
        # Training loss only: validation and test losses stay comparable across balance settings.
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32)
                             if class_weights is not None else None, persistent=False)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only: bool = True, **kwargs):
        """Lightning's loader, without fetching pretrained weights (the checkpoint holds every weight) and
        without unpickling code (``weights_only=True`` unless the caller asks otherwise, whatever the torch
        version's default).

        The loaded module's hyperparameters still say whether the run started from pretrained weights.
        """
        kwargs.setdefault("load_weights", False)
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                            strict=strict, weights_only=weights_only, **kwargs)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (C, H, W) inputs."""
        if self.hparams.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities: softmax of logits divided by the fitted temperature."""
        return F.softmax(self(x) / float(self.hparams.temperature), dim=-1)

    # ------------------------------------------------------------------ steps
    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, loss_metric: MeanMetric):
        x, y = batch[0], batch[1]  # shard batches carry item indices third
        logits = self(x)
        weight = self.class_weights if self.training else None
        loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=self.hparams.label_smoothing)
        loss_metric.update(loss.detach(), weight=y.numel())
        metrics.update(logits.detach(), y)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, self.train_metrics, self.train_loss)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.val_metrics, self.val_loss)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=False)

    def on_validation_epoch_end(self) -> None:
        # compute() of a logged metric is cached, so reading it here costs nothing extra.
        self.val_acc_best.update(self.val_metrics["acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def on_train_start(self) -> None:
        # A sanity-check pass must not count towards the best validation accuracy.
        if self.trainer.current_epoch == 0:
            self.val_acc_best.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.test_metrics, self.test_loss)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.predict_proba(x)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        """AdamW over all parameters (frozen ones get no gradient, so no update) and OneCycleLR.

        The backbone gets ``backbone_lr_scale`` times the head's peak: the head starts from
        random weights, the backbone from useful ones. Total steps come from the trainer so
        gradient accumulation, limits and multi-device runs are accounted for.
        """
        head, body = split_parameters(self.net, self.hparams.backbone)
        lr, scale = self.hparams.lr, self.hparams.backbone_lr_scale
        groups = [{"params": head, "lr": lr}]
        if body:
            groups.append({"params": body, "lr": lr * scale})
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=self.hparams.weight_decay)
        total = max(4, int(self.trainer.estimated_stepping_batches))
        # OneCycleLR divides by (pct_start * total - 1) and by the rest of the steps: on tiny
        # runs keep each phase at least one full step long.
        pct = min(max(self.hparams.pct_start, 2.0 / total), 1.0 - 2.0 / total)
        sched = OneCycle(
            opt,
            max_lr=[g["lr"] for g in groups],
            total_steps=total,
            pct_start=pct,
            div_factor=self.hparams.div_factor,
            final_div_factor=self.hparams.final_div_factor,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ RNG state with checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain tensors and tuples only, so checkpoints load with torch.load(weights_only=True).
        name, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["birdvision_rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("birdvision_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            name, keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            random.setstate(rng["python"])


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every batch-norm layer of ``module`` in eval mode (running stats stay pretrained)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
