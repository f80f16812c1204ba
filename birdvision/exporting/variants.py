"""Variants derived from the FP32 network: INT8 (static QDQ), FP16, and the ORT format for mobile.

INT8 and FP16 transform the bare network only (``input`` -> ``logits``); the float
pre/post-processing graphs are composed around the result afterwards (see ``graphs``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from birdvision.exporting import ExportError
from birdvision.exporting.graphs import NET_INPUT
from birdvision.exporting.options import CALIBRATION_METHODS
from birdvision.runs.artifacts import atomic_path

log = logging.getLogger(__name__)


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over an array of network inputs."""

    def __init__(self, inputs: np.ndarray, batch_size: int) -> None:
        self.inputs, self.batch_size = inputs, batch_size
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = ({NET_INPUT: self.inputs[i : i + self.batch_size]}
                        for i in range(0, len(self.inputs), self.batch_size))
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def float_ends(model: onnx.ModelProto) -> list[str]:
    """Names of the first convolution and of the classifier (the last Gemm/MatMul): the nodes left float."""
    nodes = list(model.graph.node)
    first = next((n.name for n in nodes if n.op_type == "Conv"), None)
    last = next((n.name for n in reversed(nodes) if n.op_type in ("Gemm", "MatMul")), None)
    return [n for n in (first, last) if n]


def quantize_int8(net: onnx.ModelProto, calibration: np.ndarray, *, method: str = "minmax",
                  symmetric_activations: bool = False, batch_size: int = 8,
                  keep_ends_float: bool = False) -> onnx.ModelProto:
    """Static INT8 QDQ quantization of the bare network, calibrated on ``calibration`` inputs.

    Weights are signed and per output channel (accuracy); activations unsigned by default,
    the pairing ONNX Runtime's x86/ARM kernels run fastest (U8S8). ``symmetric_activations``
    gives signed, zero-centred activations, which TensorRT requires for explicit
    (Q/DQ) quantization. ``keep_ends_float`` leaves the first convolution (raw pixels, three
    channels: little to gain, and its quantized input grid is the coarsest) and the classifier
    (logits: every rounding moves a decision) in float; measured on the fine-tuned Lite0, that
    took the INT8 test-accuracy drop from 0.46 to 0.00 points.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ExportError("the calibration set is empty: INT8 quantization needs at least one sample")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ExportError(f"unknown calibration.method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = Path(tmp) / "net.onnx", Path(tmp) / "net.pre.onnx", Path(tmp) / "net.int8.onnx"
        onnx.save(net, str(src))
        # Folds constants, fuses BatchNorm into Conv and infers shapes so the quantizer sees
        # the graph it will actually run; quantizing the unfused graph leaves extra Q/DQ pairs.
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        exclude = float_ends(onnx.load(str(pre))) if keep_ends_float else []
        quantize_static(
            str(pre), str(out), _Batches(calibration.astype(np.float32), batch_size),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=methods[method], nodes_to_exclude=exclude,
            extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True},
        )
        return onnx.load(str(out))


def convert_fp16(net: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and arithmetic with FP32 input and output (``keep_io_types``).

    Uses the converter shipped inside onnxruntime (``onnxruntime.transformers.float16``),
    so no extra package is needed. On CPUs without FP16 kernels ONNX Runtime inserts casts:
    the file halves, the speed does not improve; FP16 is for GPUs (Jetson) and NPUs.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(onnx.ModelProto.FromString(net.SerializeToString()), keep_io_types=True)


def convert_to_ort(onnx_path: Path, ort_path: Path) -> Path:
    """The ORT-format file onnxruntime-mobile loads, via onnxruntime's own converter tool.

    ``Fixed`` optimization style: optimized once here, nothing left to do on the phone;
    the converter leaves out x86-only layout transforms, so the file runs on ARM too.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in" / "model.onnx"
        src.parent.mkdir()
        shutil.copyfile(onnx_path, src)
        out_dir = Path(tmp) / "out"
        with contextlib.redirect_stdout(io.StringIO()) as captured:
            try:
                convert_onnx_models_to_ort(src, output_dir=out_dir, optimization_styles=[OptimizationStyle.Fixed])
            except Exception as e:  # noqa: BLE001 - the tool raises bare Exceptions
                raise ExportError(f"ORT-format conversion of {onnx_path.name} failed: {e}") from None
        made = sorted(out_dir.rglob("*.ort"))
        if not made:
            raise ExportError(f"ORT-format conversion of {onnx_path.name} wrote no .ort file: {captured.getvalue()[-300:]}")
        with atomic_path(ort_path) as tmp_target:
            shutil.copyfile(made[0], tmp_target)
    return ort_path
