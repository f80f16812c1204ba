"""What travels inside every exported model: classes, preprocessing, provenance, temperature.

Stored as ONNX ``metadata_props`` (string -> string; structured values as JSON) so any
ONNX Runtime, including onnxruntime-mobile reading the ``.ort`` file, can recover how
to feed the model and how to name its outputs without the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from birdvision import __version__

# input_kind tells a reader what the graph's single input is.
INPUT_KINDS = {
    "uint8_nhwc": "uint8 RGB photos [B, H, W, 3] at the model's size; normalisation is in the graph",
    "float_nchw": "normalised float32 [B, 3, H, W] (bare model: resize, /255, mean/std outside)",
    "waveform": "mono float32 waveform windows [B, T] at the spec's sample rate; mel frontend in the graph",
    "mel": "normalised log-mel float32 [B, C, n_mels, frames] (bare model: mel frontend outside)",
}
JSON_KEYS = ("classes", "preprocess")


def build_metadata(hp: dict[str, Any], *, input_kind: str, precision: str) -> dict[str, str]:
    """Metadata entries from a checkpoint's hyperparameters."""
    return {
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


def parse_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """Metadata strings -> values (classes list, preprocess dict, temperature float)."""
    out: dict[str, Any] = dict(raw)
    for k in JSON_KEYS:
        if k in out:
            out[k] = json.loads(out[k])
    if "temperature" in out:
        out["temperature"] = float(out["temperature"])
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Parsed birdvision metadata of an exported ``.onnx`` or ``.ort`` file."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return parse_metadata(dict(sess.get_modelmeta().custom_metadata_map))
