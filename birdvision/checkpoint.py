"""Reading and amending birdvision checkpoints (the model plus everything needed to run it)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from birdvision.artifacts import atomic_path
from birdvision.runs import RunError, find_checkpoint, run_dir_of, run_lock

REQUIRED_HPARAMS = ("backbone", "classes", "preprocess")


class CheckpointError(RunError):
    """A file that is not a usable birdvision checkpoint."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, refusing files that are not birdvision checkpoints."""
    p = find_checkpoint(path)
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or damaged files
        raise CheckpointError(f"{p} is not a readable PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    hp = ck.get("hyper_parameters") if isinstance(ck, dict) else None
    if not isinstance(hp, dict) or any(k not in hp for k in REQUIRED_HPARAMS) or "state_dict" not in ck:
        raise CheckpointError(
            f"{p} is not a birdvision checkpoint (no {', '.join(REQUIRED_HPARAMS)} in its hyper_parameters); "
            "train one with python -m birdvision.fit"
        )
    return ck


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The hyperparameters of a checkpoint (classes, preprocess spec, backbone, temperature, ...)."""
    return dict(read_checkpoint(path)["hyper_parameters"])


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu"):
    """A :class:`BirdClassifier` in eval mode from a checkpoint, without fetching pretrained weights."""
    from birdvision.module import BirdClassifier

    p = find_checkpoint(path)
    ck = read_checkpoint(p)
    hp = dict(ck["hyper_parameters"])
    model = BirdClassifier(**hp, load_weights=False)
    missing, unexpected = model.load_state_dict(ck["state_dict"], strict=False)
    bad = [k for k in missing if k.startswith("net.")] + [k for k in unexpected if k.startswith("net.")]
    if bad:
        raise CheckpointError(f"{p}: weights do not match backbone {hp['backbone']} ({bad[:3]} ...)")
    return model.to(map_location).eval()


def set_temperature(path: str | Path, temperature: float) -> Path:
    """Store a fitted softmax temperature in a checkpoint, atomically, holding its run folder (if it is in one)."""
    p = find_checkpoint(path)
    run = run_dir_of(p)
    with run_lock(run) if run is not None else contextlib.nullcontext():
        ck = read_checkpoint(p)
        ck["hyper_parameters"]["temperature"] = float(temperature)
        with atomic_path(p) as tmp:
            torch.save(ck, tmp)
    return p
