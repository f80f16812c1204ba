"""Phone runtimes beside ONNX: LiteRT (``model.tflite``) and ExecuTorch (``model.pte``), each gated in its own runtime.

Both are optional extras (``pip install birdvision[litert]`` / ``birdvision[executorch]``);
``format=all`` builds whichever is installed and says which is not. Each file is one
PyTorch module, :class:`AppModule`, converted as a whole: the app's input in,
``softmax(logits / temperature)`` out, like ``model.onnx``. The differences:

- photos go in as ``uint8 [1, size, size, 3]`` RGB, resized by the app: these runtimes
  take static shapes, and neither converter lowers the antialiased resize. An app resizes
  with its platform's antialiased bilinear filter (Android ``Bitmap.createScaledBitmap``
  with filtering, iOS Core Image / vImage, Pillow ``BILINEAR``, OpenCV ``INTER_AREA``);
  ``app_parity.json`` reports what those resizers cost on the parity photos;
- call models take one float32 waveform window ``[1, T]``, the mel frontend inside;
- batch 1: a phone classifies one photo or window at a time.

The gate feeds both the checkpoint and the file the same inputs: photos squashed to the
model's size with birdvision's own resize and rounded to uint8 (what a careful app feeds),
or the waveform windows of the ONNX gate. FP32 thresholds apply (the files are float).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from birdvision.exporting import ExportError
from birdvision.exporting.graphs import is_audio, mel_frontend, net_input_shape, static_same_padding

log = logging.getLogger(__name__)

# format -> (module that must import, pip extra, file name, what it is)
PHONE_FORMATS = {
    "tflite": ("litert_torch", "litert", "model.tflite", "LiteRT (TensorFlow Lite) via litert-torch"),
    "pte": ("executorch", "executorch", "model.pte", "ExecuTorch with the XNNPACK backend"),
}


def missing(fmt: str) -> str | None:
    """Why ``fmt`` cannot be built here (its converter is not installed), or None."""
    mod, extra, _, what = PHONE_FORMATS[fmt]
    if importlib.util.find_spec(mod) is None:
        return f"{what}: the {mod} package is not installed (pip install birdvision[{extra}])"
    return None


class AppModule(nn.Module):
    """The whole model as an app runs it: ``uint8 [B, size, size, 3]`` photos (or float32 ``[B, T]`` waveforms) ->
    calibrated probabilities."""

    def __init__(self, net: nn.Module, preprocess: dict[str, Any], temperature: float, in_chans: int = 3) -> None:
        super().__init__()
        self.audio = is_audio(preprocess)
        shape = net_input_shape(preprocess, in_chans)
        self.net = static_same_padding(net, shape).eval()
        self.frontend = mel_frontend(preprocess) if self.audio else None
        std = torch.tensor(preprocess.get("std", [1.0] * 3), dtype=torch.float64)
        mean = torch.tensor(preprocess.get("mean", [0.0] * 3), dtype=torch.float64)
        self.register_buffer("scale", (1.0 / (255.0 * std)).float().view(1, 3, 1, 1))
        self.register_buffer("bias", (-mean / std).float().view(1, 3, 1, 1))
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frontend is not None:
            x = self.frontend(x)
        else:
            x = x.permute(0, 3, 1, 2).float() * self.scale + self.bias
        return torch.softmax(self.net(x) / self.temperature, dim=-1)


def example_input(preprocess: dict[str, Any]) -> torch.Tensor:
    if is_audio(preprocess):
        from birdvision.exporting.graphs import clip_samples

        return torch.zeros(1, clip_samples(preprocess))
    s = int(preprocess["size"])
    return torch.zeros(1, s, s, 3, dtype=torch.uint8)


def fixed_size_photos(photos: list[np.ndarray], preprocess: dict[str, Any]) -> np.ndarray:
    """Decoded photos squashed to the model's size by birdvision's resize, rounded to ``uint8 [N, size, size, 3]``."""
    from birdvision.data.images import resize_photo

    s, interp = int(preprocess["size"]), str(preprocess.get("interpolation", "bilinear"))
    out = []
    for p in photos:
        x = torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1).float()
        out.append(resize_photo(x, s, interp).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    return np.stack(out)


def export_tflite(module: AppModule, example: torch.Tensor, path: Path) -> Path:
    import litert_torch

    from birdvision.artifacts import atomic_path

    try:
        edge = litert_torch.convert(module.eval(), (example,))
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds
        raise ExportError(f"LiteRT conversion failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    with atomic_path(path) as tmp:
        edge.export(str(tmp))
    return path


def export_pte(module: AppModule, example: torch.Tensor, path: Path) -> Path:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from birdvision.artifacts import atomic_path

    try:
        with torch.no_grad():
            program = torch.export.export(module.eval(), (example,))
        et = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"ExecuTorch export failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(et.buffer)
    return path


class _Input:
    def __init__(self, name: str) -> None:
        self.name = name


class LiteRTSession:
    """A LiteRT interpreter behind the two ONNX Runtime calls the parity gate makes."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._it = Interpreter(model_path=str(path), num_threads=threads or None)
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]
        self._out = self._it.get_output_details()[0]

    def get_inputs(self) -> list[_Input]:
        return [_Input(str(self._in["name"]))]

    def run(self, _outputs: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        rows = []
        for x in next(iter(feed.values())):
            self._it.set_tensor(self._in["index"], np.ascontiguousarray(x[None], dtype=self._in["dtype"]))
            self._it.invoke()
            rows.append(np.array(self._it.get_tensor(self._out["index"])[0]))
        return [np.stack(rows)]


class ExecuTorchSession:
    """An ExecuTorch program (portable runtime + XNNPACK) behind the parity gate's two calls."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        from executorch.runtime import Runtime

        self._method = Runtime.get().load_program(str(path)).load_method("forward")

    def get_inputs(self) -> list[_Input]:
        return [_Input("input")]

    def run(self, _outputs: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        rows = [self._method.execute([torch.from_numpy(np.ascontiguousarray(x[None]))])[0].numpy()[0]
                for x in next(iter(feed.values()))]
        return [np.stack(rows)]


def build(fmt: str, module: AppModule, preprocess: dict[str, Any], out_dir: Path) -> Path:
    """Write ``model.tflite`` or ``model.pte`` for ``module``."""
    name = PHONE_FORMATS[fmt][2]
    example = example_input(preprocess)
    if fmt == "tflite":
        return export_tflite(module, example, out_dir / name)
    return export_pte(module, example, out_dir / name)


def session(fmt: str, path: Path, threads: int = 0) -> Any:
    return LiteRTSession(path, threads) if fmt == "tflite" else ExecuTorchSession(path, threads)
