"""Evaluate a checkpoint on one split: the model runs once over the split (and over valid to fit the
temperature and choose thresholds); every table, plot and ``metrics.json`` comes from those logits."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from birdvision.config import ConfigError, ThresholdConfig
from birdvision.data.manifest import SPLITS
from birdvision.evaluation import EvaluationError
from birdvision.evaluation.decisions import abstention, crossfit, generated_noise
from birdvision.evaluation.logits import compute_logits, device_of, item_name, top_loss_images
from birdvision.evaluation.samples import (
    apply_class_map,
    check_labels,
    default_output_dir,
    load_samples,
    read_class_map,
    split_samples,
)
from birdvision.reports import calibration as cal
from birdvision.reports import metrics as M
from birdvision.reports import plots
from birdvision.reports import thresholds as TH
from birdvision.runs.artifacts import OutputError, check_output_dir, write_json, write_text
from birdvision.runs.checkpoint import open_checkpoint, update_hparams
from birdvision.runs.folders import find_checkpoint
from birdvision.spec import from_dict as spec_from_dict

log = logging.getLogger("birdvision.evaluate")


PRED_COLUMNS = ["item", "true", "predicted", "confidence", "loss"]


MAX_BATCH = 4096


def check_options(*, split: str, batch_size: int, num_workers: int, top_losses: int, device: str) -> None:
    """Ranges the schema's types cannot express, checked before anything is read; a bad value names its key."""
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if not 1 <= batch_size <= MAX_BATCH:
        raise ConfigError(f"batch_size={batch_size}: expected an integer in [1, {MAX_BATCH}]")
    if not 0 <= num_workers <= 256:
        raise ConfigError(f"num_workers={num_workers}: expected an integer in [0, 256] (0 = load in this process)")
    if not 0 <= top_losses <= 1000:
        raise ConfigError(f"top_losses={top_losses}: expected an integer in [0, 1000]")
    device_of(device)



# ----------------------------------------------------------------------------- the evaluation


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: undefined values (an empty calibration split) become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def evaluate_checkpoint(
    ckpt: str | Path,
    split: str = "test",
    output_dir: str | Path | None = None,
    data: str | Path | None = None,
    *,
    class_map: str | Path | None = None,
    calibrate: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
    top_losses: int = 16,
    device: str = "auto",
    logits_fn: Callable[[Dataset], tuple[np.ndarray, np.ndarray]] | None = None,
    threshold: Any = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split; write tables, plots and ``metrics.json`` into ``output_dir``.

    ``logits_fn(dataset) -> (logits, labels)`` replaces running the network, e.g. with a
    head applied to cached embeddings (fit's ``finetune.mode=embeddings``).

    With ``calibrate`` the softmax temperature is fitted on the validation split (LBFGS on
    the NLL of its logits), the per-class thresholds are chosen on the validation split's calibrated
    probabilities for ``threshold.fpr`` / ``threshold.precision`` and, for photo models, the abstention
    threshold for ``threshold.ood_far`` (:mod:`birdvision.reports.thresholds`); all are stored in the
    checkpoint, so ``predict`` and exports use them. Without ``calibrate`` the thresholds the checkpoint
    already has are measured. Returns the content of ``metrics.json`` plus ``outputs`` (the files written).
    """
    threshold = threshold if threshold is not None else ThresholdConfig()
    check_options(split=split, batch_size=batch_size, num_workers=num_workers, top_losses=top_losses, device=device)
    ckpt_path = find_checkpoint(ckpt)
    out = Path(output_dir) if output_dir is not None else default_output_dir(ckpt_path, split)
    check_output_dir(out)
    if calibrate:
        try:  # the fitted temperature is stored in the checkpoint: find out now, not after the work
            check_output_dir(ckpt_path.parent, key="ckpt")
        except OutputError as e:
            raise OutputError(f"{e}; calibrate=true stores the fitted temperature in the checkpoint "
                              "(pass calibrate=false to leave it untouched)") from None
    checkpoint = open_checkpoint(ckpt_path)  # read once; the network is built at most once (model_of)
    model_of = functools.cache(checkpoint.classifier)
    hp = checkpoint.meta
    classes: list[str] = list(hp["classes"])
    preprocess: dict[str, Any] = dict(hp["preprocess"] or {})
    spec = spec_from_dict(preprocess)

    samples, source = load_samples(ckpt_path, None if data is None else str(data), hp.get("manifest_digest"))
    if class_map is not None:
        samples = apply_class_map(samples, read_class_map(class_map))
    evaluated = split_samples(samples, split, source)
    if not any(Path(s.path).is_file() for s in evaluated):
        raise EvaluationError(f"none of the {len(evaluated)} files of split {split!r} in {source} exists "
                              f"(first: {evaluated[0].path}); were they moved?")
    check_labels(evaluated, classes, f"split {split!r} of {source}")
    calib = [s for s in samples if s.split == "valid" and s.active] if calibrate else []
    check_labels(calib, classes, f"split 'valid' of {source}")

    transform = spec.frontend()
    if logits_fn is None:
        model = model_of()
        run_kw = dict(batch_transform=transform, batch_size=batch_size, num_workers=num_workers, device=device_of(device))

        def logits_fn(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
            return compute_logits(model, dataset, **run_kw)

    log.info("evaluating %s on %d %s samples of %s", ckpt_path, len(evaluated), split, source)
    ds = spec.eval_dataset(evaluated, classes)
    logits, labels = logits_fn(ds)
    if len(labels) == 0:
        raise EvaluationError(f"split {split!r} of {source} yields no items to evaluate")

    # ---- calibration: fitted on valid, measured on the evaluated split
    temperature_before = float(hp.get("temperature", 1.0))
    temperature, cal_note = None, ""
    if calibrate:
        if split == "valid":
            val_logits, val_labels = logits, labels
            cal_note = "fitted and measured on the same (valid) split: the ECE after scaling is optimistic"
        elif calib:
            val_logits, val_labels = logits_fn(spec.eval_dataset(calib, classes))
        else:
            val_logits, val_labels = np.zeros((0, len(classes))), np.zeros(0, dtype=np.int64)
        if len(val_labels):
            temperature = cal.fit_temperature(val_logits, val_labels)
            log.info("temperature %.4f fitted on %d valid items", temperature, len(val_labels))
        else:
            cal_note = "no validation samples: temperature and thresholds not fitted"
            log.warning("%s: %s", source, cal_note)

    # ---- decisions: per-class thresholds (and photo abstention) chosen on valid, measured on the evaluated split
    t_use = temperature if temperature is not None else temperature_before
    background = hp.get("background_class")
    val_probs = cal.softmax(val_logits, t_use) if temperature is not None else None
    chosen = hp.get("thresholds")
    if val_probs is not None:
        chosen = TH.choose_thresholds(val_probs, val_labels, classes, fpr=threshold.fpr, precision=threshold.precision,
                                      background=background, split="valid",
                                      presence_fpr=getattr(threshold, "presence_fpr", 0.01))
        n_global = sum(b == "global" for b in chosen["basis"])
        log.info("thresholds for %s=%g chosen on %d valid items; %d class(es) on the global threshold %s",
                 chosen["target"], chosen["target_value"], len(val_labels), n_global,
                 "(no validation positives or target not reachable)" if n_global else "")
    probs_eval = cal.softmax(logits, t_use)
    abstain, abstain_rows, abstain_info = hp.get("abstain"), [], {}
    if not spec.is_audio and int(threshold.ood_images) > 0:
        chosen_ab, abstain_rows, abstain_info = abstention(
            model_of(), spec, t_use, val_probs, probs_eval, probs_eval.argmax(1) == labels, threshold,
            stored=abstain, batch_size=batch_size, device=device_of(device))
        if val_probs is not None:
            abstain = chosen_ab
    noise_info = (generated_noise(model_of(), spec, t_use, chosen, classes, background, batch_size=batch_size,
                                   device=device_of(device)) if spec.is_audio else {})
    if temperature is not None:
        update_hparams(ckpt_path, temperature=float(temperature), thresholds=chosen, abstain=abstain)
        log.info("temperature, thresholds%s stored in %s", " and abstention threshold" if abstain else "", ckpt_path)

    # ---- metrics from one confusion matrix
    n = len(classes)
    preds = logits.argmax(axis=1)
    cm = M.confusion_matrix(labels, preds, n)
    rows = M.per_class(cm, classes)
    pairs = M.confused_pairs(cm, classes, limit=100)
    def key(name: str) -> str:  # stage/metric, as fit logs them: test/acc, val/ece
        return M.metric_key(split, name)

    bins_raw = cal.reliability_bins(cal.softmax(logits), labels)
    bins_cal = cal.reliability_bins(cal.softmax(logits, temperature), labels) if temperature else None
    result: dict[str, Any] = {
        "checkpoint": str(ckpt_path),
        "split": split,
        "data": source,
        "class_map": str(class_map) if class_map else None,
        "items": int(len(labels)),
        "samples": len(evaluated),
        "num_classes": n,
        "classes_in_split": int(sum(1 for r in rows if r.support > 0)),
        key("acc"): M.topk_accuracy(logits, labels, 1),
        key("acc5"): M.topk_accuracy(logits, labels, 5),
        **{key(k): v for k, v in M.macro_scores(rows).items()},  # macro precision, recall, F1
        key("nll"): cal.nll(logits, labels),
        key("ece"): bins_raw.ece,
        "temperature": temperature if temperature is not None else temperature_before,
        "temperature_fitted": temperature is not None,
        "temperature_previous": temperature_before,
        key("nll_calibrated"): cal.nll(logits, labels, temperature) if temperature else None,
        key("ece_calibrated"): bins_cal.ece if bins_cal else None,
        "calibration_split": "valid" if temperature is not None else None,
        "calibration_note": cal_note,
        **{key(k) if k.startswith("ece") else k: v
           for k, v in crossfit(logits, labels, bins_raw.ece, bins_cal.ece if bins_cal else None, split).items()},
        "backbone": hp.get("backbone"),
        "recipe": hp.get("recipe"),
        "manifest_digest": hp.get("manifest_digest"),
    }

    if background in classes:
        species_items = labels != classes.index(background)
        result[key("acc_species")] = (float(np.mean(preds[species_items] == labels[species_items]))
                                  if species_items.any() else None)
        result["background_class"] = background
        if chosen and species_items.any():  # what predict writes for the split's call windows (model decisions)
            from birdvision.prediction.tables import stored_decisions

            decided = stored_decisions(probs_eval[species_items], classes, chosen, background)
            truth = labels[species_items]
            result["presence/threshold"] = chosen.get("presence")
            result["presence/call_windows_with_row"] = float(np.mean([bool(r) for r in decided]))
            result["presence/call_windows_right_species"] = float(np.mean(
                [bool(r) and r[0][0] == classes[t] for r, t in zip(decided, truth, strict=True)]))
    result.update(noise_info)
    threshold_rows: list[TH.ThresholdRow] = []
    if chosen:
        threshold_rows, th_summary = TH.measure_thresholds(probs_eval, labels, classes, chosen)
        result.update({f"thresholds/{k}": v for k, v in th_summary.items()})
        if split == chosen.get("split"):
            result["thresholds/note"] = "chosen and measured on the same split: optimistic"
    if abstain_rows:
        result.update({"abstain/score": TH.ABSTAIN_SCORE, "abstain/threshold": abstain["threshold"] if abstain else None,
                       "abstain/ood_far": abstain["target_value"] if abstain else None})
        result.update({f"abstain/{k}": v for k, v in abstain_info.items()})
        chosen_row = abstain_rows[0] if abstain and abstain_rows else None
        if chosen_row:
            result.update({f"abstain/{k}": v for k, v in chosen_row.items() if k not in ("threshold", "value")})

    # ---- files
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if chosen:
        written += M.write_table(TH.threshold_rows_as_dicts(threshold_rows), out / "thresholds",
                                 f"Per-class thresholds ({chosen['target']}={chosen['target_value']:g} on "
                                 f"{chosen['split']}), measured on {split}", TH.THRESHOLD_COLUMNS)
    if abstain_rows:
        written += M.write_table(abstain_rows, out / "abstention",
                                 f"Accept / abstain ({TH.ABSTAIN_SCORE} after temperature) on {split} photos and "
                                 "non-bird images")
    written += M.write_table(M.rows_as_dicts(rows), out / "per_class", f"Per-class results ({split})",
                             M.columns_of(M.ClassRow))
    written += M.write_table(M.rows_as_dicts(pairs), out / "confused_pairs", f"Most-confused pairs ({split})",
                             M.columns_of(M.ConfusedPair))
    written.append(plots.save_figure(plots.confusion_figure(cm, classes, f"Confusion matrix ({split}, n={len(labels)})"),
                                     out / "confusion_matrix.png"))
    written.append(plots.save_figure(plots.reliability_figure(bins_raw, bins_cal, temperature), out / "reliability.png"))

    t_show = temperature or 1.0
    probs = cal.softmax(logits, t_show)
    losses = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))
    pred_rows = [
        {"item": item_name(ds, i), "true": classes[labels[i]], "predicted": classes[preds[i]],
         "confidence": round(float(probs[i, preds[i]]), 5), "loss": round(float(losses[i]), 5)}
        for i in range(len(labels))
    ]
    written.append(write_text(out / "predictions.csv", M.csv_text(pred_rows, PRED_COLUMNS)))
    wrong = [int(i) for i in np.argsort(-losses) if preds[i] != labels[i]][:top_losses]
    captions = [
        f"true: {plots._short(classes[labels[i]])}\npred: {plots._short(classes[preds[i]])} ({probs[i, preds[i]]:.2f})"
        f"\n{plots._short(item_name(ds, i), 30)}"
        for i in wrong
    ]
    images = top_loss_images(ds, wrong, spec, transform)
    written.append(plots.save_figure(
        plots.top_losses_figure(images, captions, spectrogram=spec.is_audio), out / "top_losses.png"))
    written += M.write_table([pred_rows[i] for i in wrong], out / "top_losses", f"Top losses ({split}, T={t_show:.3f})",
                             PRED_COLUMNS)

    result = _finite(result)
    result["outputs"] = sorted(str(p.relative_to(out)) for p in written)
    write_json(out / "metrics.json", result)
    return result
