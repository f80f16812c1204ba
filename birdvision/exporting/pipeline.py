"""From a checkpoint to gated export files: the sequence ``python -m birdvision.export`` runs.

Order: parity inputs and the PyTorch reference first (so a bad data path fails before any
export work), then the FP32 network, then each requested variant; every file is gated as
soon as it is written. A failing variant does not stop the others; the run ends with
:class:`ParityError` listing all failures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from birdvision import __version__
from birdvision.exporting import FORMATS, ExportError, ParityError, graphs
from birdvision.exporting.metadata import MODEL_JSON, build_metadata, input_card, model_card, set_metadata
from birdvision.exporting.options import ExportConfig, check_options
from birdvision.exporting.parity import Reference, Thresholds, gate, net_inputs_of, reference
from birdvision.exporting.phone import PHONE_FORMATS, missing
from birdvision.exporting.runtime import make_session
from birdvision.exporting.samples import input_set
from birdvision.models import get_spec
from birdvision.runs.artifacts import check_output_dir, sha256_file, write_json, write_text
from birdvision.runs.checkpoint import open_checkpoint
from birdvision.runs.folders import export_dir_of, find_checkpoint
from birdvision.spec import from_dict as spec_from_dict

log = logging.getLogger(__name__)

VARIANTS = ("onnx", "int8", "fp16", "ort", "tensorrt", "tflite", "pte", "tflite_int8", "pte_int8")


@dataclass
class ExportResult:
    """What was written and how each file fared."""

    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)  # role -> path (fp32, bare, int8, fp16, ort, ...)
    parity: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> report
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "files": {k: {"path": v.name, "mb": round(v.stat().st_size / 1e6, 3)} for k, v in self.files.items()
                      if v.exists()},
            "parity": self.parity, "failures": self.failures, "notes": self.notes,
        }


def resolve_formats(fmt: str) -> list[str]:
    """``onnx,int8`` / ``all`` -> the variants to build, always starting with ``onnx``."""
    names = [f.strip() for f in str(fmt).split(",") if f.strip()]
    bad = [f for f in names if f not in FORMATS]
    if bad or not names:
        raise ExportError(f"unknown format {', '.join(bad) or repr(fmt)}; valid formats: {', '.join(FORMATS)}")
    wanted = set(VARIANTS) if "all" in names else set(names) | {"onnx"}
    if "all" not in names:  # asked for by name: its converter must be here (format=all skips it with a note)
        for fmt in PHONE_FORMATS:
            if fmt in wanted and (why := missing(fmt)):
                raise ExportError(f"format={fmt}: {why}")
    return [v for v in VARIANTS if v in wanted]


def export_checkpoint(cfg: ExportConfig | Any) -> ExportResult:
    """Export ``cfg.ckpt`` in ``cfg.format``; every file is parity-gated. Raises ParityError on a failed gate."""
    if not cfg.ckpt:
        raise ExportError("ckpt=PATH is required (a .ckpt file or a run folder)")
    formats = resolve_formats(cfg.format)
    check_options(cfg)
    ckpt = find_checkpoint(cfg.ckpt)
    out = Path(cfg.output_dir) if cfg.output_dir else export_dir_of(ckpt)
    check_output_dir(out)
    checkpoint = open_checkpoint(ckpt)  # read once
    meta, model = checkpoint.meta, checkpoint.classifier()
    pre_spec = dict(meta["preprocess"])
    spec = spec_from_dict(pre_spec)
    audio = spec.is_audio
    out.mkdir(parents=True, exist_ok=True)
    res = ExportResult(out)
    t0 = time.perf_counter()

    p = cfg.parity
    pin = input_set(ckpt, meta, split=p.split, data=p.data, n=p.n, purpose="parity")
    ref = reference(model, pin.inputs, pin.labels, pre_spec, p.batch_size)
    log.info("parity set: %d samples from %s", len(pin), pin.origin)
    thresholds = Thresholds(p.fp32_min_top1_agreement, p.fp32_max_abs_diff, p.max_acc_drop)

    shape = spec.net_input_shape(int(meta.get("in_chans", 3)))
    net = graphs.export_net(model.net, shape, cfg.opset)
    post = graphs.post_graph(float(meta.get("temperature", 1.0)), len(meta["classes"]), net)
    pre = None
    if cfg.preprocess_in_graph:
        pre = (graphs.audio_pre_graph(pre_spec, net, cfg.opset) if audio
               else graphs.image_pre_graph(pre_spec, net, max(cfg.opset, graphs.RESIZE_OPSET)))
    full_kind = spec.full_input_kind if pre is not None else spec.bare_input_kind
    bare_kind = spec.bare_input_kind
    write_text(out / "labels.txt", "".join(f"{c}\n" for c in meta["classes"]))

    def save_and_gate(role: str, name: str, model_proto, precision: str, kind: str) -> Path | None:
        path = graphs.save_model(set_metadata(model_proto, build_metadata(meta, input_kind=kind, precision=precision)),
                                 out / name)
        return _gate_file(res, role, path, precision, kind, ref, thresholds, pin.origin, cfg)

    save_and_gate("fp32", "model.onnx", graphs.compose(pre, net, post), "fp32", full_kind)
    if pre is not None:
        save_and_gate("bare", "model.bare.onnx", graphs.compose(None, net, post), "fp32", bare_kind)

    calib_net, cin = None, None
    if {"int8", "tensorrt", "tflite_int8", "pte_int8"} & set(formats):
        c = cfg.calibration
        cin = input_set(ckpt, meta, split=c.split, data=c.data, n=c.n, purpose="calibration")
        log.info("calibration set: %d samples from %s", len(cin), cin.origin)
    if "int8" in formats or "tensorrt" in formats:
        calib_net = net_inputs_of(cin.inputs, pre_spec)
    if "int8" in formats:
        from birdvision.exporting.variants import quantize_int8

        sym = _symmetric_activations(cfg, meta)
        log.info("INT8: %s activations, per-channel signed weights", "signed symmetric (S8S8)" if sym else "unsigned (U8S8)")
        qnet = quantize_int8(net, calib_net, method=cfg.calibration.method, batch_size=cfg.calibration.batch_size,
                             symmetric_activations=sym, keep_ends_float=cfg.calibration.keep_ends_float)
        save_and_gate("int8", "model.int8.onnx", graphs.compose(pre, qnet, post), "int8", full_kind)
    if "fp16" in formats:
        from birdvision.exporting.variants import convert_fp16

        save_and_gate("fp16", "model.fp16.onnx", graphs.compose(pre, convert_fp16(net), post), "fp16", full_kind)
    if "ort" in formats:
        from birdvision.exporting.variants import convert_to_ort

        for role, src, precision in (("ort", "fp32", "fp32"), ("int8_ort", "int8", "int8")):
            if role == "int8_ort" and "int8" not in res.files:
                continue
            if src in res.files:
                dst = convert_to_ort(res.files[src], out / res.files[src].name.replace(".onnx", ".ort"))
                _gate_file(res, role, dst, precision, full_kind, ref, thresholds, pin.origin, cfg)
    if "tensorrt" in formats:
        _tensorrt(res, cfg, meta, net, post, calib_net, shape, ref, thresholds, pin.origin)

    if phone_formats := [f for f in VARIANTS if f.startswith(("tflite", "pte")) and f in formats]:
        _phone(res, phone_formats, cfg, meta, model, ref, thresholds, pin.origin, cin)

    card = write_model_json(res, meta, full_kind)
    if not audio and cfg.app_parity.enabled and "fp32" in res.files:
        card["app_parity"] = _app_parity(res, cfg, meta, pin)
        write_json(out / MODEL_JSON, card)

    summary = res.as_dict() | {
        "checkpoint": str(ckpt), "formats": formats, "preprocess_in_graph": bool(cfg.preprocess_in_graph),
        "opset": int(cfg.opset), "birdvision_version": __version__, "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out / "export.json", summary)
    if res.failures:
        raise ParityError("; ".join(res.failures))
    return res


def _phone(res: ExportResult, formats: list[str], cfg: Any, meta: dict[str, Any], model: Any, ref: Reference,
           thresholds: Thresholds, origin: str, cin: Any = None) -> None:
    """``model.tflite`` / ``model.pte`` (and ``model.int8.tflite`` / ``model.int8.pte``) where the converter is
    installed, gated in its own runtime; else a note.

    Photos: the gate feeds both sides the parity photos squashed to the model's size by birdvision's resize and
    rounded to uint8 (these files take a fixed size), so the checkpoint's answers are recomputed on those pixels.
    INT8 files are calibrated on the calibration set of ``model.int8.onnx``, squashed the same way, and gated with
    the INT8 threshold (accuracy drop).
    """
    from birdvision.exporting import phone

    pre = dict(meta["preprocess"])
    audio = spec_from_dict(pre).is_audio
    build = []
    for fmt in formats:
        if why := phone.missing(fmt):
            res.notes.append(f"no {phone.PHONE_FORMATS[fmt][2]}: {why}")
            log.warning("skipping %s: %s", phone.PHONE_FORMATS[fmt][2], why)
        else:
            build.append(fmt)
    if not build:
        return
    if audio:
        fref, feed, kind = ref, ref.raw_inputs, "waveform"
    else:
        feed = phone.fixed_size_photos(list(ref.raw_inputs), pre)
        fref, kind = reference(model, list(feed), ref.labels, pre, cfg.parity.batch_size), "uint8_nhwc"
    calib = None
    if cin is not None and any(f.endswith("_int8") for f in build):
        calib = np.asarray(cin.inputs, dtype=np.float32) if audio else phone.fixed_size_photos(list(cin.inputs), pre)
    module = phone.AppModule(model.net, pre, float(meta.get("temperature", 1.0)), int(meta.get("in_chans", 3)))
    for fmt in build:
        precision = "int8" if fmt.endswith("_int8") else "fp32"
        try:
            path = phone.build(fmt, module, pre, res.output_dir, calibration=calib,
                               keep_ends_float=bool(cfg.calibration.keep_ends_float), method=cfg.calibration.method,
                               symmetric_activations=_symmetric_activations(cfg, meta))
            report = gate(path, phone.session(fmt, path, int(cfg.threads)), feed, fref, precision=precision,
                          input_kind=kind, thresholds=thresholds, data=origin, batch_size=int(cfg.parity.batch_size))
        except (ExportError, ParityError) as e:
            log.error("%s", e)
            res.failures.append(str(e))
            continue
        res.files[fmt] = path
        res.parity[path.name] = report.as_dict()


def write_model_json(res: ExportResult, meta: dict[str, Any], kind: str) -> dict[str, Any]:
    """``model.json``: the app card of ``model.onnx`` (the one inside its metadata) plus every gated file's SHA-256,
    input and parity, so a loader can tell the files it describes from others (:func:`~birdvision.exporting.metadata.
    check_model_json`)."""
    card = model_card(build_metadata(meta, input_kind=kind, precision="fp32"))
    pre = dict(meta["preprocess"])
    files: dict[str, Any] = {}
    for role, path in res.files.items():
        if not path.is_file() or path.suffix not in (".onnx", ".ort", ".tflite", ".pte", ".engine"):
            continue
        rep = res.parity.get(path.name, {})
        file_kind = rep.get("input_kind")
        inp = input_card(file_kind, pre) if file_kind else None
        if inp and role in PHONE_FORMATS:  # static shapes: one photo or window per call, the only input
            inp.update(name=None, shape=[1, *inp["shape"][1:]], dynamic_axes=[],
                       note=inp["note"] + "; batch 1; the file's only input (index 0)")
        files[path.name] = {
            "role": role, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "precision": rep.get("precision"), "input_kind": file_kind, "input": inp,
            "parity": {k: rep.get(k) for k in ("passed", "n", "top1_agreement", "max_abs_diff", "acc_torch",
                                                "acc_export")} if rep else None,
        }
    card["files"] = files
    write_json(res.output_dir / MODEL_JSON, card)
    res.files["model_json"] = res.output_dir / MODEL_JSON
    return card


def _app_parity(res: ExportResult, cfg: Any, meta: dict[str, Any], pin: Any) -> dict[str, Any]:
    """Run :func:`~birdvision.exporting.app_parity.app_parity` on model.onnx; write app_parity.json; a short
    summary for model.json. A platform below ``min_agreement`` is a warning here (the file itself passed its
    gate); the standalone ``python -m birdvision.exporting.app_parity`` exits 1 for it."""
    from birdvision.exporting.app_parity import REPORT, AppSample, app_parity, photo_samples, split_list, summary_lines

    a = cfg.app_parity
    if a.data:
        samples, origin = photo_samples(a.data, split_list(a.splits), list(meta["classes"]))
    else:
        samples = [AppSample(Path(p), int(y), cfg.parity.split) for p, y in zip(pin.paths, pin.labels, strict=True)]
        origin = f"the parity photos ({pin.origin})"
    report = app_parity(res.files["fp32"], samples, platforms=a.platforms, min_agreement=a.min_agreement,
                        browser_csv=a.browser_csv, threads=int(cfg.threads), origin=origin)
    path = write_json(res.output_dir / REPORT, report)
    res.files["app_parity"] = path
    for line in summary_lines(report):
        log.info("app parity: %s", line)
    if not report["passed"]:
        res.notes.append(f"app parity below {a.min_agreement:.0%} top-1 agreement: {'; '.join(report['failures'])} "
                         f"(see {REPORT}; model.json lists the decode steps apps must follow)")
    elif report["skipped"]:
        res.notes.append("app parity skipped " + "; ".join(f"{k}: {v}" for k, v in report["skipped"].items()))
    return {"report": REPORT, "data": report["data"], "n": report["n"], "passed": report["passed"],
            "reference_accuracy": report["reference"]["accuracy"],
            "platforms": {k: {"top1_agreement": v["top1_agreement"], "accuracy": v["accuracy"], "gate": v["gate"],
                              "feeds": v["feeds"]} for k, v in report["platforms"].items()},
            "skipped": report["skipped"]}


def _gate_file(res: ExportResult, role: str, path: Path, precision: str, kind: str, ref: Reference,
               thresholds: Thresholds, origin: str, cfg: Any) -> Path | None:
    """Gate one file against the reference; record the report or the failure."""
    feed = ref.raw_inputs if kind in ("uint8_nhwc_any", "waveform") else ref.net_inputs
    session = make_session(path, threads=int(cfg.threads))
    try:
        report = gate(path, session, feed, ref, precision=precision, input_kind=kind, thresholds=thresholds,
                      data=origin, batch_size=int(cfg.parity.batch_size))
    except ParityError as e:
        log.error("%s", e)
        res.failures.append(str(e))
        return None
    finally:
        del session
    res.files[role] = path
    res.parity[path.name] = report.as_dict()
    return path


def _tensorrt(res: ExportResult, cfg: Any, meta: dict[str, Any], net, post, calib_net, shape: tuple[int, int, int],
              ref: Reference, thresholds: Thresholds, origin: str) -> None:
    """The TensorRT-ready ONNX pair and calibration batches; engines too where TensorRT runs."""
    from birdvision.exporting import tensorrt as trt_mod
    from birdvision.exporting.variants import quantize_int8

    out = res.output_dir
    kind = spec_from_dict(meta["preprocess"]).bare_input_kind

    def save(name: str, proto, precision: str) -> Path:
        return graphs.save_model(set_metadata(proto, build_metadata(meta, input_kind=kind, precision=precision)),
                                 out / name)

    _gate_file(res, "trt_fp32", save("model.trt.onnx", graphs.compose(None, net, post), "fp32"), "fp32", kind, ref,
               thresholds, origin, cfg)
    qnet = quantize_int8(net, calib_net, method=cfg.calibration.method, symmetric_activations=True,
                         batch_size=cfg.calibration.batch_size, keep_ends_float=cfg.calibration.keep_ends_float)
    _gate_file(res, "trt_int8", save("model.trt.int8.onnx", graphs.compose(None, qnet, post), "int8"), "int8", kind,
               ref, thresholds, origin, cfg)
    trt_mod.write_calibration(calib_net, out / "trt_calib", cfg.calibration.batch_size)
    if trt_mod.tensorrt_available() and "trt_fp32" in res.files:
        engines = trt_mod.build_engines(res.files["trt_fp32"], out / "trt_calib", out,
                                        max_batch=cfg.tensorrt.max_batch, workspace_mb=cfg.tensorrt.workspace_mb)
        for e in engines:
            res.files[e.stem.replace("model.", "engine_")] = e
        reason = "engines were also built here with the TensorRT API"
        res.notes.append(f"TensorRT engines built: {', '.join(e.name for e in engines)}")
    else:
        reason = "the export machine had no TensorRT and/or no CUDA GPU"
        res.notes.append(
            "TensorRT is not available here (no tensorrt package or no CUDA GPU): wrote model.trt.onnx, "
            "model.trt.int8.onnx, trt_calib/*.npy and trtexec.sh; run trtexec.sh on the Jetson to build the engines"
        )
    res.files["trtexec"] = trt_mod.write_script(out, shape, cfg.tensorrt.max_batch, str(meta.get("backbone")), reason,
                                                dict(meta["preprocess"]), fp32_passed="trt_fp32" in res.files,
                                                int8_passed="trt_int8" in res.files)


def _symmetric_activations(cfg: Any, meta: dict[str, Any]) -> bool:
    """``calibration.symmetric_activations``, or the backbone's default when null (every INT8 format alike)."""
    sym = cfg.calibration.symmetric_activations
    return bool(get_spec(meta["backbone"]).int8_symmetric_activations if sym is None else sym)
