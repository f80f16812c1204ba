"""Decisions measured beside the metrics: photo abstention (chosen on validation photos and generated
non-bird images), how a call model answers generated noise, and a cross-fitted calibration check."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from birdvision.data.photos.decode import ImageLoadError
from birdvision.evaluation import EvaluationError
from birdvision.evaluation.logits import compute_logits
from birdvision.reports import calibration as cal
from birdvision.reports import thresholds as TH
from birdvision.spec import AudioSpec, ImageSpec

log = logging.getLogger("birdvision.evaluate")


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


def crossfit(logits: np.ndarray, labels: np.ndarray, ece: float, ece_valid_t: float | None, split: str) -> dict:
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


def abstention(model: torch.nn.Module, spec: ImageSpec, temperature: float, val_probs: np.ndarray | None,
                probs: np.ndarray, correct: np.ndarray, threshold: Any, *, stored: dict[str, Any] | None,
                batch_size: int, device: torch.device,
                ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any]]:
    """Photo abstention: the threshold chosen on validation photos and generated non-bird images (seeds 0..n-1),
    and the accept/abstain table on the evaluated photos, other generated images (seeds from 100000) and the
    ``threshold.ood`` folder. Without validation probabilities (no calibration) the ``stored`` one is measured."""
    from birdvision.data.photos.ood import KINDS, ood_images

    n = int(threshold.ood_images)
    size = spec.size

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


def generated_noise(model: torch.nn.Module, spec: AudioSpec, temperature: float, chosen: dict[str, Any] | None,
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
    logits, _ = compute_logits(model, ds, batch_transform=spec.frontend(),
                               batch_size=batch_size, num_workers=0, device=device)
    probs = cal.softmax(logits, temperature)
    from birdvision.prediction.tables import stored_decisions

    rows = stored_decisions(probs, classes, chosen, background)
    out: dict[str, Any] = {"nocall/generated_windows": len(waves),
                           "nocall/generated_silent": float(np.mean([not r for r in rows]))}
    if background in classes:
        out["nocall/generated_top1_nocall"] = float(np.mean(probs.argmax(1) == classes.index(background)))
    return out
