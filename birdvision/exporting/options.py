"""The export schema: every key ``python -m birdvision.export`` accepts, with its default and why."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ParityConfig:
    """The gate every exported file passes through."""

    n: int = 256  # samples from the run's valid split (all of them when fewer)
    data: str | None = None  # a folder of photos (class sub-folders give labels) or a manifest CSV
    split: str = "valid"
    batch_size: int = 16
    fp32_min_top1_agreement: float = 1.0
    fp32_max_abs_diff: float = 1e-4  # on probabilities
    max_acc_drop: float = 0.01  # INT8 / FP16: 0.01 = one accuracy point


@dataclass
class CalibrationConfig:
    """INT8 calibration inputs."""

    n: int = 128
    data: str | None = None  # default: the run's manifest, rows of `split`
    split: str = "valid"
    method: str = "minmax"  # minmax | entropy | percentile
    batch_size: int = 8
    # signed, zero-centred activations (S8S8) or unsigned ones (U8S8, the pairing x86/ARM kernels run fastest);
    # null = the backbone's default: signed for EfficientNet-Lite (fine-tuned Lite0 on the real photos drops
    # 0.5 points with them, 1.2-2.2 with U8S8), unsigned otherwise
    symmetric_activations: bool | None = None


@dataclass
class TensorRTConfig:
    """Engine build (on a machine with TensorRT and a GPU) or the bundle for the Jetson."""

    max_batch: int = 16
    workspace_mb: int = 2048


@dataclass
class ExportConfig:
    """Everything ``python -m birdvision.export`` reads."""

    ckpt: str | None = None  # a .ckpt or a run folder (its best checkpoint)
    format: str = "onnx"  # onnx | int8 | fp16 | ort | tensorrt | all (every format needs model.onnx first)
    output_dir: str | None = None  # default: <run folder>/export
    preprocess_in_graph: bool = True  # uint8 photos / raw waveforms in; a bare variant is written too
    opset: int = 17  # 17: TensorRT 8.5+ on JetPack 5/6 and every current ONNX Runtime read it
    threads: int = 0  # ONNX Runtime intra-op threads for the gate; 0 = its default
    parity: ParityConfig = field(default_factory=ParityConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    tensorrt: TensorRTConfig = field(default_factory=TensorRTConfig)
