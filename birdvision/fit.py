"""``python -m birdvision.fit recipe=NAME key=value ...``: fine-tune a classifier, test it, report it."""

from __future__ import annotations

import ctypes
import difflib
import json
import logging
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig
from torch.utils.data import IterableDataset, Sampler

from birdvision import __version__
from birdvision.config import ConfigError, FitConfig, parse_cli, save_config, to_yaml
from birdvision.console import console, run_cli, setup_logging
from birdvision.data.balance import balanced_sampler, class_counts, effective_number_weights
from birdvision.data.build import build_pipeline
from birdvision.data.datamodule import BirdDataModule
from birdvision.data.manifest import DataSourceError, manifest_digest, write_manifest
from birdvision.data.pipeline import Pipeline
from birdvision.data.splits import LeakageError
from birdvision.evaluation import EvaluationError
from birdvision.models import WeightsUnavailableError, get_spec
from birdvision.reports.metrics import metric_key
from birdvision.runs.artifacts import atomic_path, write_json
from birdvision.runs.checkpoint import read_checkpoint
from birdvision.runs.folders import (
    CHECKPOINTS,
    RunError,
    append_metrics,
    new_run_dir,
    resolve_resume,
    run_lock,
    trim_metrics,
)
from birdvision.spec import from_dict as spec_from_dict
from birdvision.training.embeddings import HeadOnEmbeddings
from birdvision.training.finetune import StagedFinetuning, WeightEMA
from birdvision.training.module import BirdClassifier

log = logging.getLogger("birdvision.fit")

USER_ERRORS = (ConfigError, DataSourceError, LeakageError, WeightsUnavailableError, RunError, EvaluationError,
               MisconfigurationException)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed (a kill never leaves half a file), and
    read back with ``weights_only=True``: Lightning's own loader unpickles arbitrary objects."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class RunMetricsLogger(CSVLogger):
    """Lightning's CSV logger, except that it adds to the run's ``metrics.csv`` instead of deleting it
    (a resumed run keeps its history) and rewrites it atomically with the union of all columns
    (a test row after training rows no longer fails with "fields not in fieldnames")."""

    class _Writer(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:  # the parent would delete metrics.csv
            pass

        def save(self) -> None:
            append_metrics(Path(self.log_dir), self.metrics)
            self.metrics = []

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = self._Writer(log_dir=self.log_dir)
        return self._experiment


class RunCheckpoint(ModelCheckpoint):
    """Lightning's checkpoint callback for a run folder that may have moved since it was saved.

    Its state names checkpoints by absolute path; restored in another place (a copied or moved run
    folder, a loose checkpoint continued in a new one), Lightning would keep testing the old
    folder's best.ckpt. Paths are re-rooted in this run's checkpoints folder, and a best
    checkpoint that is not there is forgotten (the next validation picks one again).
    """

    def load_state_dict(self, state_dict: dict) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and os.path.normpath(old) != os.path.normpath(new):
            def here(p):
                q = os.path.join(new, os.path.basename(p)) if p else p
                return q if q and os.path.isfile(q) else ""

            state_dict = dict(state_dict, dirpath=new, best_model_path=here(state_dict.get("best_model_path")),
                              last_model_path=here(state_dict.get("last_model_path")),
                              kth_best_model_path=here(state_dict.get("kth_best_model_path")))
            state_dict["best_k_models"] = {here(k): v for k, v in (state_dict.get("best_k_models") or {}).items() if here(k)}
            if not state_dict["best_model_path"]:
                state_dict.update(best_model_score=None, best_k_models={})
                state_dict.pop("kth_value", None)
        super().load_state_dict(state_dict)


def choose_precision(requested: str | None) -> str:
    """bf16-mixed on GPUs that support it, full precision elsewhere, unless the recipe says."""
    if requested:
        return requested
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def class_balance(cfg: DictConfig, pipe: Pipeline) -> tuple[list[float] | None, Sampler | None, dict]:
    """``data.balance``: loss weights or a training sampler, and what the summary says about them."""
    mode = cfg.data.balance
    if mode == "none":
        return None, None, {"balance": "none"}
    labels = pipe.datasets["train"].labels
    counts = class_counts(labels, pipe.classes)
    info = {"balance": mode, "balance/train_min_count": min(counts), "balance/train_max_count": max(counts)}
    if mode == "loss":
        weights = effective_number_weights(counts, cfg.data.balance_beta)
        info.update({"balance/beta": cfg.data.balance_beta, "balance/weight_min": min(weights),
                     "balance/weight_max": max(weights)})
        log.info("data.balance=loss: class weights %.3f..%.3f (effective number, beta %g; counts %d..%d)",
                 min(weights), max(weights), cfg.data.balance_beta, min(counts), max(counts))
        return weights, None, info
    if isinstance(pipe.datasets["train"], IterableDataset):
        raise ConfigError("data.balance=sampler needs a map-style dataset; with data.shards use data.balance=loss")
    log.info("data.balance=sampler: each class drawn equally often (train counts %d..%d)", min(counts), max(counts))
    return None, balanced_sampler(labels, counts), info


def build_module(cfg: DictConfig, pipe: Pipeline, digest: str, *, load_weights: bool = True,
                 class_weights: list[float] | None = None) -> BirdClassifier:
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
        preprocess=pipe.preprocess.to_dict(), manifest_digest=digest, recipe=cfg.recipe, load_weights=load_weights,
        class_weights=class_weights, background_class=pipe.background_class,
    )


def _strategy(cfg: DictConfig) -> str:
    """DDP with a head-only warm-up must be told that the frozen backbone's parameters get no gradient."""
    s = cfg.trainer.strategy
    if s in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook") and cfg.finetune.warmup_epochs > 0:
        return f"{s}_find_unused_parameters_true"
    return s


def build_trainer(cfg: DictConfig, run_dir: Path, *, enable_progress: bool = True) -> tuple[L.Trainer, ModelCheckpoint]:
    """Trainer with per-epoch checkpoints (all kept), ``last.ckpt``, ``best.ckpt`` and a CSV log."""
    t = cfg.trainer
    ckpt_dir = run_dir / CHECKPOINTS
    every_epoch = RunCheckpoint(
        dirpath=ckpt_dir, filename="epoch={epoch:03d}", auto_insert_metric_name=False,
        save_top_k=-1, every_n_epochs=1, save_last=True, enable_version_counter=False,
    )
    best = RunCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="val/acc", mode="max", save_top_k=1,
        enable_version_counter=False,
    )
    mid_epoch = []
    if t.checkpoint_every_n_steps:
        # last.ckpt every N optimiser steps too: with shards, the loader's position is in it, so a
        # kill mid-epoch resumes mid-epoch (each sample still seen once per epoch).
        mid_epoch = [RunCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True,
                                   every_n_train_steps=t.checkpoint_every_n_steps, enable_version_counter=False)]
    callbacks: list[L.Callback] = [every_epoch, best, *mid_epoch, StagedFinetuning(cfg.finetune.warmup_epochs, freeze_bn=cfg.finetune.freeze_bn)]
    if cfg.finetune.ema_decay:
        # validation, every checkpoint's state_dict (so test, evaluate, export, predict) and the final
        # weights are the average; the raw weights ride along in the checkpoint for resuming
        callbacks.append(WeightEMA(decay=cfg.finetune.ema_decay))
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
        strategy=_strategy(cfg),
        num_nodes=t.num_nodes,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val,
        callbacks=callbacks,
        logger=RunMetricsLogger(save_dir=run_dir, name="", version=""),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=enable_progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )
    return trainer, best


def _fit_with_trainer(cfg: DictConfig, module: BirdClassifier, pipe: Pipeline, run_dir: Path,
                      resume_ckpt: Path | None, sampler: Sampler | None = None) -> dict:
    """Staged fine-tuning with Lightning, then the best checkpoint on test; returns summary entries."""
    dm = BirdDataModule(
        pipe.datasets, batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers, batch_transform=pipe.batch_transform,
        train_batch_transform=pipe.train_batch_transform, train_sampler=sampler,
    )
    trainer, best_cb = build_trainer(cfg, run_dir)
    if trainer.world_size > 1:
        log.info("%d processes: global batch %d (data.batch_size %d per process); optim.lr is the peak for that "
                 "global batch, not scaled", trainer.world_size, cfg.data.batch_size * trainer.world_size,
                 cfg.data.batch_size)
    if cfg.tune.lr_find and resume_ckpt is None:
        from birdvision.training.lr_find import find_lr

        module.hparams.lr = find_lr(trainer, module, dm, run_dir)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume_ckpt) if resume_ckpt else None)
    best_path = best_cb.best_model_path or str(run_dir / CHECKPOINTS / "last.ckpt")
    out: dict = {"epochs_completed": int(trainer.current_epoch), "best_checkpoint": best_path,
                 "world_size": int(trainer.world_size), "global_batch_size": cfg.data.batch_size * int(trainer.world_size)}
    out.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))})
    if best_cb.best_model_score is not None:
        out["val/acc_best"] = float(best_cb.best_model_score)
    if cfg.test_after_fit and Path(best_path).is_file() and len(pipe.datasets.get("test", [])):
        results = trainer.test(module, datamodule=dm, ckpt_path=best_path, verbose=False)
        out.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    return out


@dataclass
class Resume:
    """What ``resume=`` continues: a checked checkpoint and the run folder it belongs to (None: a
    checkpoint from outside a run folder, continued in a new one)."""

    run_dir: Path | None
    ckpt: Path
    hparams: dict
    epoch: int  # the epoch index the checkpoint was saved in


def check_config(cfg: DictConfig) -> None:
    """Checks across keys (each key's own range is checked when the config loads)."""
    get_spec(cfg.model.backbone)
    d, a = cfg.data, cfg.audio
    if d.valid_fraction + d.test_fraction >= 1:
        raise ConfigError(f"data.valid_fraction + data.test_fraction = {d.valid_fraction + d.test_fraction:g}: "
                          "must leave samples to train on (< 1)")
    if a.mel.f_min_hz >= a.mel.f_max_hz:
        raise ConfigError(f"audio.mel.f_min_hz={a.mel.f_min_hz:g} must be below audio.mel.f_max_hz={a.mel.f_max_hz:g}")
    if cfg.data.mode == "audio" and a.mel.f_max_hz > a.sample_rate / 2:
        raise ConfigError(f"audio.mel.f_max_hz={a.mel.f_max_hz:g} is above the Nyquist frequency of "
                          f"audio.sample_rate={a.sample_rate} ({a.sample_rate / 2:g} Hz)")
    for key in ("gain_db", "mix_snr_db", "noise_amplitude", "stretch_rate"):
        lo_hi = list(a.augment[key])
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            raise ConfigError(f"audio.augment.{key}={lo_hi}: expected [low, high] with low <= high")
    strategies = ("auto", *StrategyRegistry.available_strategies())
    if cfg.trainer.strategy not in strategies:
        close = difflib.get_close_matches(str(cfg.trainer.strategy), strategies, n=1)
        raise ConfigError(f"trainer.strategy={cfg.trainer.strategy!r} is not a Lightning strategy."
                          + (f" Did you mean {close[0]!r}?" if close else "") + " e.g. auto, ddp, ddp_spawn, fsdp")
    devices, acc = cfg.trainer.devices, str(cfg.trainer.accelerator)
    if isinstance(devices, int) and devices > 1 and (acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available())):
        have = torch.cuda.device_count()
        if devices > have:
            raise ConfigError(f"trainer.devices={devices}: this machine has {have} CUDA device(s)")
    if isinstance(devices, int) and devices < 1 and devices != -1:
        raise ConfigError(f"trainer.devices={devices}: expected a count >= 1, -1 (all), a list of ids or auto")
    if cfg.finetune.mode == "embeddings" and cfg.resume:
        raise ConfigError("finetune.mode=embeddings trains in seconds from its cache: run it again instead of resume=")


def plan_resume(cfg: DictConfig) -> Resume:
    """Find and check the checkpoint to resume with the safe reader, before anything is written."""
    run_dir, ckpt = resolve_resume(cfg.resume, cfg.output_dir, cfg.recipe)
    ck = read_checkpoint(ckpt)
    hp, epoch = dict(ck["hyper_parameters"]), int(ck.get("epoch", 0) or 0)
    if "lr_schedulers" not in ck or "loops" not in ck:
        raise RunError(f"resume={ckpt}: the checkpoint holds a model but no training state (exported or "
                       "rewritten without its optimiser); start a new run from it with model.weights_path= instead")
    if hp["backbone"] != cfg.model.backbone:
        raise RunError(f"resume={ckpt}: the checkpoint is a {hp['backbone']}, recipe {cfg.recipe} trains a "
                       f"{cfg.model.backbone}; resume with the run's own recipe")
    return Resume(run_dir, ckpt, hp, epoch)


def _check_resume_matches(resume: Resume, pipe: Pipeline) -> None:
    hp = resume.hparams
    if list(hp["classes"]) != list(pipe.classes):
        extra, missing = sorted(set(pipe.classes) - set(hp["classes"])), sorted(set(hp["classes"]) - set(pipe.classes))
        raise RunError(f"resume={resume.ckpt}: the data's classes differ from the checkpoint's "
                       f"({len(pipe.classes)} vs {len(hp['classes'])}; new {extra[:3]}, gone {missing[:3]})")
    old, new = spec_from_dict(hp["preprocess"]).to_dict(), pipe.preprocess.to_dict()
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            raise RunError(f"resume={resume.ckpt}: preprocessing {k} was {old.get(k)!r}, the config now gives "
                           f"{new.get(k)!r}; resume with the run's own settings")


RUN_DIR_ENV = "BIRDVISION_RUN_DIR"


def _die_with_parent() -> None:
    """A rank whose launcher (rank zero) is killed, even with SIGKILL, ends too (Linux), instead of
    waiting half an hour in a collective for a peer that is gone while ``resume=latest`` starts anew."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _leave_process_group() -> None:
    """A rank other than zero, done with training and testing, leaves the process group before it exits.

    Left to interpreter exit, the group's communication threads were sometimes destroyed still running
    ("terminate called without an active exception", SIGABRT) while rank zero evaluated; Lightning's
    launcher then killed rank zero too (seen once in CI, in the two-process test).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _is_rank_zero() -> bool:
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def run(cfg: DictConfig) -> dict:
    """Train, test the best checkpoint and write ``summary.json``; returns the summary.

    Everything that can be checked is checked before the run folder exists (config, resume
    checkpoint, data, pretrained weights), so a failed start leaves nothing behind.
    """
    setup_logging()
    check_config(cfg)
    resume = plan_resume(cfg) if cfg.resume else None
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    pipe = build_pipeline(cfg)
    for path, why in pipe.skipped:
        log.warning("left out %s: %s", path, why)
    digest = manifest_digest(pipe.samples)
    if resume is not None:
        _check_resume_matches(resume, pipe)
    class_weights, sampler, balance_info = class_balance(cfg, pipe)
    module = build_module(cfg, pipe, digest, load_weights=resume is None, class_weights=class_weights)

    if not _is_rank_zero():
        # A DDP rank that Lightning launched from rank zero's process: rank zero chose the run
        # folder, holds it and writes everything; this rank only trains and tests its shard.
        _die_with_parent()
        shared = os.environ.get(RUN_DIR_ENV)
        if not shared:
            raise RunError(f"DDP rank without {RUN_DIR_ENV}: launch birdvision.fit once, with trainer.devices=N "
                           "(Lightning starts the other ranks)")
        return _run_in(cfg, Path(shared), pipe, digest, module, resume, sampler, balance_info)
    if resume is not None and resume.run_dir is not None:
        run_dir = resume.run_dir
    else:
        run_dir = new_run_dir(cfg.output_dir, cfg.recipe)
        if resume is not None:
            log.info("%s is not inside a birdvision run folder: continuing it in %s", resume.ckpt, run_dir)
    with run_lock(run_dir):
        os.environ[RUN_DIR_ENV] = str(run_dir)  # the ranks Lightning launches from this process share it
        try:
            return _run_in(cfg, run_dir, pipe, digest, module, resume, sampler, balance_info)
        finally:
            os.environ.pop(RUN_DIR_ENV, None)


def _prepare_run_dir(cfg: DictConfig, run_dir: Path, pipe: Pipeline, digest: str, resume: Resume | None) -> None:
    """Config, manifest and classes for a new run; for a resumed one, its config beside the first and
    its metrics trimmed to the checkpoint."""
    console.print(f"[bold]birdvision {__version__}[/] fit, run folder {run_dir}\n" + to_yaml(cfg))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if resume is not None and resume.run_dir == run_dir:
        log.info("resuming %s from %s (saved in epoch %d)", run_dir, resume.ckpt.name, resume.epoch)
        save_config(cfg, run_dir / f"config.resume-{stamp}.yaml")
        dropped = trim_metrics(run_dir, resume.epoch)
        if dropped:
            log.info("metrics.csv: dropped %d rows logged after the checkpoint by the interrupted attempt", dropped)
        if digest != resume.hparams.get("manifest_digest"):
            log.warning("the data changed since the run started (manifest digest %s, checkpoint %s): "
                        "the samples now used are in manifest.resume-%s.csv", digest[:12],
                        str(resume.hparams.get("manifest_digest"))[:12], stamp)
            write_manifest(run_dir / f"manifest.resume-{stamp}.csv", pipe.samples)
    else:
        save_config(cfg, run_dir / "config.yaml")
        write_manifest(run_dir / "manifest.csv", pipe.samples)
        write_json(run_dir / "classes.json", pipe.classes)

def _run_in(cfg: DictConfig, run_dir: Path, pipe: Pipeline, digest: str, module: BirdClassifier,
            resume: Resume | None, sampler: Sampler | None = None, balance_info: dict | None = None) -> dict:
    resume_ckpt = resume.ckpt if resume is not None else None
    writer = _is_rank_zero()
    if writer:
        _prepare_run_dir(cfg, run_dir, pipe, digest, resume)
    counts = {s: sum(1 for x in pipe.samples if x.split == s) for s in ("train", "valid", "test")}
    log.info("%s: %d classes, samples per split %s, %d left out", pipe.origin, len(pipe.classes), counts, len(pipe.skipped))

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
    summary.update(balance_info or {})
    if resume_ckpt is not None:
        summary["resumed_from"] = str(resume_ckpt)
    if not counts["test"]:  # summary.json then has no test/* keys, never the valid split's numbers under them
        log.warning("no test split: the run reports no test result (valid-split numbers are val/* and eval-valid/)")
        summary["test"] = "no test split"
    t0 = time.time()
    logits_fn = None

    def head_fitter() -> HeadOnEmbeddings:
        return HeadOnEmbeddings(module, pipe.samples, pipe.classes, pipe.preprocess.to_dict(), cache_dir=cfg.finetune.embedding_cache,
                                batch_size=cfg.data.eval_batch_size or cfg.data.batch_size, num_workers=cfg.data.num_workers)

    if cfg.finetune.mode == "embeddings":
        head = head_fitter()
        summary.update(head.fit(run_dir / CHECKPOINTS))
        summary["epochs_completed"] = 0
        logits_fn = head.logits
    else:
        if cfg.finetune.head_init == "embeddings" and resume_ckpt is None and writer:
            # LP-FT: the head starts where a linear probe on the frozen features ends, so
            # fine-tuning the backbone is not driven by a random head's large early gradients.
            # (Under DDP rank zero fits it; DDP copies rank zero's weights to every rank.)
            probe = head_fitter().fit_head(("train", "valid"))
            log.info("head initialised on cached embeddings: train acc %.4f, valid acc %.4f (l2 %g)",
                     probe["train/acc"], probe.get("val/acc", float("nan")), probe["head/l2"])
            summary.update({f"head_init/{k.replace('/', '_')}": v for k, v in probe.items() if k.endswith("/acc")})
        summary.update(_fit_with_trainer(cfg, module, pipe, run_dir, resume_ckpt, sampler))
    if not writer:
        _leave_process_group()
        return summary  # evaluation, summary and report: once, by rank zero
    summary["fit_seconds"] = round(time.time() - t0, 1)
    best_path = summary["best_checkpoint"]
    if cfg.evaluate_after_fit and Path(best_path).is_file():
        # Per-class tables, plots, a temperature and decision thresholds chosen on valid (stored in
        # best.ckpt, so predict and exports use them). Runs after trainer.test because it rewrites best.ckpt.
        from birdvision.evaluation.evaluator import evaluate_checkpoint

        split = "test" if counts["test"] else "valid"
        ev = evaluate_checkpoint(
            best_path, split, run_dir / ("eval" if split == "test" else "eval-valid"),
            batch_size=cfg.data.eval_batch_size or cfg.data.batch_size, num_workers=cfg.data.num_workers,
            logits_fn=logits_fn, threshold=cfg.threshold,
        )
        # evaluate's numbers under their stage/metric keys; a key the trainer logged keeps the trainer's value
        # (test/acc: the same weights, equal by test; val/acc: the last epoch's, not best.ckpt's)
        stage_keys = [metric_key(split, k) for k in ("acc", "acc5", "f1", "ece", "ece_calibrated", "ece_crossfit",
                                                      "acc_species")]
        summary.update({"evaluated_split": split, "temperature": ev["temperature"]})
        summary.update({k: ev[k] for k in (*stage_keys, "thresholds/fpr_pooled", "thresholds/recall_macro",
                                            "thresholds/background_silent", "nocall/generated_silent",
                                            "abstain/threshold", "abstain/auroc_generated")
                        if ev.get(k) is not None and k not in summary})
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
