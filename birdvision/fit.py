"""``python -m birdvision.fit recipe=NAME key=value ...``: fine-tune a classifier, test it, report it."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from birdvision import __version__
from birdvision.artifacts import atomic_path, write_json, write_text
from birdvision.config import ConfigError, FitConfig, parse_cli, save_config, to_yaml
from birdvision.console import console, run_cli, setup_logging
from birdvision.data.datamodule import BirdDataModule
from birdvision.data.manifest import manifest_digest, write_manifest
from birdvision.data.pipeline import Pipeline, build_pipeline
from birdvision.data.sources import DataSourceError
from birdvision.data.splits import LeakageError
from birdvision.embeddings import HeadOnEmbeddings
from birdvision.evaluate import EvaluationError
from birdvision.finetune import StagedFinetuning
from birdvision.models import WeightsUnavailableError
from birdvision.module import BirdClassifier
from birdvision.runs import CHECKPOINTS, RunError, new_run_dir, resolve_resume

log = logging.getLogger("birdvision.fit")

USER_ERRORS = (ConfigError, DataSourceError, LeakageError, WeightsUnavailableError, RunError, EvaluationError)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def choose_precision(requested: str | None) -> str:
    """bf16-mixed on GPUs that support it, full precision elsewhere, unless the recipe says."""
    if requested:
        return requested
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def build_module(cfg: DictConfig, pipe: Pipeline, digest: str, *, load_weights: bool = True) -> BirdClassifier:
    """The LightningModule for this config and data; pretrained weights are read here, before training
    (not when resuming: the checkpoint holds every weight)."""
    m, o = cfg.model, cfg.optim
    warmup, scale = cfg.finetune.warmup_epochs, cfg.finetune.backbone_lr_scale
    if not m.pretrained and not m.weights_path and (warmup or scale != 1.0):
        # A head-only warm-up over a random backbone learns nothing, and a slower backbone
        # only slows a network that must learn everything: staged fine-tuning is for
        # pretrained weights.
        log.info("model.pretrained=false: no head-only warm-up, one learning rate for all layers "
                 "(finetune.warmup_epochs %d -> 0, finetune.backbone_lr_scale %s -> 1.0)", warmup, scale)
        warmup, scale = 0, 1.0
        cfg.finetune.warmup_epochs, cfg.finetune.backbone_lr_scale = 0, 1.0
    return BirdClassifier(
        m.backbone, pipe.classes,
        pretrained=m.pretrained, weights_path=m.weights_path, in_chans=pipe.in_chans,
        drop_rate=m.drop_rate, lr=o.lr, weight_decay=o.weight_decay, pct_start=o.pct_start,
        div_factor=o.div_factor, final_div_factor=o.final_div_factor,
        label_smoothing=o.label_smoothing, backbone_lr_scale=scale,
        warmup_epochs=warmup, channels_last=m.channels_last,
        preprocess=pipe.preprocess, manifest_digest=digest, recipe=cfg.recipe, load_weights=load_weights,
    )


def build_trainer(cfg: DictConfig, run_dir: Path, *, enable_progress: bool = True) -> tuple[L.Trainer, ModelCheckpoint]:
    """Trainer with per-epoch checkpoints (all kept), ``last.ckpt``, ``best.ckpt`` and a CSV log."""
    t = cfg.trainer
    ckpt_dir = run_dir / CHECKPOINTS
    every_epoch = ModelCheckpoint(
        dirpath=ckpt_dir, filename="epoch={epoch:03d}", auto_insert_metric_name=False,
        save_top_k=-1, every_n_epochs=1, save_last=True, enable_version_counter=False,
    )
    best = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="val/acc", mode="max", save_top_k=1,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [every_epoch, best, StagedFinetuning(cfg.finetune.warmup_epochs, freeze_bn=cfg.finetune.freeze_bn)]
    callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if enable_progress:
        callbacks.append(RichProgressBar())
    kwargs = {}
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    if t.limit_val_batches is not None:
        kwargs["limit_val_batches"] = t.limit_val_batches
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        precision=choose_precision(t.precision),
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val,
        callbacks=callbacks,
        logger=CSVLogger(save_dir=run_dir, name="", version=""),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=enable_progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )
    return trainer, best


def _set_aside_metrics(run_dir: Path) -> Path | None:
    """Lightning's CSV logger deletes an existing metrics.csv; keep the interrupted run's rows."""
    src = run_dir / "metrics.csv"
    if not src.is_file():
        return None
    dst = run_dir / f"metrics.before-resume-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    src.rename(dst)
    return dst


def _merge_metrics(earlier: Path, current: Path) -> None:
    """metrics.csv = the interrupted run's rows for epochs before the resumed one, then the new rows."""
    new = list(csv.DictReader(open(current, newline=""))) if current.is_file() else []
    old = list(csv.DictReader(open(earlier, newline="")))
    first = min((int(r["epoch"]) for r in new if r.get("epoch")), default=None)
    rows = [r for r in old if first is None or (r.get("epoch") and int(r["epoch"]) < first)] + new
    keys = sorted({k for r in rows for k in r})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(current, buf.getvalue())
    earlier.unlink()


def _fit_with_trainer(cfg: DictConfig, module: BirdClassifier, pipe: Pipeline, run_dir: Path,
                      resume_ckpt: Path | None) -> dict:
    """Staged fine-tuning with Lightning, then the best checkpoint on test; returns summary entries."""
    dm = BirdDataModule(
        pipe.datasets, batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers, batch_transform=pipe.batch_transform,
        train_batch_transform=pipe.train_batch_transform,
    )
    earlier_metrics = _set_aside_metrics(run_dir) if resume_ckpt else None
    trainer, best_cb = build_trainer(cfg, run_dir)
    if cfg.tune.lr_find and resume_ckpt is None:
        from birdvision.tune import find_lr

        module.hparams.lr = find_lr(trainer, module, dm, run_dir)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # The run folder holds config.yaml and manifest.csv before the logger starts, and an
        # interrupted run's metrics.csv has been set aside above and is merged back below.
        warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume_ckpt) if resume_ckpt else None)
    if earlier_metrics is not None:
        _merge_metrics(earlier_metrics, run_dir / "metrics.csv")
    best_path = best_cb.best_model_path or str(run_dir / CHECKPOINTS / "last.ckpt")
    out: dict = {"epochs_completed": int(trainer.current_epoch), "best_checkpoint": best_path}
    out.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))})
    if best_cb.best_model_score is not None:
        out["val/acc_best"] = float(best_cb.best_model_score)
    if cfg.test_after_fit and Path(best_path).is_file() and len(pipe.datasets.get("test", [])):
        results = trainer.test(module, datamodule=dm, ckpt_path=best_path, verbose=False)
        out.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    return out


FINETUNE_MODES = ("staged", "embeddings")
HEAD_INITS = ("random", "embeddings")


def run(cfg: DictConfig) -> dict:
    """Train, test the best checkpoint and write ``summary.json``; returns the summary."""
    setup_logging()
    if cfg.finetune.mode not in FINETUNE_MODES:
        raise ConfigError(f"finetune.mode={cfg.finetune.mode!r}: expected one of {', '.join(FINETUNE_MODES)}")
    if cfg.finetune.head_init not in HEAD_INITS:
        raise ConfigError(f"finetune.head_init={cfg.finetune.head_init!r}: expected one of {', '.join(HEAD_INITS)}")
    if cfg.finetune.mode == "embeddings" and cfg.resume:
        raise ConfigError("finetune.mode=embeddings trains in seconds from its cache: run it again instead of resume=")
    resume_ckpt = None
    if cfg.resume:
        run_dir, resume_ckpt = resolve_resume(cfg.resume, cfg.output_dir, cfg.recipe)
        log.info("resuming %s from %s", run_dir, resume_ckpt.name)
    else:
        run_dir = new_run_dir(cfg.output_dir, cfg.recipe)
    console.print(f"[bold]birdvision {__version__}[/] fit, run folder {run_dir}\n" + to_yaml(cfg))
    save_config(cfg, run_dir / ("config.yaml" if resume_ckpt is None else f"config.resume-{time.strftime('%Y%m%d-%H%M%S')}.yaml"))
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    pipe = build_pipeline(cfg)
    for path, why in pipe.skipped:
        log.warning("left out %s: %s", path, why)
    write_manifest(run_dir / "manifest.csv", pipe.samples)
    digest = manifest_digest(pipe.samples)
    write_json(run_dir / "classes.json", pipe.classes)
    counts = {s: sum(1 for x in pipe.samples if x.split == s) for s in ("train", "valid", "test")}
    log.info("%s: %d classes, samples per split %s, %d left out", pipe.origin, len(pipe.classes), counts, len(pipe.skipped))

    module = build_module(cfg, pipe, digest, load_weights=resume_ckpt is None)
    summary: dict = {
        "recipe": cfg.recipe,
        "backbone": cfg.model.backbone,
        "mode": cfg.data.mode,
        "finetune_mode": cfg.finetune.mode,
        "run_dir": str(run_dir),
        "max_epochs": int(cfg.trainer.max_epochs),
        "num_classes": len(pipe.classes),
        "samples": counts,
        "manifest_digest": digest,
        "birdvision_version": __version__,
    }
    if not counts["test"]:  # summary.json then has no test/* keys, never the valid split's numbers under them
        log.warning("no test split: the run reports no test result (valid-split numbers are val/* and eval-valid/)")
        summary["test"] = "no test split"
    t0 = time.time()
    logits_fn = None

    def head_fitter() -> HeadOnEmbeddings:
        return HeadOnEmbeddings(module, pipe.samples, pipe.classes, pipe.preprocess, cache_dir=cfg.finetune.embedding_cache,
                                batch_size=cfg.data.eval_batch_size or cfg.data.batch_size, num_workers=cfg.data.num_workers)

    if cfg.finetune.mode == "embeddings":
        head = head_fitter()
        summary.update(head.fit(run_dir / CHECKPOINTS))
        summary["epochs_completed"] = 0
        logits_fn = head.logits
    else:
        if cfg.finetune.head_init == "embeddings" and resume_ckpt is None:
            # LP-FT: the head starts where a linear probe on the frozen features ends, so
            # fine-tuning the backbone is not driven by a random head's large early gradients.
            probe = head_fitter().fit_head(("train", "valid"))
            log.info("head initialised on cached embeddings: train acc %.4f, valid acc %.4f (l2 %g)",
                     probe["train/acc"], probe.get("val/acc", float("nan")), probe["head/l2"])
            summary.update({f"head_init/{k.replace('/', '_')}": v for k, v in probe.items() if k.endswith("/acc")})
        summary.update(_fit_with_trainer(cfg, module, pipe, run_dir, resume_ckpt))
    summary["fit_seconds"] = round(time.time() - t0, 1)
    best_path = summary["best_checkpoint"]
    if cfg.evaluate_after_fit and Path(best_path).is_file():
        # Per-class tables, plots and a temperature fitted on valid (stored in best.ckpt, so
        # predict and exports use it). Runs after trainer.test because it rewrites best.ckpt.
        from birdvision.evaluate import evaluate_checkpoint

        split = "test" if counts["test"] else "valid"
        ev = evaluate_checkpoint(
            best_path, split, run_dir / ("eval" if split == "test" else "eval-valid"),
            batch_size=cfg.data.eval_batch_size or cfg.data.batch_size, num_workers=cfg.data.num_workers,
            logits_fn=logits_fn,
        )
        summary.update({"eval/split": split, "eval/top1": ev["top1"], "eval/ece": ev["ece"], "eval/ece_calibrated": ev["ece_calibrated"],
                        "temperature": ev["temperature"]})
    write_json(run_dir / "summary.json", summary)
    from birdvision.reports.html import write_run_report

    summary["report"] = str(write_run_report(run_dir))
    console.print_json(json.dumps({k: summary[k] for k in summary if "/" in k or k in ("epochs_completed", "best_checkpoint")}))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m birdvision.fit``."""

    def body() -> int:
        cfg = parse_cli(FitConfig, argv, preset_key="recipe", preset_dir="recipes", prog="birdvision.fit",
                        description="Fine-tune a bird classifier on photos or call spectrograms.",
                        default_preset="effnet_b0")
        run(cfg)
        return 0

    return run_cli(body, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
