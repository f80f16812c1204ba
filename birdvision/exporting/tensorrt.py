"""TensorRT for the Jetson: build engines where TensorRT and a GPU exist, else leave a ready bundle.

The bundle (written everywhere, so it can be copied to the device):

- ``model.trt.onnx``: the bare FP32 network with softmax, float ``input [B, 3, H, W]``
  (TensorRT 8.x does not take uint8 inputs, so normalisation stays on the host or in a
  CUDA pre-step), opset as requested (17 works with TensorRT 8.5+);
- ``model.trt.int8.onnx``: the same network with symmetric INT8 Q/DQ nodes calibrated
  on validation samples: TensorRT's *explicit* quantization reads the scales from the
  graph, so ``trtexec --int8`` needs no calibrator;
- ``trt_calib/batch_*.npy``: the calibration batches, for TensorRT's own entropy
  calibrator (``python -m birdvision.exporting.tensorrt model.trt.onnx trt_calib``);
- ``trtexec.sh``: the exact commands.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

import numpy as np

from birdvision.exporting.graphs import NET_INPUT
from birdvision.runs.artifacts import atomic_path, write_text
from birdvision.spec import from_dict as spec_from_dict

log = logging.getLogger(__name__)


def tensorrt_available() -> bool:
    """Whether engines can be built here (the ``tensorrt`` package and a CUDA device)."""
    try:
        import tensorrt  # noqa: F401
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def write_calibration(calib: np.ndarray, folder: Path, batch_size: int) -> list[Path]:
    """Calibration inputs as ``batch_000.npy``, ... (float32 NCHW, already normalised)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, i in enumerate(range(0, len(calib), batch_size)):
        p = folder / f"batch_{k:03d}.npy"
        with atomic_path(p) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(calib[i : i + batch_size], dtype=np.float32))
        out.append(p)
    return out


def trtexec_script(shape: tuple[int, int, int], max_batch: int, *, backbone: str, reason: str,
                   input_note: str, fp32_passed: bool = True, int8_passed: bool = True) -> str:
    """The shell script that builds FP16 and INT8 engines with trtexec on the device.

    Only files that passed their parity gate are named: a failed one was renamed ``*.FAILED.onnx``, and the
    script says so in a comment instead of calling a file that is not there (or one that should not ship).
    """
    c, h, w = shape
    shapes = (f"--minShapes={NET_INPUT}:1x{c}x{h}x{w} --optShapes={NET_INPUT}:1x{c}x{h}x{w} "
              f"--maxShapes={NET_INPUT}:{max_batch}x{c}x{h}x{w}")
    if fp32_passed:
        fp16 = '# FP16 engine\n"$TRTEXEC" --onnx=model.trt.onnx --fp16 $SHAPES --saveEngine=model.fp16.engine\n'
        alternative = ("# Alternative INT8 engine with TensorRT's entropy calibrator over trt_calib/*.npy "
                       "(needs birdvision installed):\n"
                       f"#   python -m birdvision.exporting.tensorrt model.trt.onnx trt_calib --max-batch {max_batch}\n")
    else:
        fp16 = ("# FP16 engine: not built, model.trt.onnx failed its parity gate (renamed model.trt.FAILED.onnx, "
                "see parity.trt.FAILED.json)\n")
        alternative = ""
    if int8_passed:
        int8 = ("# INT8 engine, explicit quantization: scales come from the Q/DQ nodes (calibrated on validation "
                "samples);\n# --fp16 lets layers without Q/DQ run in FP16 rather than FP32.\n"
                '"$TRTEXEC" --onnx=model.trt.int8.onnx --int8 --fp16 $SHAPES --saveEngine=model.int8.engine\n')
    else:
        int8 = ("# INT8 engine from Q/DQ: not built, model.trt.int8.onnx failed its parity gate (renamed "
                "model.trt.int8.FAILED.onnx, see parity.trt.int8.FAILED.json)"
                + ("; the entropy-calibrated alternative below may still reach the accuracy.\n" if fp32_passed else ".\n"))
    if not (fp32_passed or int8_passed):
        int8 += 'echo "no TensorRT-ready ONNX file passed its parity gate: nothing to build" >&2\nexit 1\n'
    return f"""#!/usr/bin/env bash
# TensorRT engines for the birdvision {backbone} export. Run on the Jetson, in this folder.
# Written here because {reason}.
# Input: float32 {NET_INPUT} [B, {c}, {h}, {w}]: {input_note}.
# Output: probabilities [B, num_classes] in the order of labels.txt.
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-/usr/src/tensorrt/bin/trtexec}}"
SHAPES={shlex.quote(shapes)}

{fp16}
{int8}
{alternative}"""


def build_engines(onnx_path: Path, calib_dir: Path | None, out_dir: Path, *, max_batch: int = 16,
                  workspace_mb: int = 2048, fp16: bool = True, int8: bool = True) -> list[Path]:
    """Build ``model.fp16.engine`` and (with calibration batches) ``model.int8.engine`` with the TensorRT API."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    out: list[Path] = []
    batches = sorted(calib_dir.glob("batch_*.npy")) if calib_dir else []
    for precision in [p for p, on in (("fp16", fp16), ("int8", int8 and bool(batches))) if on]:
        builder = trt.Builder(logger)
        flags = 0
        if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
        inp = network.get_input(0)
        _, c, h, w = inp.shape
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, c, h, w), (1, c, h, w), (max_batch, c, h, w))
        config.add_optimization_profile(profile)
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = _calibrator(trt, batches, out_dir / "int8.calib.cache")
            config.set_calibration_profile(profile)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise RuntimeError(f"TensorRT failed to build the {precision} engine")
        path = out_dir / f"model.{precision}.engine"
        with atomic_path(path) as tmp:
            tmp.write_bytes(bytes(engine))
        out.append(path)
    return out


def _calibrator(trt, batches: list[Path], cache: Path):
    """An entropy calibrator reading the ``.npy`` batches (device copies via PyTorch, no pycuda)."""
    import torch

    class NpyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.files, self.i, self.buf = batches, 0, None

        def get_batch_size(self) -> int:
            return int(np.load(self.files[0]).shape[0])

        def get_batch(self, names):  # noqa: ANN001 - TensorRT's signature
            if self.i >= len(self.files):
                return None
            self.buf = torch.from_numpy(np.load(self.files[self.i])).cuda()
            self.i += 1
            return [int(self.buf.data_ptr())]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:  # noqa: ANN001
            cache.write_bytes(bytes(data))

    return NpyCalibrator()


def input_note(preprocess: dict) -> str:
    """How to make the engine's input from a photo or a waveform window, for the script's header."""
    return spec_from_dict(preprocess).describe()


def write_script(out_dir: Path, shape: tuple[int, int, int], max_batch: int, backbone: str, reason: str,
                 preprocess: dict, *, fp32_passed: bool = True, int8_passed: bool = True) -> Path:
    """Write ``trtexec.sh`` (executable), naming only the files that passed their parity gates."""
    p = write_text(out_dir / "trtexec.sh", trtexec_script(shape, max_batch, backbone=backbone, reason=reason,
                                                          input_note=input_note(preprocess), fp32_passed=fp32_passed,
                                                          int8_passed=int8_passed))
    p.chmod(0o755)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m birdvision.exporting.tensorrt model.trt.onnx trt_calib``: build engines on the device."""
    ap = argparse.ArgumentParser(prog="python -m birdvision.exporting.tensorrt", description=main.__doc__)
    ap.add_argument("onnx", type=Path)
    ap.add_argument("calib_dir", type=Path, nargs="?")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--workspace-mb", type=int, default=2048)
    args = ap.parse_args(argv)
    if not tensorrt_available():
        print("error: TensorRT and a CUDA device are needed to build engines (use trtexec.sh on the Jetson)")
        return 2
    for p in build_engines(args.onnx, args.calib_dir, args.onnx.parent, max_batch=args.max_batch,
                           workspace_mb=args.workspace_mb):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
