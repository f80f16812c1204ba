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
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from birdvision.artifacts import atomic_path
from birdvision.runs import RunError, find_checkpoint, run_dir_of, run_lock

if TYPE_CHECKING:
    import torch

REQUIRED_HPARAMS = ("backbone", "classes", "preprocess")

# Bounds on sizes read from a file, so a damaged or hostile one cannot make us allocate terabytes.
# Far above anything trained here (photos <= 600 px, calls at <= 48 kHz in <= 10 s windows).
MAX_IMAGE_SIDE = 8192
MAX_CLASSES = 100_000
SAMPLE_RATE_RANGE_HZ = (1000, 384_000)
MAX_CLIP_SECONDS = 60.0
MAX_CLIP_SAMPLES = 1 << 24  # 64 MB of float32 per window
MAX_N_FFT = 1 << 16
MAX_N_MELS = 1024
MAX_FRAMES = 1 << 16
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")


class CheckpointError(RunError):
    """A file that is not a usable birdvision checkpoint or exported model."""


# ----------------------------------------------------------------------------- metadata checks


def _as_int(v: Any) -> int | None:
    """``v`` as an int when it is one (an integral float from JSON counts), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return None


def _as_float(v: Any) -> float | None:
    """``v`` as a finite float, else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _int_field(d: dict[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    v = _as_int(d.get(key))
    if v is None or not lo <= v <= hi:
        raise ValueError(f"{where}{key}={d.get(key)!r} (expected an integer in [{lo}, {hi}])")
    return v


def _float_field(d: dict[str, Any], key: str, lo: float, hi: float, where: str, *, lo_open: bool = False) -> float:
    v = _as_float(d.get(key))
    if v is None or not ((lo < v) if lo_open else (lo <= v)) or v > hi:
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ValueError(f"{where}{key}={d.get(key)!r} (expected a number in {rng})")
    return v


def _check_image_spec(pre: dict[str, Any]) -> None:
    _int_field(pre, "size", 1, MAX_IMAGE_SIDE, "preprocess.")
    for key in ("mean", "std"):
        v = pre.get(key)
        if not isinstance(v, (list, tuple)) or len(v) != 3 or any(_as_float(x) is None for x in v):
            raise ValueError(f"preprocess.{key}={v!r} (expected 3 finite numbers, one per RGB channel)")
    if any(float(x) <= 0 for x in pre["std"]):
        raise ValueError(f"preprocess.std={pre['std']!r} (every channel's std must be > 0)")
    interp = pre.get("interpolation", "bilinear")
    if interp not in INTERPOLATIONS:
        raise ValueError(f"preprocess.interpolation={interp!r} (expected one of {', '.join(INTERPOLATIONS)})")


def _check_audio_spec(pre: dict[str, Any]) -> None:
    lo, hi = SAMPLE_RATE_RANGE_HZ
    sr = _int_field(pre, "sample_rate", lo, hi, "preprocess.")
    clip = _float_field(pre, "clip_seconds", 0.0, MAX_CLIP_SECONDS, "preprocess.", lo_open=True)
    samples = int(round(clip * sr))
    if not 1 <= samples <= MAX_CLIP_SAMPLES:
        raise ValueError(f"preprocess: {clip:g} s at {sr} Hz is {samples} samples per window "
                         f"(expected 1 to {MAX_CLIP_SAMPLES})")
    if pre.get("highpass_hz") is not None:
        _float_field(pre, "highpass_hz", 0.0, sr / 2, "preprocess.")
    mel = pre.get("mel")
    if not isinstance(mel, dict):
        raise ValueError(f"preprocess.mel={mel!r} (expected the mel frontend's parameters)")
    if _as_int(mel.get("sample_rate", sr)) != sr:
        raise ValueError(f"preprocess.mel.sample_rate={mel.get('sample_rate')!r} differs from preprocess.sample_rate={sr}")
    n_fft = _int_field(mel, "n_fft", 16, MAX_N_FFT, "preprocess.mel.")
    hop = _int_field(mel, "hop_length", 1, MAX_N_FFT, "preprocess.mel.")
    _int_field(mel, "n_mels", 1, MAX_N_MELS, "preprocess.mel.")
    if n_fft // 2 >= samples:
        raise ValueError(f"preprocess.mel.n_fft={n_fft} is longer than twice the {samples}-sample window")
    if samples // hop + 1 > MAX_FRAMES:
        raise ValueError(f"preprocess.mel.hop_length={hop} gives {samples // hop + 1} frames per window "
                         f"(at most {MAX_FRAMES})")
    f_min = _float_field(mel, "f_min_hz", 0.0, sr / 2, "preprocess.mel.")
    f_max = _float_field(mel, "f_max_hz", 0.0, sr / 2, "preprocess.mel.", lo_open=True)
    if f_min >= f_max:
        raise ValueError(f"preprocess.mel.f_min_hz={f_min:g} is not below f_max_hz={f_max:g}")
    if _as_int(mel.get("in_chans", 1)) not in (1, 3):
        raise ValueError(f"preprocess.mel.in_chans={mel.get('in_chans')!r} (expected 1 or 3)")
    if mel.get("top_db") is not None:
        _float_field(mel, "top_db", 0.0, 1000.0, "preprocess.mel.", lo_open=True)
    if "norm_std_db" in mel:
        _float_field(mel, "norm_std_db", 0.0, 1000.0, "preprocess.mel.", lo_open=True)


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
            if v is not None and (_as_float(v) is None or not 0.0 <= float(v) <= 1.0):
                raise ValueError(f"thresholds.values[{i}]={v!r} (expected a probability in [0, 1] or null)")
    ab = meta.get("abstain")
    if ab is not None:
        if not isinstance(ab, dict):
            raise ValueError("abstain is not a mapping")
        _float_field(ab, "threshold", 0.0, 1.0, "abstain.")


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
            _float_field(meta, "temperature", 0.0, 1e6, "", lo_open=True)
        _check_decisions(meta, list(classes))
        if meta.get("in_chans") is not None and _as_int(meta["in_chans"]) not in (1, 3):
            raise ValueError(f"in_chans={meta['in_chans']!r} (expected 1 or 3)")
        pre = meta.get("preprocess")
        if not isinstance(pre, dict):
            raise ValueError(f"preprocess is a {type(pre).__name__}, not the preprocessing spec")
        kind = pre.get("kind", "image")
        if kind == "image":
            _check_image_spec(pre)
        elif kind == "audio":
            _check_audio_spec(pre)
        else:
            raise ValueError(f"preprocess.kind={kind!r} (expected 'image' or 'audio')")
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


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The hyperparameters of a checkpoint (classes, preprocess spec, backbone, temperature, ...)."""
    return dict(read_checkpoint(path)["hyper_parameters"])


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu"):
    """A :class:`BirdClassifier` in eval mode from a checkpoint, without fetching pretrained weights."""
    from birdvision.module import BirdClassifier

    p = find_checkpoint(path)
    ck = read_checkpoint(p)
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


def set_temperature(path: str | Path, temperature: float) -> Path:
    """Store a fitted softmax temperature in a checkpoint (see :func:`update_hparams`)."""
    return update_hparams(path, temperature=float(temperature))
