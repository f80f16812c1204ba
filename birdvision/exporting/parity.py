"""The parity gate: the checkpoint in PyTorch against each exported file in ONNX Runtime.

Both engines see identical inputs (see ``samples``). FP32 files must agree on every
top-1 and within a tiny probability difference; INT8 and FP16 may move probabilities
but must not lose more than a point of accuracy. A file that fails is renamed
``*.FAILED.*`` so nothing downstream picks it up as a good model, and its report says why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdvision.data.photos.decode import batches_by_size
from birdvision.exporting import ParityError
from birdvision.runs.artifacts import write_json
from birdvision.spec import from_dict as spec_from_dict

log = logging.getLogger(__name__)


@dataclass
class Thresholds:
    """Pass criteria; accuracy drops are fractions (0.01 = one percentage point)."""

    fp32_min_top1_agreement: float = 1.0
    fp32_max_abs_diff: float = 1e-4
    max_acc_drop: float = 0.01


@dataclass
class Reference:
    """PyTorch's answers on the parity inputs, plus the bare network's inputs for reuse."""

    probs: np.ndarray  # [N, K]
    net_inputs: np.ndarray  # normalised NCHW photos or log-mel features, float32
    raw_inputs: np.ndarray | list[np.ndarray]  # decoded uint8 [H, W, 3] photos (any sizes) or float32 waveforms [N, T]
    labels: np.ndarray


def net_inputs_of(raw: np.ndarray | list[np.ndarray], preprocess: dict[str, Any], batch_size: int = 32) -> np.ndarray:
    """What the bare network eats: resized and normalised NCHW photos, or the mel frontend's output.

    Photos go through :func:`birdvision.data.photos.transforms.photo_tensor`, the evaluation transform itself
    (antialiased float resize of the full decode, then ``(x / 255 - mean) / std``).
    """
    spec = spec_from_dict(preprocess)
    make = spec.input_maker()
    return np.concatenate([make(raw[i : i + batch_size]).numpy() for i in range(0, len(raw), batch_size)])


def torch_probs(model: torch.nn.Module, net_inputs: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Calibrated probabilities from a BirdClassifier (``predict_proba``) in batches."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(net_inputs), batch_size):
            out.append(model.predict_proba(torch.from_numpy(net_inputs[i : i + batch_size])).float().numpy())
    return np.concatenate(out)


def reference(model: torch.nn.Module, raw: np.ndarray | list[np.ndarray], labels: np.ndarray, preprocess: dict[str, Any],
              batch_size: int = 16) -> Reference:
    """Run the checkpoint once; every exported file is compared with this."""
    net_in = net_inputs_of(raw, preprocess)
    return Reference(torch_probs(model, net_in, batch_size), net_in, raw, labels)


def ort_probs(session: Any, x: np.ndarray | list[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """Run an ONNX Runtime session over ``x`` (an array, or photos of mixed sizes) in batches."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: b})[0]
                           for _, b in batches_by_size(x, batch_size)]).astype(np.float32)


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float | None:
    known = labels >= 0
    if not known.any():
        return None
    return float((probs[known].argmax(1) == labels[known]).mean())


def report_name(model_path: Path, failed: bool = False) -> str:
    """``model.onnx`` -> ``parity.json``, ``model.int8.onnx`` -> ``parity.int8.json``, ``model.ort`` -> ``parity.ort.json``."""
    middle = model_path.name[len("model"):] if model_path.name.startswith("model") else "." + model_path.name
    middle = middle.removesuffix(".onnx")
    return f"parity{middle}{'.FAILED' if failed else ''}.json"


def failed_name(model_path: Path) -> Path:
    """``model.int8.onnx`` -> ``model.int8.FAILED.onnx``."""
    return model_path.with_name(f"{model_path.stem}.FAILED{model_path.suffix}")


@dataclass
class ParityReport:
    """What ``parity*.json`` holds."""

    file: str
    precision: str
    input_kind: str
    n: int
    n_labelled: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    acc_torch: float | None
    acc_export: float | None
    acc_drop: float | None
    passed: bool
    failures: list[str]
    thresholds: dict[str, float]
    data: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(ref: Reference, probs: np.ndarray, *, precision: str, thresholds: Thresholds) -> tuple[dict, list[str]]:
    """Agreement, probability differences, accuracies and the list of failed criteria."""
    diff = np.abs(probs - ref.probs)
    agree = float((probs.argmax(1) == ref.probs.argmax(1)).mean())
    acc_t, acc_e = _accuracy(ref.probs, ref.labels), _accuracy(probs, ref.labels)
    drop = None if acc_t is None or acc_e is None else acc_t - acc_e
    fails = []
    if precision == "fp32":
        if agree < thresholds.fp32_min_top1_agreement:
            fails.append(f"top-1 agreement {agree:.4f} < {thresholds.fp32_min_top1_agreement}")
        if float(diff.max()) > thresholds.fp32_max_abs_diff:
            fails.append(f"max |dp| {float(diff.max()):.2e} > {thresholds.fp32_max_abs_diff:.0e}")
    elif drop is not None:
        if drop > thresholds.max_acc_drop + 1e-12:
            fails.append(f"accuracy drop {drop * 100:.2f} points > {thresholds.max_acc_drop * 100:.2f}")
    elif agree < 1.0 - thresholds.max_acc_drop:  # unlabelled data: agreement stands in for accuracy
        fails.append(f"top-1 agreement {agree:.4f} < {1.0 - thresholds.max_acc_drop:.4f} (no labels to compare accuracy)")
    stats = {
        "n": int(len(probs)), "n_labelled": int((ref.labels >= 0).sum()), "top1_agreement": agree,
        "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "acc_torch": acc_t, "acc_export": acc_e, "acc_drop": drop,
    }
    return stats, fails


def gate(model_path: Path, session: Any, feed: np.ndarray | list[np.ndarray], ref: Reference, *, precision: str, input_kind: str,
         thresholds: Thresholds, data: str, batch_size: int = 16) -> ParityReport:
    """Compare one exported file with the reference, write its report, and fail loudly.

    On failure the model file is renamed ``*.FAILED.*``, the report is written as
    ``parity*.FAILED.json``, and :class:`ParityError` is raised.
    """
    t0 = time.perf_counter()
    probs = ort_probs(session, feed, batch_size)
    stats, fails = evaluate(ref, probs, precision=precision, thresholds=thresholds)
    report = ParityReport(
        file=model_path.name, precision=precision, input_kind=input_kind, passed=not fails, failures=fails,
        thresholds=asdict(thresholds), data=data, seconds=round(time.perf_counter() - t0, 3), **stats,
    )
    if fails:
        bad = failed_name(model_path)
        model_path.replace(bad)
        write_json(model_path.parent / report_name(model_path, failed=True), report.as_dict() | {"file": bad.name})
        raise ParityError(f"parity gate failed for {model_path.name} ({'; '.join(fails)}); renamed it to {bad.name}")
    write_json(model_path.parent / report_name(model_path), report.as_dict())
    log.info("parity %s: top-1 agreement %.4f, max |dp| %.2e, acc torch %s export %s", model_path.name,
             stats["top1_agreement"], stats["max_abs_diff"], _pct(stats["acc_torch"]), _pct(stats["acc_export"]))
    return report


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"
