"""``python -m birdvision.evaluate ckpt=PATH split=test``: honest metrics, plots and calibration for a checkpoint.

The model runs once over the evaluated split (and once over the validation split to fit
the softmax temperature and choose the decision thresholds, and for photo models over generated
non-bird images to choose the abstention threshold); everything else is computed from those
logits by :mod:`birdvision.reports`. By default the samples come from the run's own
``manifest.csv``, so the test split is exactly the one training never saw.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from birdvision.artifacts import OutputError, check_output_dir, check_output_file, write_json, write_text
from birdvision.checkpoint import load_classifier, read_checkpoint, update_hparams
from birdvision.config import ConfigError, ThresholdConfig, parse_cli
from birdvision.console import console, run_cli, setup_logging
from birdvision.data.manifest import SPLITS, DataSourceError, ManifestError, Sample, manifest_digest
from birdvision.data.photos.decode import ImageLoadError
from birdvision.data.sources import discover, from_manifest
from birdvision.data.splits import assign_splits
from birdvision.reports import calibration as cal
from birdvision.reports import metrics as M
from birdvision.reports import plots
from birdvision.reports import thresholds as TH
from birdvision.runs import CHECKPOINTS, RunError, find_checkpoint
from birdvision.spec import AudioSpec, ImageSpec, Spec
from birdvision.spec import from_dict as spec_from_dict

log = logging.getLogger("birdvision.evaluate")


class EvaluationError(ValueError):
    """Data that cannot be evaluated with a checkpoint (unknown labels, an empty split, ...)."""


PRED_COLUMNS = ["item", "true", "predicted", "confidence", "loss"]
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
    batch_size: int = 64
    num_workers: int = 0
    top_losses: int = 16  # images in the top-losses grid
    device: str = "auto"  # auto | cpu | cuda
    report: bool = True  # rewrite RUN/report.html afterwards (checkpoints inside a run folder only)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)  # targets of the decision thresholds


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
    _device(device)


# ----------------------------------------------------------------------------- where things are


def run_dir_of(ckpt: Path) -> Path | None:
    """The run folder of a checkpoint in ``RUN/checkpoints/``, else None."""
    run = ckpt.parent.parent
    return run if ckpt.parent.name == CHECKPOINTS and run.is_dir() else None


def default_output_dir(ckpt: Path, split: str) -> Path:
    """``RUN/eval`` for the test split, ``RUN/eval-SPLIT`` otherwise, so a valid run never overwrites the test one."""
    run = run_dir_of(ckpt)
    name = "eval" if split == "test" else f"eval-{split}"
    return (run / name) if run is not None else Path(name)


def _run_seed(run: Path | None) -> int:
    try:
        import yaml

        return int((yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}).get("seed", 42))  # type: ignore[operator]
    except Exception as e:  # no run folder, no config, or no seed: the fit default
        if run is not None and (run / "config.yaml").is_file():
            log.warning("%s is unreadable (%s); splits the manifest leaves open use seed 42",
                        run / "config.yaml", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return 42


def load_samples(ckpt: Path, data: str | None, digest: str | None = None) -> tuple[list[Sample], str]:
    """Active samples with their splits, and where they came from (for the report).

    Without ``data`` the run's own ``manifest.csv`` is read, and it must still be the one the
    checkpoint was trained on (``digest``, the checkpoint's ``manifest_digest``): a truncated or
    edited manifest could put training samples in the test split without a word.
    """
    run = run_dir_of(ckpt)
    own = data is None
    if data is None:
        if run is None or not (run / "manifest.csv").is_file():
            raise EvaluationError(
                f"{ckpt} is not inside a run folder with a manifest.csv; pass data=MANIFEST.csv or data=PHOTO_FOLDER"
            )
        data = str(run / "manifest.csv")
    p = Path(data).expanduser()
    seed = _run_seed(run)
    if p.is_file():
        found = from_manifest(p)
    elif p.is_dir():
        found = discover(p)
    else:
        raise EvaluationError(f"data={data}: no such manifest file or folder")
    assign_splits(found.samples, valid_fraction=0.15, test_fraction=0.15, seed=seed, where=found.origin)
    if own and digest and manifest_digest(found.samples) != digest:
        raise EvaluationError(
            f"{p} is not the manifest {ckpt.name} was trained on (its digest differs from the checkpoint's "
            f"manifest_digest {digest}): damaged or edited since training. Restore it, or pass data={p} "
            "to evaluate on it as it is"
        )
    return found.samples, found.origin


def read_class_map(path: str | Path) -> dict[str, str | None]:
    """``data label -> model label`` from JSON (an object) or a two-column CSV; an empty target drops the label."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EvaluationError(f"class_map={path}: file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EvaluationError(f"class_map={path}: not a text file (byte {e.start} is not UTF-8)") from None
    if p.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise EvaluationError(f"class_map={path}: not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise EvaluationError(f"class_map={path}: expected a JSON object {{\"data label\": \"model label\"}}")
        return {str(k): (str(v) if v not in (None, "") else None) for k, v in obj.items()}
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["data", "model"], ["from", "to"], ["data_label", "model_label"]):
        rows = rows[1:]
    bad = [i for i, r in enumerate(rows, 1) if len(r) < 1 or len(r) > 2]
    if bad:
        raise EvaluationError(f"class_map={path}: expected two columns 'data label,model label' (row {bad[0]})")
    return {r[0].strip(): (r[1].strip() or None) if len(r) == 2 else None for r in rows}


def apply_class_map(samples: list[Sample], mapping: dict[str, str | None]) -> list[Sample]:
    """Relabel samples; labels mapped to nothing are left out of the evaluation."""
    out = []
    for s in samples:
        if s.label in mapping:
            target = mapping[s.label]
            if target is None:
                continue
            s = Sample(**{**s.__dict__, "label": target})
        out.append(s)
    return out


def check_labels(samples: list[Sample], classes: list[str], source: str) -> None:
    """Refuse data whose labels the model does not know, naming them and the nearest model classes."""
    known = set(classes)
    unknown = sorted({s.label for s in samples} - known)
    if not unknown:
        return
    lower = {c.lower(): c for c in classes}
    hints = []
    for u in unknown[:5]:
        close = [lower[u.lower()]] if u.lower() in lower else difflib.get_close_matches(u, classes, n=1, cutoff=0.6)
        hints.append(f"{u!r}" + (f" (model has {close[0]!r})" if close else ""))
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    raise EvaluationError(
        f"{len(unknown)} label(s) in {source} are not among the checkpoint's {len(classes)} classes: "
        f"{', '.join(hints)}{more}. Evaluate with the data the model was trained on, or pass "
        "class_map=FILE (JSON {\"data label\": \"model label\"}, null to drop a label)"
    )


def _split_samples(samples: list[Sample], split: str, source: str) -> list[Sample]:
    chosen = [s for s in samples if s.split == split and s.active]
    if not chosen:
        counts = ", ".join(f"{k}={sum(1 for s in samples if s.split == k)}" for k in SPLITS)
        raise EvaluationError(f"split {split!r} of {source} has no samples ({counts})")
    return chosen


# ----------------------------------------------------------------------------- running the model


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={name!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: CUDA is not available on this machine")
    return dev


@torch.no_grad()
def compute_logits(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    batch_transform: torch.nn.Module | None,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits (temperature 1) and integer labels for every item of ``dataset``, in order."""
    model = model.to(device).eval()
    if batch_transform is not None:
        batch_transform = batch_transform.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    out, ys = [], []
    for x, y in loader:
        x = x.to(device)
        if batch_transform is not None:
            x = batch_transform(x)
        out.append(model(x).float().cpu())
        ys.append(torch.as_tensor(y))
    if not out:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return torch.cat(out).numpy(), torch.cat(ys).numpy().astype(np.int64)


def _item_name(dataset: Dataset, i: int) -> str:
    """A file name for item ``i`` when the dataset can tell (image datasets map items to samples 1:1)."""
    describe = getattr(dataset, "describe", None)
    if callable(describe):
        return str(describe(i))
    samples = getattr(dataset, "samples", None)
    if samples is not None and len(samples) == len(dataset):  # type: ignore[arg-type]
        s = samples[i]
        name = Path(s.path).name
        return f"{name}@{s.start_s:g}s" if getattr(s, "start_s", None) is not None else name
    return f"#{i}"


def _display_image(x: torch.Tensor, spec: Spec) -> np.ndarray:
    """Undo the normalisation of a photo (to HWC in [0, 1]); show a spectrogram's first channel as is."""
    if spec.is_audio:
        return x[0].cpu().numpy()
    mean = torch.tensor(spec.mean).view(-1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1)
    return (x.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


@torch.no_grad()
def _top_loss_images(dataset: Dataset, idx: list[int], spec: Spec,
                     batch_transform: torch.nn.Module | None) -> list[np.ndarray]:
    images = []
    for i in idx:
        x = dataset[i][0]
        if batch_transform is not None:
            x = batch_transform.cpu()(x.unsqueeze(0))[0]
        images.append(_display_image(x, spec))
    return images


# ----------------------------------------------------------------------------- decisions: thresholds, abstention


class _Arrays(Dataset):
    """Photos already at the model's size (uint8 ``[N, H, W, 3]``), normalised like the evaluation transform."""

    def __init__(self, images: np.ndarray, spec: ImageSpec) -> None:
        self.images, self.spec = images, spec

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.spec.network_input([self.images[i]])[0], -1


def _folder_images(folder: str | Path, spec: ImageSpec) -> tuple[np.ndarray, int]:
    """Every decodable image under ``folder`` resized to the model's input (as predict does), and how many were not."""
    from birdvision.data.files import walk_files
    from birdvision.data.photos.decode import IMAGE_SUFFIXES, load_rgb, resize_uint8

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise EvaluationError(f"threshold.ood={folder}: not a folder")
    size, interp = spec.size, spec.interpolation
    images, bad = [], 0
    for f in walk_files(root).files:
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            images.append(resize_uint8(load_rgb(f, draft_size=size), size, interp))
        except (ImageLoadError, OSError, ValueError):
            bad += 1
    if not images:
        raise EvaluationError(f"threshold.ood={folder}: no decodable image ({bad} undecodable)")
    return np.stack(images), bad


def _crossfit(logits: np.ndarray, labels: np.ndarray, ece: float, ece_valid_t: float | None, split: str) -> dict:
    """The ECE a temperature fitted within the evaluated split gives (2-fold cross-fit), and a warning when the
    temperature fitted on valid makes this split's ECE worse: valid is then not drawn like this split."""
    if ece_valid_t is None or split == "valid":
        return {}
    fitted = cal.crossfit_ece(logits, labels)
    if fitted is None:
        return {}
    out = {"ece_crossfit": fitted[0], "temperature_crossfit": fitted[1]}
    if ece_valid_t > ece:
        out["calibration_warning"] = (
            f"the temperature fitted on valid raises {split}'s ECE ({100 * ece:.2f}% -> {100 * ece_valid_t:.2f}%), "
            f"while one fitted within {split} (2-fold cross-fit, T={fitted[1]:.3f}) gives {100 * fitted[0]:.2f}%: "
            f"valid is not drawn like {split} (another source or a domain shift), so its confidences do not "
            "transfer; calibrate on data like the photos the model will see")
        log.warning("%s", out["calibration_warning"])
    return out


def _abstention(ckpt_path: Path, spec: ImageSpec, temperature: float, val_probs: np.ndarray | None,
                probs: np.ndarray, correct: np.ndarray, threshold: Any, *, stored: dict[str, Any] | None,
                batch_size: int, device: torch.device,
                ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any]]:
    """Photo abstention: the threshold chosen on validation photos and generated non-bird images (seeds 0..n-1),
    and the accept/abstain table on the evaluated photos, other generated images (seeds from 100000) and the
    ``threshold.ood`` folder. Without validation probabilities (no calibration) the ``stored`` one is measured."""
    from birdvision.data.photos.ood import KINDS, ood_images

    n = int(threshold.ood_images)
    size = spec.size
    model = load_classifier(ckpt_path)

    def scores(images: np.ndarray) -> np.ndarray:
        logits, _ = compute_logits(model, _Arrays(images, spec), batch_transform=None, batch_size=batch_size,
                                   num_workers=0, device=device)
        return TH.abstain_scores(cal.softmax(logits, temperature))

    pick_imgs, _ = ood_images(n, size, seed=0)
    test_imgs, _ = ood_images(n, size, seed=100_000)
    ood_pick, ood_sets = scores(pick_imgs), {"generated": scores(test_imgs)}
    info: dict[str, Any] = {"generated_images": int(len(test_imgs)), "generated_kinds": list(KINDS)}
    if threshold.ood:
        imgs, bad = _folder_images(threshold.ood, spec)
        ood_sets["folder"] = scores(imgs)
        info.update({"folder": str(threshold.ood), "folder_images": int(len(imgs)), "folder_undecodable": bad})
    source = f"generated non-bird images, {n} of each of {len(KINDS)} kinds (seeds 0..{n - 1})"
    chosen = (TH.choose_abstention(TH.abstain_scores(val_probs), ood_pick, float(threshold.ood_far), ood_source=source)
              if val_probs is not None and len(val_probs) else None)
    known = TH.abstain_scores(probs)
    cands = []
    if chosen is not None:
        cands.append((f"chosen (ood_far={chosen['target_value']:g})", chosen["threshold"]))
    elif stored is not None:
        cands.append(("stored in the checkpoint", float(stored["threshold"])))
    for far in (0.05, 0.1, 0.2, 0.3):
        alt = TH.choose_abstention(TH.abstain_scores(val_probs), ood_pick, far, ood_source=source) \
            if val_probs is not None and len(val_probs) and (chosen is None or far != chosen["target_value"]) else None
        if alt is not None:
            cands.append((f"ood_far={far:g}", alt["threshold"]))
    rows, aurocs = TH.abstention_table(known, correct, ood_sets, cands)
    info.update({f"auroc_{k}": v for k, v in aurocs.items()})
    return chosen, rows, info


NOISE_WINDOWS = 40  # generated no-call windows a call model is checked on (seeds no training file uses)


def _generated_noise(ckpt_path: Path, spec: AudioSpec, temperature: float, chosen: dict[str, Any] | None,
                     classes: list[str], background: str | None, *, batch_size: int, device: torch.device,
                     ) -> dict[str, Any]:
    """How a call model answers windows of generated noise (high-passed like recordings): the share of windows no
    species passes its threshold on (silent in predict), and the share whose best class is the no-call class."""
    from birdvision.data.audio.background import noise_windows
    from birdvision.data.audio.io import highpass

    sr = spec.sample_rate
    waves = noise_windows(NOISE_WINDOWS, spec.clip_seconds, sr)
    if spec.highpass_hz:
        waves = highpass(waves, sr, spec.highpass_hz).astype(np.float32)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(np.ascontiguousarray(waves)), torch.full((len(waves),), -1))
    logits, _ = compute_logits(load_classifier(ckpt_path), ds, batch_transform=spec.frontend(),
                               batch_size=batch_size, num_workers=0, device=device)
    probs = cal.softmax(logits, temperature)
    from birdvision.prediction.tables import stored_decisions

    rows = stored_decisions(probs, classes, chosen, background)
    out: dict[str, Any] = {"nocall/generated_windows": len(waves),
                           "nocall/generated_silent": float(np.mean([not r for r in rows]))}
    if background in classes:
        out["nocall/generated_top1_nocall"] = float(np.mean(probs.argmax(1) == classes.index(background)))
    return out


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
    hp = dict(read_checkpoint(ckpt_path)["hyper_parameters"])
    classes: list[str] = list(hp["classes"])
    preprocess: dict[str, Any] = dict(hp["preprocess"] or {})
    spec = spec_from_dict(preprocess)

    samples, source = load_samples(ckpt_path, None if data is None else str(data), hp.get("manifest_digest"))
    if class_map is not None:
        samples = apply_class_map(samples, read_class_map(class_map))
    evaluated = _split_samples(samples, split, source)
    if not any(Path(s.path).is_file() for s in evaluated):
        raise EvaluationError(f"none of the {len(evaluated)} files of split {split!r} in {source} exists "
                              f"(first: {evaluated[0].path}); were they moved?")
    check_labels(evaluated, classes, f"split {split!r} of {source}")
    calib = [s for s in samples if s.split == "valid" and s.active] if calibrate else []
    check_labels(calib, classes, f"split 'valid' of {source}")

    transform = spec.frontend()
    if logits_fn is None:
        model = load_classifier(ckpt_path)
        run_kw = dict(batch_transform=transform, batch_size=batch_size, num_workers=num_workers, device=_device(device))

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
        chosen_ab, abstain_rows, abstain_info = _abstention(
            ckpt_path, spec, t_use, val_probs, probs_eval, probs_eval.argmax(1) == labels, threshold,
            stored=abstain, batch_size=batch_size, device=_device(device))
        if val_probs is not None:
            abstain = chosen_ab
    noise_info = (_generated_noise(ckpt_path, spec, t_use, chosen, classes, background, batch_size=batch_size,
                                   device=_device(device)) if spec.is_audio else {})
    if temperature is not None:
        update_hparams(ckpt_path, temperature=float(temperature), thresholds=chosen, abstain=abstain)
        log.info("temperature, thresholds%s stored in %s", " and abstention threshold" if abstain else "", ckpt_path)

    # ---- metrics from one confusion matrix
    n = len(classes)
    preds = logits.argmax(axis=1)
    cm = M.confusion_matrix(labels, preds, n)
    rows = M.per_class(cm, classes)
    pairs = M.confused_pairs(cm, classes, limit=100)
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
        "top1": M.topk_accuracy(logits, labels, 1),
        "top5": M.topk_accuracy(logits, labels, 5),
        **M.macro_scores(rows),
        "nll": cal.nll(logits, labels),
        "ece": bins_raw.ece,
        "temperature": temperature if temperature is not None else temperature_before,
        "temperature_fitted": temperature is not None,
        "temperature_previous": temperature_before,
        "nll_calibrated": cal.nll(logits, labels, temperature) if temperature else None,
        "ece_calibrated": bins_cal.ece if bins_cal else None,
        "calibration_split": "valid" if temperature is not None else None,
        "calibration_note": cal_note,
        **_crossfit(logits, labels, bins_raw.ece, bins_cal.ece if bins_cal else None, split),
        "backbone": hp.get("backbone"),
        "recipe": hp.get("recipe"),
        "manifest_digest": hp.get("manifest_digest"),
    }

    if background in classes:
        species_items = labels != classes.index(background)
        result["top1_species"] = (float(np.mean(preds[species_items] == labels[species_items]))
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
        {"item": _item_name(ds, i), "true": classes[labels[i]], "predicted": classes[preds[i]],
         "confidence": round(float(probs[i, preds[i]]), 5), "loss": round(float(losses[i]), 5)}
        for i in range(len(labels))
    ]
    written.append(write_text(out / "predictions.csv", M.csv_text(pred_rows, PRED_COLUMNS)))
    wrong = [int(i) for i in np.argsort(-losses) if preds[i] != labels[i]][:top_losses]
    captions = [
        f"true: {plots._short(classes[labels[i]])}\npred: {plots._short(classes[preds[i]])} ({probs[i, preds[i]]:.2f})"
        f"\n{plots._short(_item_name(ds, i), 30)}"
        for i in wrong
    ]
    images = _top_loss_images(ds, wrong, spec, transform)
    written.append(plots.save_figure(
        plots.top_losses_figure(images, captions, spectrogram=spec.is_audio), out / "top_losses.png"))
    written += M.write_table([pred_rows[i] for i in wrong], out / "top_losses", f"Top losses ({split}, T={t_show:.3f})",
                             PRED_COLUMNS)

    result = _finite(result)
    result["outputs"] = sorted(str(p.relative_to(out)) for p in written)
    write_json(out / "metrics.json", result)
    return result


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
    keys = ("split", "items", "top1", "top5", "macro_f1", "ece", "ece_calibrated", "ece_crossfit", "temperature",
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
        cfg = parse_cli(EvaluateConfig, argv, preset_key="preset", preset_dir="eval_presets", prog="birdvision.evaluate",
                        description="Evaluate a checkpoint: metrics, per-class table, confusion matrix, "
                                    "top losses, calibration (stores the fitted temperature in the checkpoint).")
        run(cfg)
        return 0

    return run_cli(body, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
