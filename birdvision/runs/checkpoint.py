"""Reading and amending birdvision checkpoints (the model plus everything needed to run it).

Checkpoints and exported models may come from anywhere, so what a file says about itself
is checked (:func:`check_meta`) before anything is built or allocated from it: the class
list, the preprocessing spec with every size bounded, the temperature. A file that fails
is refused with one :class:`CheckpointError` naming the file and the field.

PyTorch is imported only by the functions that read or write checkpoints, so the metadata
checks (which exported ONNX models go through too) run in a process without it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from birdvision.runs.artifacts import atomic_path
from birdvision.runs.folders import RunError, find_checkpoint, run_dir_of, run_lock
from birdvision.spec import Spec, as_float, as_int, float_field
from birdvision.spec import from_dict as spec_from_dict

if TYPE_CHECKING:
    import torch

REQUIRED_HPARAMS = ("backbone", "classes", "preprocess")

MAX_CLASSES = 100_000


class CheckpointError(RunError):
    """A file that is not a usable birdvision checkpoint or exported model."""


# ----------------------------------------------------------------------------- metadata checks


def _check_decisions(meta: dict[str, Any], classes: list[str]) -> None:
    """The no-call class, per-class thresholds and the abstention threshold, when present."""
    bg = meta.get("background_class")
    if bg is not None and bg not in classes:
        raise ValueError(f"background_class={bg!r} is not one of the classes")
    th = meta.get("thresholds")
    if th is not None:
        if not isinstance(th, dict) or not isinstance(th.get("values"), (list, tuple)):
            raise ValueError("thresholds is not a mapping with a 'values' list")
        if len(th["values"]) != len(classes):
            raise ValueError(f"thresholds lists {len(th['values'])} values for {len(classes)} classes")
        for i, v in enumerate(th["values"]):
            if v is not None and (as_float(v) is None or not 0.0 <= float(v) <= 1.0):
                raise ValueError(f"thresholds.values[{i}]={v!r} (expected a probability in [0, 1] or null)")
    ab = meta.get("abstain")
    if ab is not None:
        if not isinstance(ab, dict):
            raise ValueError("abstain is not a mapping")
        float_field(ab, "threshold", 0.0, 1.0, "abstain.")


def check_meta(meta: Any, source: str | Path) -> None:
    """Refuse model metadata (a checkpoint's hyper_parameters, an export's metadata) that cannot describe a
    runnable birdvision model: classes, preprocessing spec (sizes bounded), temperature, and the decision
    values stored after training (no-call class, per-class thresholds, abstention threshold).

    Raises :class:`CheckpointError` naming ``source`` and the offending field.
    """
    try:
        if not isinstance(meta, dict):
            raise ValueError(f"metadata is a {type(meta).__name__}, not a mapping")
        classes = meta.get("classes")
        if not isinstance(classes, (list, tuple)):
            raise ValueError(f"classes is a {type(classes).__name__}, not a list of species names")
        if not 2 <= len(classes) <= MAX_CLASSES:
            raise ValueError(f"classes lists {len(classes)} names (expected 2 to {MAX_CLASSES})")
        if not all(isinstance(c, str) and c.strip() for c in classes):
            bad = next(c for c in classes if not (isinstance(c, str) and c.strip()))
            raise ValueError(f"classes holds {bad!r}; every class must be a non-empty string")
        if len(set(classes)) != len(classes):
            seen: set[str] = set()
            dup = next(c for c in classes if c in seen or seen.add(c))
            raise ValueError(f"classes lists {dup!r} twice")
        if meta.get("temperature") is not None:
            float_field(meta, "temperature", 0.0, 1e6, "", lo_open=True)
        _check_decisions(meta, list(classes))
        if meta.get("in_chans") is not None and as_int(meta["in_chans"]) not in (1, 3):
            raise ValueError(f"in_chans={meta['in_chans']!r} (expected 1 or 3)")
        spec_from_dict(meta.get("preprocess"))
    except ValueError as e:
        raise CheckpointError(f"{source}: impossible model metadata: {e}") from None


def _first_line(e: BaseException, limit: int = 200) -> str:
    """A short, single-line description of an exception from a library."""
    text = str(e)
    for marker in ("WeightsUnpickler error:", "Unsupported global:"):
        if marker in text:  # torch's advice to load with weights_only=False is exactly what we must not do
            text = text.split(marker, 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.split(" Please use `torch.serialization")[0]
    return f"{type(e).__name__}: {line[:limit]}" if line else type(e).__name__


def _check_weights(ck: dict[str, Any], p: Path) -> None:
    """The state_dict is tensors by name, and its output layer has one row per class."""
    import torch

    from birdvision.models import get_spec

    hp = ck["hyper_parameters"]
    sd = ck["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"{p}: state_dict is not a mapping of parameter names to tensors")
    if not isinstance(hp["backbone"], str):
        raise CheckpointError(f"{p}: backbone={hp['backbone']!r} is not a backbone name")
    try:
        spec = get_spec(hp["backbone"])
    except ValueError as e:
        raise CheckpointError(f"{p}: {e}") from None
    head = f"net.{spec.classifier}.weight"
    if head not in sd:
        raise CheckpointError(f"{p}: weights do not match backbone {hp['backbone']} (no output layer {head})")
    if sd[head].ndim != 2 or sd[head].shape[0] != len(hp["classes"]):
        raise CheckpointError(f"{p}: the class list has {len(hp['classes'])} names but the output layer {head} "
                              f"has shape {tuple(sd[head].shape)}")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, refusing files that are not (sane) birdvision checkpoints.

    Read with ``torch.load(weights_only=True)``: tensors and plain containers only, never pickled code.
    """
    import torch

    p = find_checkpoint(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise CheckpointError(f"{p} cannot be read ({e.strerror or e})") from None
    if size == 0:
        raise CheckpointError(f"{p} is empty (0 bytes), not a checkpoint")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or damaged files
        raise CheckpointError(f"{p} is not a readable PyTorch checkpoint: truncated, damaged or holding "
                              f"more than tensors ({_first_line(e)})") from None
    hp = ck.get("hyper_parameters") if isinstance(ck, dict) else None
    if not isinstance(hp, dict) or any(k not in hp for k in REQUIRED_HPARAMS) or "state_dict" not in ck:
        missing = f"no {', '.join(REQUIRED_HPARAMS)} in its hyper_parameters"
        if isinstance(ck, dict) and ck and all(isinstance(v, torch.Tensor) for v in ck.values()):
            what = f"a bare state_dict of {len(ck)} tensors, with no class list or preprocessing spec"
        elif isinstance(ck, dict) and "state_dict" in ck:
            what = f"a checkpoint of another model: {missing}"
        else:
            what = missing
        raise CheckpointError(f"{p} is not a birdvision checkpoint ({what}); train one with python -m birdvision.fit")
    check_meta(hp, p)
    _check_weights(ck, p)
    return ck


@dataclass
class Checkpoint:
    """A checkpoint read once (:func:`open_checkpoint`): its file, its checked hyperparameters and typed
    preprocessing spec, and the classifier built from the weights already in memory."""

    path: Path
    raw: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        """The hyperparameters (classes, preprocess spec, backbone, temperature, decisions, ...)."""
        return dict(self.raw["hyper_parameters"])

    @property
    def spec(self) -> Spec:
        return spec_from_dict(self.raw["hyper_parameters"]["preprocess"])

    @property
    def run_dir(self) -> Path | None:
        return run_dir_of(self.path)

    def classifier(self, map_location: str | torch.device = "cpu"):
        """A :class:`BirdClassifier` in eval mode, without fetching pretrained weights."""
        return _build_classifier(self.path, self.raw, map_location)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Find (a run folder's best), read and check a checkpoint once; every command reads its model through this."""
    p = find_checkpoint(path)
    return Checkpoint(p, read_checkpoint(p))


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The hyperparameters of a checkpoint (classes, preprocess spec, backbone, temperature, ...)."""
    return open_checkpoint(path).meta


def load_classifier(path: str | Path | Checkpoint, map_location: str | torch.device = "cpu"):
    """A :class:`BirdClassifier` in eval mode from a checkpoint, without fetching pretrained weights."""
    ck = path if isinstance(path, Checkpoint) else open_checkpoint(path)
    return ck.classifier(map_location)


def _build_classifier(p: Path, ck: dict[str, Any], map_location: str | torch.device):
    from birdvision.training.module import BirdClassifier

    hp = dict(ck["hyper_parameters"])
    try:
        model = BirdClassifier(**hp, load_weights=False)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p}: cannot build the model its hyper_parameters describe ({_first_line(e)})") from None
    own = model.state_dict()
    sd = ck["state_dict"]
    wrong = [k for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        more = f" and {len(wrong) - 1} more" if len(wrong) > 1 else ""
        raise CheckpointError(f"{p}: weights do not match backbone {hp['backbone']}: {k} has shape "
                              f"{tuple(sd[k].shape)}, the model needs {tuple(own[k].shape)}{more}")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k.startswith("net.")]
    unexpected = [k for k in unexpected if k.startswith("net.")]
    if missing or unexpected:
        what = (f"missing {len(missing)} tensor(s) ({', '.join(missing[:3])})" if missing
                else f"{len(unexpected)} unknown tensor(s) ({', '.join(unexpected[:3])})")
        raise CheckpointError(f"{p}: weights do not match backbone {hp['backbone']}: {what}")
    return model.to(map_location).eval()


def update_hparams(path: str | Path, **values: Any) -> Path:
    """Store values fitted after training (temperature, thresholds, abstention) in a checkpoint's hyperparameters,
    atomically, holding its run folder (if it is in one). The result must still pass :func:`check_meta`."""
    import torch

    p = find_checkpoint(path)
    run = run_dir_of(p)
    with run_lock(run) if run is not None else contextlib.nullcontext():
        ck = read_checkpoint(p)
        ck["hyper_parameters"].update(values)
        check_meta(ck["hyper_parameters"], p)
        with atomic_path(p) as tmp:
            torch.save(ck, tmp)
    return p
