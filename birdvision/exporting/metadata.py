"""What travels inside every exported model: classes, preprocessing, provenance, temperature, decisions.

Decisions are the values chosen on validation data after training: the per-class thresholds
(``thresholds``), the photo abstention threshold (``abstain``) and the no-call class of a call model
(``background_class``); they are present only when the checkpoint has them.

Stored as ONNX ``metadata_props`` (string -> string; structured values as JSON) so any
ONNX Runtime, including onnxruntime-mobile reading the ``.ort`` file, can recover how
to feed the model and how to name its outputs without the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from birdvision import __version__
from birdvision.checkpoint import CheckpointError, check_meta

if TYPE_CHECKING:  # the predict path reads metadata through ONNX Runtime and never imports onnx (1.5 s)
    import onnx

# input_kind tells a reader what the graph's single input is.
INPUT_KINDS = {
    "uint8_nhwc": "uint8 RGB photos [B, H, W, 3] at the model's size; normalisation is in the graph",
    "float_nchw": "normalised float32 [B, 3, H, W] (bare model: resize, /255, mean/std outside)",
    "waveform": "mono float32 waveform windows [B, T] at the spec's sample rate; mel frontend in the graph",
    "mel": "normalised log-mel float32 [B, C, n_mels, frames] (bare model: mel frontend outside)",
}
JSON_KEYS = ("classes", "preprocess", "thresholds", "abstain")


def build_metadata(hp: dict[str, Any], *, input_kind: str, precision: str) -> dict[str, str]:
    """Metadata entries from a checkpoint's hyperparameters."""
    meta = {
        "birdvision_version": __version__,
        "backbone": str(hp.get("backbone", "")),
        "recipe": str(hp.get("recipe", "")),
        "manifest_digest": str(hp.get("manifest_digest", "")),
        "temperature": repr(float(hp.get("temperature", 1.0))),
        "classes": json.dumps(list(hp["classes"])),
        "preprocess": json.dumps(dict(hp["preprocess"])),
        "input_kind": input_kind,
        "input_description": INPUT_KINDS[input_kind],
        "output": "probabilities: softmax(logits / temperature), float32 [B, num_classes]",
        "precision": precision,
    }
    for key in ("thresholds", "abstain"):
        if hp.get(key) is not None:
            meta[key] = json.dumps(hp[key], allow_nan=False)
    if hp.get("background_class"):
        meta["background_class"] = str(hp["background_class"])
    return meta


def set_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> onnx.ModelProto:
    """Replace the model's metadata_props with ``meta`` (transforms may drop or duplicate them)."""
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "birdvision"
    model.producer_version = __version__
    model.doc_string = f"birdvision {meta.get('backbone', '')} classifier; input: {meta.get('input_description', '')}"
    return model


def parse_metadata(raw: dict[str, str], source: str | Path = "the model") -> dict[str, Any]:
    """Metadata strings -> values (classes list, preprocess / thresholds / abstain dicts, temperature float).

    A value that does not parse is a :class:`~birdvision.checkpoint.CheckpointError` naming ``source``.
    """
    out: dict[str, Any] = dict(raw)
    for k in JSON_KEYS:
        if k in out:
            try:
                out[k] = json.loads(out[k])
            except (json.JSONDecodeError, TypeError, RecursionError) as e:
                raise CheckpointError(f"{source}: metadata {k!r} is not valid JSON ({e})") from None
    if "temperature" in out:
        try:
            out["temperature"] = float(out["temperature"])
        except (TypeError, ValueError):
            raise CheckpointError(f"{source}: metadata 'temperature'={out['temperature']!r} is not a number") from None
    return out


# The graph input each input_kind promises: element type, then the dims after the batch axis
# (None where the spec does not fix it).
def _expected_input(kind: str, meta: dict[str, Any]) -> tuple[str, tuple[int | None, ...]]:
    pre = meta["preprocess"]
    if kind == "uint8_nhwc":
        s = int(pre["size"])
        return "tensor(uint8)", (s, s, 3)
    if kind == "float_nchw":
        s = int(pre["size"])
        return "tensor(float)", (None, s, s)
    if kind == "waveform":
        return "tensor(float)", (int(round(float(pre["clip_seconds"]) * int(pre["sample_rate"]))),)
    return "tensor(float)", (None, int(pre["mel"]["n_mels"]), None)  # mel


def check_export(session: Any, meta: dict[str, Any], source: str | Path) -> None:
    """Refuse an export whose metadata is missing or impossible, or does not describe its own graph
    (input type, rank and fixed sizes; output width = number of classes). Raises CheckpointError."""
    if "classes" not in meta or "preprocess" not in meta or "input_kind" not in meta:
        raise CheckpointError(f"{source} is not a birdvision export (no classes/preprocess/input_kind in its metadata)")
    check_meta(meta, source)
    kind = meta["input_kind"]
    if kind not in INPUT_KINDS:
        raise CheckpointError(f"{source}: metadata input_kind={kind!r} (expected one of {', '.join(INPUT_KINDS)})")
    if (kind in ("waveform", "mel")) != (meta["preprocess"].get("kind") == "audio"):
        raise CheckpointError(f"{source}: input_kind={kind!r} does not fit a {meta['preprocess'].get('kind', 'image')} "
                              "preprocessing spec")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise CheckpointError(f"{source}: the graph has {len(inputs)} inputs and {len(outputs)} outputs "
                              "(a birdvision export has one of each)")
    dtype, dims = _expected_input(kind, meta)
    inp = inputs[0]
    shape = list(inp.shape or [])
    got = f"{inp.type} {shape}"
    want = f"{dtype} [batch, {', '.join('?' if d is None else str(d) for d in dims)}]"
    if inp.type != dtype or len(shape) != 1 + len(dims) or any(
            isinstance(g, int) and w is not None and g != w for g, w in zip(shape[1:], dims, strict=True)):
        raise CheckpointError(f"{source}: its input {inp.name!r} is {got}, but input_kind={kind!r} means {want}")
    out_shape = list(outputs[0].shape or [])
    n = len(meta["classes"])
    if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != n):
        raise CheckpointError(f"{source}: its output {outputs[0].name!r} has shape {out_shape}, "
                              f"but the metadata lists {n} classes ([batch, {n}] expected)")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Parsed birdvision metadata of an exported ``.onnx`` or ``.ort`` file."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return parse_metadata(dict(sess.get_modelmeta().custom_metadata_map), path)
