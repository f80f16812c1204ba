"""The export schema: every key ``python -m birdvision.export`` accepts, with its default and why."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from birdvision.exporting import ExportError

# 17: the mel frontend's STFT needs it; 23: the newest opset this ONNX Runtime / exporter pair was tested with.
OPSET_RANGE = (17, 23)
MAX_BATCH = 4096
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class ParityConfig:
    """The gate every exported file passes through."""

    n: int = 256  # samples from the run's valid split (all of them when fewer)
    data: str | None = None  # a folder of photos (class sub-folders give labels) or a manifest CSV
    split: str = "valid"  # the split of the run's manifest the samples come from
    batch_size: int = 16  # batch size of the reference and exported runs
    fp32_min_top1_agreement: float = 1.0  # FP32 files: share of samples with the checkpoint's top-1 (1.0 = all)
    fp32_max_abs_diff: float = 1e-4  # on probabilities
    max_acc_drop: float = 0.01  # INT8 / FP16: 0.01 = one accuracy point


@dataclass
class CalibrationConfig:
    """INT8 calibration inputs."""

    n: int = 128  # samples the INT8 ranges are measured on
    data: str | None = None  # default: the run's manifest, rows of `split`
    split: str = "valid"  # the split of the run's manifest they come from
    method: str = "minmax"  # minmax | entropy | percentile (ONNX); LiteRT / ExecuTorch: minmax, others their histogram observer
    batch_size: int = 8  # batch size while calibrating
    # signed, zero-centred activations (S8S8) or unsigned ones (U8S8, the pairing x86/ARM kernels run fastest);
    # null = the backbone's default: signed for EfficientNet-Lite (fine-tuned Lite0 on the real photos drops
    # 0.5 points with them, 1.2-2.2 with U8S8), unsigned otherwise
    symmetric_activations: bool | None = None
    # the first convolution and the classifier stay float: fine-tuned Lite0 on the real photos, INT8 test drop
    # 0.46 -> 0.00 points (valid 1.11 -> 0.56) for a few percent of the speed
    keep_ends_float: bool = True


@dataclass
class TensorRTConfig:
    """Engine build (on a machine with TensorRT and a GPU) or the bundle for the Jetson."""

    max_batch: int = 16  # the engine's largest batch (optimisation profile 1..max_batch)
    workspace_mb: int = 2048  # builder workspace


@dataclass
class AppParityConfig:
    """After the gates: model.onnx fed each platform's own decode (and resize), compared with birdvision.predict."""

    enabled: bool = True  # run it on the parity photos (or on `data`), write app_parity.json; photo models only
    data: str | None = None  # a photo folder (SPLIT/CLASS/photo or CLASS/photo) or a manifest; default: the parity photos
    splits: str = "valid,test"  # with `data`: the splits (sub-folders or manifest rows) to use
    platforms: str = "all"  # pillow,pillow_bilinear,opencv,opencv_linear,opencv_area,browser (OpenCV if installed)
    min_agreement: float = 0.99  # top-1 agreement each platform that feeds the decoded photo must reach
    browser_csv: str | None = None  # predictions (file,species) written by a browser app, compared as "browser"


@dataclass
class ExportConfig:
    """Everything ``python -m birdvision.export`` reads."""

    ckpt: str | None = None  # a .ckpt or a run folder (its best checkpoint)
    # onnx | int8 | fp16 | ort | tensorrt | tflite | pte | tflite_int8 | pte_int8 | all (model.onnx is always built)
    format: str = "onnx"
    output_dir: str | None = None  # default: <run folder>/export
    preprocess_in_graph: bool = True  # uint8 photos of any size (resized in the graph) / raw waveforms in; a bare variant too
    opset: int = 17  # 17: TensorRT 8.5+ on JetPack 5/6 and every current ONNX Runtime read it
    threads: int = 0  # ONNX Runtime intra-op threads for the gate; 0 = its default
    parity: ParityConfig = field(default_factory=ParityConfig)  # the gate
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)  # INT8 ranges
    tensorrt: TensorRTConfig = field(default_factory=TensorRTConfig)  # the Jetson engine
    app_parity: AppParityConfig = field(default_factory=AppParityConfig)  # what apps' decoders and resizers cost


def check_options(cfg: Any) -> None:
    """Ranges the schema's types cannot express, checked before the checkpoint is read; a bad value names its key."""
    from birdvision.data.manifest import SPLITS

    def num(key: str) -> Any:
        obj: Any = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        return obj

    def need(key: str, ok: bool, want: str) -> None:
        if not ok:
            raise ExportError(f"{key}={num(key)!r}: expected {want}")

    def frac(key: str) -> None:
        v = num(key)
        need(key, isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0, "a number in [0, 1]")

    lo, hi = OPSET_RANGE
    need("opset", lo <= cfg.opset <= hi, f"an ONNX opset in [{lo}, {hi}]")
    need("threads", 0 <= cfg.threads <= 1024, "an integer in [0, 1024] (0 = ONNX Runtime's default)")
    for section in ("parity", "calibration"):
        need(f"{section}.n", 1 <= num(f"{section}.n") <= 1_000_000, "an integer >= 1 (samples; all when fewer)")
        need(f"{section}.batch_size", 1 <= num(f"{section}.batch_size") <= MAX_BATCH, f"an integer in [1, {MAX_BATCH}]")
        need(f"{section}.split", num(f"{section}.split") in SPLITS, f"one of {', '.join(SPLITS)}")
    frac("parity.fp32_min_top1_agreement")
    frac("app_parity.min_agreement")
    frac("parity.max_acc_drop")
    v = cfg.parity.fp32_max_abs_diff
    need("parity.fp32_max_abs_diff", isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0,
         "a probability difference in [0, 1]")
    if cfg.calibration.method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration.method {cfg.calibration.method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    need("tensorrt.max_batch", 1 <= cfg.tensorrt.max_batch <= MAX_BATCH, f"an integer in [1, {MAX_BATCH}]")
    need("tensorrt.workspace_mb", 1 <= cfg.tensorrt.workspace_mb <= 1 << 20, "megabytes in [1, 1048576]")
