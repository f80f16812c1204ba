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
or the waveform windows of the ONNX gate. FP32 thresholds apply to the float files.

INT8 variants (``model.int8.tflite``, ``model.int8.pte``): PT2E static quantization with each
converter's own quantizer (INT8 activations per tensor, INT8 weights per output channel),
calibrated on the calibration inputs of ``model.int8.onnx`` fed as the file takes them. Only
the network is quantized: the uint8 -> float normalisation (or the mel frontend), the
temperature and the softmax stay float, and with ``keep_ends_float`` so do the first
convolution and the classifier. They are gated with the INT8 threshold (accuracy drop).
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
from birdvision.exporting.graphs import static_same_padding
from birdvision.spec import from_dict as spec_from_dict

log = logging.getLogger(__name__)

# format -> (module that must import, pip extra, file name, what it is)
PHONE_FORMATS = {
    "tflite": ("litert_torch", "litert", "model.tflite", "LiteRT (TensorFlow Lite) via litert-torch"),
    "pte": ("executorch", "executorch", "model.pte", "ExecuTorch with the XNNPACK backend"),
    "tflite_int8": ("litert_torch", "litert", "model.int8.tflite", "INT8 LiteRT via litert-torch's PT2E quantizer"),
    "pte_int8": ("executorch", "executorch", "model.int8.pte", "INT8 ExecuTorch via the XNNPACK quantizer"),
}


def runtime_of(fmt: str) -> str:
    """``tflite_int8`` -> ``tflite``: the runtime (and converter) a phone format belongs to."""
    return fmt.removesuffix("_int8")


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
        spec = spec_from_dict(preprocess)
        self.audio = spec.is_audio
        self.net = static_same_padding(net, spec.net_input_shape(in_chans)).eval()
        self.frontend = spec.frontend()
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
    spec = spec_from_dict(preprocess)
    if spec.is_audio:
        return torch.zeros(1, spec.clip_samples)
    s = spec.size
    return torch.zeros(1, s, s, 3, dtype=torch.uint8)


def fixed_size_photos(photos: list[np.ndarray], preprocess: dict[str, Any]) -> np.ndarray:
    """Decoded photos squashed to the model's size by birdvision's resize, rounded to ``uint8 [N, size, size, 3]``."""
    from birdvision.data.photos.transforms import resize_photo

    s, interp = int(preprocess["size"]), str(preprocess.get("interpolation", "bilinear"))
    out = []
    for p in photos:
        x = torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1).float()
        out.append(resize_photo(x, s, interp).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    return np.stack(out)


def _quantizer(runtime: str, method: str = "histogram", symmetric_activations: bool = False) -> Any:
    """Each converter's own PT2E quantizer: INT8 activations (per tensor), INT8 weights per output channel.

    Activations follow ``calibration`` like ``model.int8.onnx``: ``method="minmax"`` observes plain
    min/max (others keep the quantizers' histogram observer), and ``symmetric_activations`` centres
    them on zero (per-tensor symmetric), the pairing that keeps fine-tuned EfficientNet-Lite within
    the INT8 gate in ONNX Runtime.
    """
    if runtime == "pte":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

        return XNNPACKQuantizer().set_global(_activations(get_symmetric_quantization_config(is_per_channel=True),
                                                          method, symmetric_activations))
    from litert_torch.quantize import pt2e_quantizer

    return pt2e_quantizer.PT2EQuantizer().set_global(_activations(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True), method, symmetric_activations))


def _activations(config: Any, method: str, symmetric: bool) -> Any:
    """``config`` (a quantizer's dataclass) with its activation specs observed by ``method``, symmetric or not."""
    import dataclasses

    from torchao.quantization.pt2e.observer import MinMaxObserver

    def spec(s: Any) -> Any:
        if s is None:
            return s
        changes: dict[str, Any] = {}
        if method == "minmax":
            changes["observer_or_fake_quant_ctr"] = MinMaxObserver.with_args(eps=2 ** -12)
        if symmetric:
            changes["qscheme"] = torch.per_tensor_symmetric
        return dataclasses.replace(s, **changes)

    return dataclasses.replace(config, input_activation=spec(config.input_activation),
                               output_activation=spec(config.output_activation))


def _module_path(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def float_nodes(gm: torch.fx.GraphModule, keep_ends_float: bool) -> set[str]:
    """Operations the quantizer must leave float: everything outside ``net`` (the uint8 -> float normalisation or
    the mel frontend, the temperature and the softmax), and with ``keep_ends_float`` the network's first
    convolution and its last linear layer (the classifier), as in ``model.int8.onnx``."""
    ops = [n for n in gm.graph.nodes if n.op == "call_function"]
    in_net = [n for n in ops if _module_path(n).split(".")[0] == "net"]
    keep = {n.name for n in ops} - {n.name for n in in_net}
    if keep_ends_float:
        convs = [n for n in in_net if n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)]
        linears = [n for n in in_net if n.target in (torch.ops.aten.linear.default, torch.ops.aten.addmm.default)]
        keep |= {n.name for n in (convs[:1] + linears[-1:])}
    return keep


def _only_net(quantizer: Any, keep: set[str]) -> Any:
    """``quantizer`` with the ``keep`` operations pre-marked as annotated, so its annotators pass them by (the
    usual way to leave a node float in PT2E; it works for both quantizers, which skip annotated nodes)."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, Quantizer

    class NetOnly(Quantizer):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            return quantizer.transform_for_annotation(model)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for n in model.graph.nodes:
                if n.name in keep:
                    n.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
            return quantizer.annotate(model)

        def validate(self, model: torch.fx.GraphModule) -> None:
            quantizer.validate(model)

    return NetOnly()


def quantize_module(runtime: str, module: AppModule, example: torch.Tensor, calibration: np.ndarray, *,
                    keep_ends_float: bool = True, method: str = "histogram",
                    symmetric_activations: bool = False) -> torch.fx.GraphModule:
    """PT2E static INT8 of the network inside ``module`` with ``runtime``'s quantizer, calibrated one input at a
    time on ``calibration`` (uint8 ``[N, size, size, 3]`` photos or float32 ``[N, T]`` windows, what the file
    takes). Returns the converted graph (Q/DQ around the network's operations), ready for the converter."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if len(calibration) == 0:
        raise ExportError("the calibration set is empty: INT8 quantization needs at least one sample")
    with torch.no_grad():
        gm = torch.export.export(module.eval(), (example,)).module()
        prepared = prepare_pt2e(gm, _only_net(_quantizer(runtime, method, symmetric_activations),
                                              float_nodes(gm, keep_ends_float)))
        for x in calibration:
            prepared(torch.from_numpy(np.ascontiguousarray(x[None])))
        # LiteRT's converter reads the Q/DQ pairs itself (its own tests keep quantize unfolded)
        return convert_pt2e(prepared, fold_quantize=runtime != "tflite")


def _eval(module: nn.Module) -> nn.Module:
    """``module.eval()``; a converted PT2E graph is already in inference form (and refuses ``eval()``)."""
    return module if isinstance(module, torch.fx.GraphModule) else module.eval()


def export_tflite(module: nn.Module, example: torch.Tensor, path: Path, *, int8: bool = False,
                  method: str = "histogram", symmetric_activations: bool = False) -> Path:
    import litert_torch

    from birdvision.runs.artifacts import atomic_path

    kw: dict[str, Any] = {}
    if int8:
        from litert_torch.quantize.quant_config import QuantConfig

        kw["quant_config"] = QuantConfig(pt2e_quantizer=_quantizer("tflite", method, symmetric_activations))
    try:
        edge = litert_torch.convert(_eval(module), (example,), **kw)
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds
        raise ExportError(f"LiteRT conversion failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    with atomic_path(path) as tmp:
        edge.export(str(tmp))
    return path


def export_pte(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from birdvision.runs.artifacts import atomic_path

    try:
        with torch.no_grad():
            program = torch.export.export(_eval(module), (example,))
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


def build(fmt: str, module: AppModule, preprocess: dict[str, Any], out_dir: Path, *,
          calibration: np.ndarray | None = None, keep_ends_float: bool = True, method: str = "histogram",
          symmetric_activations: bool = False) -> Path:
    """Write ``model.tflite`` / ``model.pte``, or their INT8 variants (``*_int8``, calibrated on ``calibration``)."""
    name, runtime = PHONE_FORMATS[fmt][2], runtime_of(fmt)
    example = example_input(preprocess)
    int8 = fmt.endswith("_int8")
    if int8:
        if calibration is None:
            raise ExportError(f"{name}: INT8 needs calibration inputs")
        try:
            module = quantize_module(runtime, module, example, calibration, keep_ends_float=keep_ends_float,
                                     method=method, symmetric_activations=symmetric_activations)
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - torch.export / the quantizers raise many kinds
            raise ExportError(f"{name}: PT2E quantization failed: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300]}") from None
    if runtime == "tflite":
        return export_tflite(module, example, out_dir / name, int8=int8, method=method,
                             symmetric_activations=symmetric_activations)
    return export_pte(module, example, out_dir / name)


def session(fmt: str, path: Path, threads: int = 0) -> Any:
    return LiteRTSession(path, threads) if runtime_of(fmt) == "tflite" else ExecuTorchSession(path, threads)
