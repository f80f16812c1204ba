"""The exported graphs: the network from PyTorch, plus small pre- and post-processing graphs, composed.

Why three pieces instead of one traced module: INT8 must quantize only the network
(quantized normalisation or softmax costs accuracy and buys nothing), FP16 must convert
only the network, and the bench compares the network with and without in-graph
preprocessing. So the network (``input`` -> ``logits``) is exported once, each variant
transforms that piece alone, and :func:`compose` prepends the float preprocessing
(uint8 photo -> normalised NCHW, or waveform -> mel) and appends ``softmax(logits / T)``.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from birdvision.exporting import ExportError
from birdvision.runs.artifacts import atomic_path
from birdvision.spec import from_dict as spec_from_dict

log = logging.getLogger(__name__)

NET_INPUT, NET_OUTPUT = "input", "logits"
PROBS = "probabilities"
IMAGE_INPUT, WAVEFORM_INPUT = "image", "waveform"


def export_module(module: nn.Module, example: torch.Tensor, *, input_name: str, output_name: str,
                  opset: int) -> onnx.ModelProto:
    """Export with a dynamic batch axis.

    The TorchScript exporter is tried first: it writes the requested opset natively (17
    keeps TensorRT 8.x on JetPack 5/6 happy) and takes seconds where the dynamo exporter
    takes tens of seconds on this CPU. Newer PyTorch may drop it; then the dynamo exporter
    is used.
    """
    module = module.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, (example,), str(path), dynamo=False, input_names=[input_name], output_names=[output_name],
                    opset_version=opset, dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                    do_constant_folding=True,
                )
        except Exception as e:  # noqa: BLE001 - any exporter failure falls back to the other exporter
            log.info("TorchScript ONNX exporter failed (%s); using the dynamo exporter", e)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                prog = torch.onnx.export(
                    module, (example,), None, dynamo=True, input_names=[input_name], output_names=[output_name],
                    opset_version=opset, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                    external_data=False,
                )
                prog.save(str(path), external_data=False)
        model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return model


class _StaticPadConv(nn.Module):
    """A "same"-padded convolution whose padding was worked out once for a fixed input size."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv, self.pads = conv, pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(F.pad(x, self.pads), c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def static_same_padding(net: nn.Module, shape: tuple[int, int, int]) -> nn.Module:
    """A copy of ``net`` whose TF-style "same" convolutions (timm's ``Conv2dSame``: EfficientNet-Lite) pad by
    constants for inputs of ``shape``, or ``net`` itself when it has none.

    Exported as they are, those convolutions compute their padding from the input's shape in the graph
    (Shape, Gather, Ceil, Pad); the INT8 quantizer then quantizes the pad widths themselves and ONNX
    Runtime cannot fuse the padded convolutions and their neighbours into integer kernels (14 of
    Lite0's 49 convolutions stayed float, behind dequantize/quantize pairs). With constant pads the
    Pad folds into the convolution (:func:`fold_pads_into_convs`). Every exported file is gated
    against the checkpoint, so the two paddings are proven equal at this size.
    """
    try:
        from timm.layers.conv2d_same import Conv2dSame
        from timm.layers.padding import get_same_padding
    except ImportError:  # pragma: no cover - timm ships with birdvision
        return net
    if not any(isinstance(m, Conv2dSame) for m in net.modules()):
        return net
    import copy

    net = copy.deepcopy(net).eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, name=name: sizes.__setitem__(name, tuple(a[0].shape[-2:])))
             for name, m in net.named_modules() if isinstance(m, Conv2dSame)]
    with torch.no_grad():
        net(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    for name, (ih, iw) in sizes.items():
        m = net.get_submodule(name)
        ph = get_same_padding(ih, m.kernel_size[0], m.stride[0], m.dilation[0])
        pw = get_same_padding(iw, m.kernel_size[1], m.stride[1], m.dilation[1])
        parent, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attr,
                _StaticPadConv(m, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))
    return net


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of tensor ``name`` when it depends on constants only (evaluated with ONNX's reference
    runtime), else None."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    need, stack, used_inits = set(), [name], set()
    while stack:
        t = stack.pop()
        if not t or t in inits:
            used_inits.add(t)
            continue
        node = prod.get(t)
        if node is None:  # a graph input: not a constant
            return None
        if id(node) not in need:
            need.add(id(node))
            stack.extend(node.input)
    nodes = [n for n in g.node if id(n) in need]
    if not nodes:
        return numpy_helper.to_array(inits[name]) if name in inits else None
    from onnx.reference import ReferenceEvaluator

    sub = helper.make_graph(nodes, "const", [], [helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None)],
                            [inits[i] for i in used_inits if i])
    try:
        return np.asarray(ReferenceEvaluator(_like(model, sub)).run(None, {})[0])
    except Exception:  # noqa: BLE001 - an op the reference runtime lacks: leave the graph as it is
        return None


def fold_pads_into_convs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Move constant zero padding of the spatial axes into the next Conv's own (possibly asymmetric) ``pads``.

    ONNX Runtime does not fuse a Pad in front of a Conv; left alone, each costs a copy of its
    input, and in an INT8 graph a quantize/dequantize pair around it as well.
    """
    g = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    drop = []
    for pad in [n for n in g.node if n.op_type == "Pad"]:
        attrs = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        users = consumers.get(pad.output[0], [])
        if attrs.get("mode", b"constant") not in (b"constant", "constant") or len(pad.input) > 3 \
                or len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != pad.output[0] \
                or pad.output[0] in outputs:
            continue
        conv = users[0]
        conv_attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if conv_attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        pads = _constant(model, pad.input[1])
        value = _constant(model, pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(1)
        if pads is None or value is None or pads.shape != (8,) or np.any(pads[[0, 1, 4, 5]] != 0) or np.any(pads < 0) \
                or np.any(value != 0):
            continue
        old = list(conv_attrs.get("pads", [0, 0, 0, 0]))
        new = [old[0] + int(pads[2]), old[1] + int(pads[3]), old[2] + int(pads[6]), old[3] + int(pads[7])]
        for a in list(conv.attribute):
            if a.name == "pads":
                conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        drop.append(pad)
    for n in drop:
        g.node.remove(n)
    _remove_unused(model)
    return model


def _remove_unused(model: onnx.ModelProto) -> None:
    """Drop nodes and initializers nothing reads any more (the constant chains that computed pad widths)."""
    g = model.graph
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)


def export_net(net: nn.Module, shape: tuple[int, int, int], opset: int) -> onnx.ModelProto:
    """The bare network: normalised float ``input [B, C, H, W]`` -> ``logits [B, K]`` (padding fixed for ``shape``
    and folded into the convolutions)."""
    model = export_module(static_same_padding(net, shape), torch.zeros(2, *shape), input_name=NET_INPUT,
                          output_name=NET_OUTPUT, opset=opset)
    model = fold_pads_into_convs(model)
    onnx.checker.check_model(model)
    return model


def _like(ref: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    """A model with ``ref``'s IR version and opsets, so onnx.compose accepts the pair."""
    m = helper.make_model(graph, opset_imports=list(ref.opset_import))
    m.ir_version = ref.ir_version
    return m


# ONNX Resize arguments reproducing birdvision.data.photos.transforms.resize_photo (F.interpolate, antialias=True,
# align_corners=False) per interpolation: Pillow-style antialiasing drops the taps outside the image and
# renormalises (exclude_outside=1; without it ONNX Runtime's linear antialias is 14 grey levels off at the
# borders of a 1000 x 640 photo); torch's antialiased bicubic uses Keys' a = -0.5 (ONNX's default is -0.75).
RESIZE_ATTRS = {
    "bilinear": {"mode": "linear", "antialias": 1, "exclude_outside": 1, "coordinate_transformation_mode": "half_pixel"},
    "bicubic": {"mode": "cubic", "antialias": 1, "exclude_outside": 1, "cubic_coeff_a": -0.5,
                "coordinate_transformation_mode": "half_pixel"},
}
RESIZE_OPSET = 18  # Resize's antialias and axes attributes


def image_pre_graph(preprocess: dict[str, Any], ref: onnx.ModelProto, opset: int = RESIZE_OPSET) -> onnx.ModelProto:
    """``image uint8 [B, H, W, 3]`` of any H, W -> normalised ``input float32 [B, 3, size, size]``.

    Cast to float, the antialiased squash resize of :func:`birdvision.data.photos.transforms.resize_photo` (in NHWC:
    half the time of resizing after the transpose on a 12 Mpx photo, same numbers), NHWC -> NCHW, then
    (x / 255 - mean) / std folded into one multiply and one add per channel. A photo already at the model's
    size passes the Resize unchanged. Needs opset 18 (``antialias``); :func:`compose` lifts the network to it.
    """
    from birdvision.data.photos.transforms import resize_mode

    size = int(preprocess["size"])
    interp = str(preprocess.get("interpolation", "bilinear")).lower()
    try:
        resize_mode(interp)
    except ValueError as e:
        raise ExportError(str(e)) from None
    mean = np.asarray(preprocess["mean"], dtype=np.float64)
    std = np.asarray(preprocess["std"], dtype=np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, 3, 1, 1)
    bias = (-mean / std).astype(np.float32).reshape(1, 3, 1, 1)
    nodes = [
        helper.make_node("Cast", [IMAGE_INPUT], ["pre_f"], to=TensorProto.FLOAT, name="pre_cast"),
        helper.make_node("Resize", ["pre_f", "", "", "pre_size"], ["pre_resized"], name="pre_resize", axes=[1, 2],
                         **RESIZE_ATTRS[interp]),
        helper.make_node("Transpose", ["pre_resized"], ["pre_nchw"], perm=[0, 3, 1, 2], name="pre_nchw"),
        helper.make_node("Mul", ["pre_nchw", "pre_scale"], ["pre_scaled"], name="pre_scale"),
        helper.make_node("Add", ["pre_scaled", "pre_bias"], [NET_INPUT], name="pre_bias"),
    ]
    graph = helper.make_graph(
        nodes, "birdvision_image_preprocess",
        [helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.UINT8, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info(NET_INPUT, TensorProto.FLOAT, ["batch", 3, size, size])],
        [numpy_helper.from_array(np.asarray([size, size], dtype=np.int64), "pre_size"),
         numpy_helper.from_array(scale, "pre_scale"), numpy_helper.from_array(bias, "pre_bias")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(int(opset), RESIZE_OPSET))])
    m.ir_version = ref.ir_version
    onnx.checker.check_model(m)
    return m


def audio_pre_graph(preprocess: dict[str, Any], ref: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``waveform float32 [B, T]`` -> log-mel ``input`` via the checkpoint's own MelFrontend."""
    spec = spec_from_dict(preprocess)
    m = export_module(spec.frontend(), torch.zeros(2, spec.clip_samples), input_name=WAVEFORM_INPUT,
                      output_name=NET_INPUT, opset=opset)
    _prefix(m, "pre_", keep={WAVEFORM_INPUT, NET_INPUT})
    m.ir_version = ref.ir_version
    return m


def post_graph(temperature: float, n_classes: int, ref: onnx.ModelProto) -> onnx.ModelProto:
    """``logits`` -> ``probabilities = softmax(logits / temperature)``, in float32."""
    nodes = [
        helper.make_node("Div", [NET_OUTPUT, "post_temperature"], ["post_scaled"], name="post_temperature"),
        helper.make_node("Softmax", ["post_scaled"], [PROBS], axis=-1, name="post_softmax"),
    ]
    graph = helper.make_graph(
        nodes, "birdvision_postprocess",
        [helper.make_tensor_value_info(NET_OUTPUT, TensorProto.FLOAT, ["batch", n_classes])],
        [helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, ["batch", n_classes])],
        [numpy_helper.from_array(np.asarray(temperature, dtype=np.float32), "post_temperature")],
    )
    return _like(ref, graph)


def _prefix(model: onnx.ModelProto, prefix: str, keep: set[str]) -> None:
    """Prefix every internal name so two PyTorch exports can share one graph without collisions."""
    g = model.graph

    def r(name: str) -> str:
        return name if (not name or name in keep) else prefix + name

    for node in g.node:
        node.input[:] = [r(x) for x in node.input]
        node.output[:] = [r(x) for x in node.output]
        node.name = prefix + node.name
    for init in g.initializer:
        init.name = r(init.name)
    for vi in g.value_info:
        vi.name = r(vi.name)


def _default_opset(m: onnx.ModelProto) -> int:
    return next((op.version for op in m.opset_import if op.domain in ("", "ai.onnx")), 0)


def _lift(m: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``m`` rewritten for default-domain ``opset`` by ONNX's version converter when it is older (operators whose
    signature changed, e.g. ReduceMean's axes, are converted, not just relabelled)."""
    if _default_opset(m) >= opset:
        return m
    from onnx import version_converter

    try:
        lifted = version_converter.convert_version(toposort(m), opset)
    except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        raise ExportError(f"cannot lift the network from opset {_default_opset(m)} to {opset} "
                          f"(the in-graph resize needs it): {e}") from None
    lifted.ir_version = max(lifted.ir_version, m.ir_version)
    return lifted


def _align_opsets(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    """Give both models the union of their opset imports (same version per domain is required)."""
    versions: dict[str, int] = {}
    for m in (a, b):
        for op in m.opset_import:
            versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    for m in (a, b):
        del m.opset_import[:]
        m.opset_import.extend(helper.make_opsetid(d, v) for d, v in versions.items())
    a.ir_version = b.ir_version = max(a.ir_version, b.ir_version)


def toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder nodes so each comes after its producers (the FP16 converter appends its Casts at the end)."""
    g = model.graph
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = [n for n in pending if not all(x in ready for x in n.input)]
        done = [n for n in pending if all(x in ready for x in n.input)]
        if not done:
            raise ExportError(f"graph has a cycle or a missing input near node {rest[0].name!r}")
        for n in done:
            ordered.append(n)
            ready.update(n.output)
        pending = rest
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del g.node[:]
    g.node.extend(nodes)
    return model


def compose(pre: onnx.ModelProto | None, net: onnx.ModelProto, post: onnx.ModelProto) -> onnx.ModelProto:
    """``pre`` (optional) -> ``net`` -> ``post`` as one model."""
    net = toposort(onnx.ModelProto.FromString(net.SerializeToString()))
    model = net
    if pre is not None:
        pre = onnx.ModelProto.FromString(pre.SerializeToString())
        model = _lift(model, _default_opset(pre))
        _align_opsets(pre, model)
        model = onnx.compose.merge_models(pre, model, io_map=[(NET_INPUT, NET_INPUT)])
    post = onnx.ModelProto.FromString(post.SerializeToString())
    _align_opsets(model, post)
    model = onnx.compose.merge_models(model, post, io_map=[(NET_OUTPUT, NET_OUTPUT)])
    onnx.checker.check_model(model)
    return model


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write an ONNX model atomically (a reader never sees half a file)."""
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return Path(path)
