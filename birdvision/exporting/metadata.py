"""What travels inside every exported model: classes, preprocessing, provenance, temperature, decisions,
and ``model.json``.

Decisions are the values chosen on validation data after training: the per-class thresholds
(``thresholds``), the photo abstention threshold (``abstain``) and the no-call class of a call model
(``background_class``); they are present only when the checkpoint has them.

Stored as ONNX ``metadata_props`` (string -> string; structured values as JSON) so any
ONNX Runtime, including onnxruntime-mobile reading the ``.ort`` file, can recover how
to feed the model and how to name its outputs without the checkpoint.

``model.json`` is the same information written for app developers (:func:`model_card`):
labels, the input (name, layout, dtype, which axes are dynamic), the preprocessing as
steps to follow, what the output means, and for call models the audio framing. It is
built from the metadata entries themselves, so an entry added to :func:`build_metadata`
reaches ``model.json`` too (under ``metadata`` when the card does not know it). Each
exported file carries its own card in the ``model_json`` entry; the ``model.json`` beside
the files is ``model.onnx``'s card plus a ``files`` table (SHA-256, input and parity of
every file), which :func:`check_model_json` holds a model against when it is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from birdvision import __version__
from birdvision.runs.artifacts import sha256_file
from birdvision.runs.checkpoint import CheckpointError, check_meta
from birdvision.spec import from_dict as spec_from_dict

if TYPE_CHECKING:  # the predict path reads metadata through ONNX Runtime and never imports onnx (1.5 s)
    import onnx

# input_kind tells a reader what the graph's single input is.
INPUT_KINDS = {
    "uint8_nhwc_any": "uint8 RGB photos [B, H, W, 3] of any size (one size per batch); resize and normalisation "
                      "are in the graph",
    "uint8_nhwc": "uint8 RGB photos [B, H, W, 3] at the model's size; normalisation is in the graph",
    "float_nchw": "normalised float32 [B, 3, H, W] (bare model: resize, /255, mean/std outside)",
    "waveform": "mono float32 waveform windows [B, T] at the spec's sample rate; mel frontend in the graph",
    "mel": "normalised log-mel float32 [B, C, n_mels, frames] (bare model: mel frontend outside)",
}
JSON_KEYS = ("classes", "preprocess", "thresholds", "abstain")


def build_metadata(hp: dict[str, Any], *, input_kind: str, precision: str) -> dict[str, str]:
    """Metadata entries from a checkpoint's hyperparameters (``model_json``, the app card, is derived from the others)."""
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
    meta["model_json"] = json.dumps(model_card(meta), separators=(",", ":"))
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

    A value that does not parse is a :class:`~birdvision.runs.checkpoint.CheckpointError` naming ``source``.
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
    if kind == "uint8_nhwc_any":
        return "tensor(uint8)", (None, None, 3)
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
    spec = spec_from_dict(meta["preprocess"])
    if kind not in spec.input_kinds:
        raise CheckpointError(f"{source}: input_kind={kind!r} does not fit a {spec.kind} preprocessing spec")
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


# ----------------------------------------------------------------------------- model.json

MODEL_JSON = "model.json"
MODEL_JSON_FORMAT = "birdvision-model/1"
# metadata entries the card shows in its own sections; any other entry is copied under "metadata"
_CARD_KEYS = {"birdvision_version", "backbone", "recipe", "manifest_digest", "temperature", "classes", "preprocess",
              "input_kind", "input_description", "output", "precision", "model_json", "thresholds", "abstain",
              "background_class"}
_RESIZE_FILTERS = {
    "bilinear": "bilinear, antialiased: when shrinking, a triangle kernel widened by the scale factor (Pillow's "
                "BILINEAR filter, without its rounding to uint8 between the two passes); taps outside the photo "
                "are dropped and the weights renormalised. Same numbers as torch F.interpolate(mode='bilinear', "
                "antialias=True, align_corners=False) and ONNX Resize(mode='linear', antialias=1, exclude_outside=1, "
                "coordinate_transformation_mode='half_pixel') on float pixels.",
    "bicubic": "bicubic (Keys a = -0.5), antialiased: when shrinking, the kernel is widened by the scale factor "
               "(Pillow's BICUBIC filter, without its rounding); taps outside the photo dropped and weights "
               "renormalised. Same numbers as torch F.interpolate(mode='bicubic', antialias=True, align_corners=False) "
               "and ONNX Resize(mode='cubic', cubic_coeff_a=-0.5, antialias=1, exclude_outside=1, half_pixel).",
}


def _json_or_str(v: str) -> Any:
    try:
        return json.loads(v)
    except (json.JSONDecodeError, TypeError):
        return v


def input_card(kind: str, pre: dict[str, Any]) -> dict[str, Any]:
    """The graph input an app must build, for one input kind."""
    if kind in ("uint8_nhwc_any", "uint8_nhwc"):
        s = int(pre["size"])
        fixed = kind == "uint8_nhwc"
        return {
            "name": "image", "dtype": "uint8", "layout": "NHWC", "channel_order": "RGB", "value_range": [0, 255],
            "shape": ["batch", s, s, 3] if fixed else ["batch", "height", "width", 3],
            "dynamic_axes": ["batch"] if fixed else ["batch", "height", "width"],
            "note": (f"photos resized by the app to {s} x {s}" if fixed else
                     "the decoded photo at its own size (any height and width); photos of one batch must share a "
                     "size, so feed [1, H, W, 3] when they differ"),
        }
    if kind == "float_nchw":
        s = int(pre["size"])
        return {"name": "input", "dtype": "float32", "layout": "NCHW", "channel_order": "RGB",
                "shape": ["batch", 3, s, s], "dynamic_axes": ["batch"],
                "note": "resized and normalised by the app (the preprocessing steps, all of them)"}
    n = spec_from_dict(pre).clip_samples  # type: ignore[union-attr]
    if kind == "waveform":
        return {"name": "waveform", "dtype": "float32", "layout": "NT", "shape": ["batch", n], "dynamic_axes": ["batch"],
                "note": f"mono windows of {n} samples at {pre['sample_rate']} Hz, float in [-1, 1]"}
    mel = pre.get("mel", {})
    return {"name": "input", "dtype": "float32", "layout": "NCHW",
            "shape": ["batch", int(pre.get("in_chans", mel.get("in_chans", 1))), int(mel.get("n_mels", 0)), "frames"],
            "dynamic_axes": ["batch"], "note": "normalised log-mel windows made by the app (the mel steps, all of them)"}


def _photo_steps(kind: str, pre: dict[str, Any]) -> dict[str, Any]:
    from birdvision.data.photos.decode import DECODE_STEPS

    s = int(pre["size"])
    interp = str(pre.get("interpolation", "bilinear"))
    mean, std = [float(v) for v in pre["mean"]], [float(v) for v in pre["std"]]
    resize_where = {"uint8_nhwc_any": "in the graph", "uint8_nhwc": "in the app, before the graph",
                    "float_nchw": "in the app"}[kind]
    norm_where = "in the graph" if kind != "float_nchw" else "in the app"
    app = ["Decode the file to 8-bit RGB following 'decode' (EXIF orientation, transparency on white, 16-bit, CMYK)."]
    if kind == "uint8_nhwc_any":
        app += ["Feed the decoded pixels as they are: uint8 [1, H, W, 3], RGB, rows top to bottom. Do not resize, "
                "crop or normalise: the graph squashes to the model's size with the antialiased filter and normalises."]
    elif kind == "uint8_nhwc":
        app += [f"Resize to {s} x {s} (squash, no crop) with an antialiased {interp} filter (Pillow resize(BILINEAR); "
                "OpenCV INTER_AREA when shrinking); app_parity.json measures what each platform's resizer costs.",
                f"Feed uint8 [1, {s}, {s}, 3], RGB; normalisation is in the graph."]
    else:
        app += [f"Convert to float, resize to {s} x {s} as 'resize' says (float, not uint8), divide by 255, subtract "
                "mean and divide by std per channel, transpose to [1, 3, H, W]."]
    app += ["Read 'probabilities': already calibrated, already softmaxed; argmax is the top-1 label."]
    return {
        "kind": "image",
        "app_steps": app,
        "decode": list(DECODE_STEPS),
        "resize": {"where": resize_where, "to": [s, s], "interpolation": interp, "filter": _RESIZE_FILTERS.get(interp, interp),
                   "geometry": "squash: width and height scaled independently to the model's size; aspect ratio not "
                               "kept; no crop, no padding"},
        "normalize": {"where": norm_where, "formula": "(x / 255 - mean) / std, per RGB channel", "mean": mean, "std": std},
        "spec": pre,
    }


def _audio_steps(kind: str, pre: dict[str, Any]) -> dict[str, Any]:
    sr = int(pre["sample_rate"])
    clip = float(pre["clip_seconds"])
    stereo = pre.get("stereo", "mix")
    hp = pre.get("highpass_hz")
    return {
        "kind": "audio",
        "sample_rate": sr,
        "window_seconds": clip,
        "window_samples": int(round(clip * sr)),
        "hop_seconds": clip,
        "hop_note": "birdvision.predict's default: windows back to back (overlap_seconds=0); any hop works, "
                    "the model sees one window at a time",
        "sample_format": "float32 in [-1, 1] (integer PCM divided by 2^(bits-1))",
        "channel_mix": ("mean of all channels (one mono signal)" if stereo == "mix"
                        else "each channel on its own, as a separate mono signal"),
        "resampler": "polyphase FIR at the exact rational ratio, the arithmetic of scipy.signal.resample_poly with its "
                     "defaults (Kaiser window, beta 5, half-length 10 * max(up, down) of the reduced ratio)",
        "highpass": (None if hp is None else f"zero-phase Butterworth high-pass, order 4, at {float(hp):g} Hz "
                                             "(scipy.signal.sosfiltfilt), applied after resampling"),
        "last_window_padding": "the last window that starts before the end of the recording and is not covered by "
                               "the previous one is zero-padded to full length; so is a recording shorter than one "
                               "window",
        "mel_frontend": "in the graph" if kind == "waveform" else "in the app",
        "mel": pre.get("mel"),
        "spec": pre,
    }


def model_card(meta: dict[str, str]) -> dict[str, Any]:
    """The app-facing description of one exported file, from its metadata entries (:func:`build_metadata`)."""
    classes = json.loads(meta["classes"]) if isinstance(meta["classes"], str) else list(meta["classes"])
    pre = json.loads(meta["preprocess"]) if isinstance(meta["preprocess"], str) else dict(meta["preprocess"])
    kind = str(meta["input_kind"])
    temperature = float(meta.get("temperature", 1.0))
    audio = spec_from_dict(pre).is_audio
    return {
        "format": MODEL_JSON_FORMAT,
        "labels": classes,
        "num_classes": len(classes),
        "input_kind": kind,
        "input": input_card(kind, pre),
        "preprocessing": _audio_steps(kind, pre) if audio else _photo_steps(kind, pre),
        "output": {
            "name": "probabilities", "dtype": "float32", "shape": ["batch", len(classes)], "order": "labels",
            "semantics": "calibrated class probabilities: softmax(logits / temperature) with the fitted temperature "
                         "already applied inside the graph; each row sums to 1. Do not apply softmax or the "
                         "temperature again.",
            "temperature_applied": temperature,
        },
        "model": {"backbone": meta.get("backbone", ""), "recipe": meta.get("recipe", ""),
                  "precision": meta.get("precision", ""), "manifest_digest": meta.get("manifest_digest", ""),
                  "birdvision_version": meta.get("birdvision_version", "")},
        "decisions": _decisions_card(meta, classes),
        "metadata": {k: _json_or_str(v) for k, v in meta.items() if k not in _CARD_KEYS},
    }


def _decisions_card(meta: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """How an app turns probabilities into answers, as predict does (values chosen on validation data)."""
    from birdvision.prediction.tables import DEFAULT_MIN_CONFIDENCE  # numpy only; the rule's one home

    th = _json_or_str(meta["thresholds"]) if meta.get("thresholds") else None
    ab = _json_or_str(meta["abstain"]) if meta.get("abstain") else None
    bg = meta.get("background_class") or None
    return {
        "rule": "report a label when its probability >= its threshold (thresholds.values, in label order; null: "
                "default_threshold); never report background_class; a window where no label passes but 1 - p(background_class) "
                "reaches thresholds.presence gets its best label (a call, species uncertain); a photo whose largest probability is below "
                "abstain.threshold is 'unknown'. With a species list, set the other labels' probabilities to 0 "
                "(keep background_class) and divide by the sum of the kept ones before applying the thresholds.",
        "default_threshold": DEFAULT_MIN_CONFIDENCE,
        "thresholds": th,
        "abstain": ab,
        "background_class": bg if bg in classes else None,
    }


def read_model_json(path: str | Path) -> dict[str, Any]:
    """A ``model.json`` file (or the folder holding one), parsed; a clear CheckpointError when it is not one."""
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_JSON
    try:
        card = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{p}: not a readable model.json ({type(e).__name__}: {e})") from None
    if not isinstance(card, dict) or card.get("format") != MODEL_JSON_FORMAT or not isinstance(card.get("labels"), list):
        raise CheckpointError(f"{p}: not a birdvision model.json (format {MODEL_JSON_FORMAT!r} with labels expected)")
    return card


def check_model_json(card: dict[str, Any], model_path: str | Path, meta: dict[str, Any], session: Any = None,
                     source: str | Path = MODEL_JSON) -> None:
    """Refuse a ``model.json`` that does not describe ``model_path``: other labels (names, order or count against
    the output width), another training manifest, or a file whose SHA-256 differs from the one it lists."""
    name = Path(model_path).name
    labels = list(card.get("labels") or [])
    classes = list(meta.get("classes") or [])
    if session is not None:
        width = (session.get_outputs()[0].shape or [None, None])[-1]
        if isinstance(width, int) and width != len(labels):
            raise CheckpointError(f"{source} does not match {name}: it lists {len(labels)} labels, the model outputs "
                                  f"{width} probabilities")
    if labels != classes:
        diff = next((i for i, (a, b) in enumerate(zip(labels, classes, strict=False)) if a != b), min(len(labels), len(classes)))
        raise CheckpointError(f"{source} does not match {name}: its labels differ from the model's "
                              f"({len(labels)} vs {len(classes)} labels, first difference at index {diff})")
    digest = (card.get("model") or {}).get("manifest_digest")
    if digest and meta.get("manifest_digest") and digest != meta["manifest_digest"]:
        raise CheckpointError(f"{source} does not match {name}: manifest digest {digest} vs the model's "
                              f"{meta['manifest_digest']} (exported from another training run)")
    files = card.get("files") or {}
    entry = files.get(name)
    if files and entry is None:
        raise CheckpointError(f"{source} does not list {name} (it describes {', '.join(sorted(files))}); "
                              "export again or keep each model with its own model.json")
    if entry and entry.get("sha256") and sha256_file(model_path) != entry["sha256"]:
        raise CheckpointError(f"{source} does not match {name}: the file's SHA-256 differs from the one model.json "
                              "lists (the model was replaced or modified after export)")
