"""Export: ONNX with metadata, INT8/FP16/ORT variants, the parity gate, TensorRT bundle, user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from birdvision.export import main
from birdvision.exporting import graphs
from birdvision.exporting.metadata import read_metadata
from birdvision.spec import from_dict as spec_from_dict
from tests._bird_runs import make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_photos) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), demo_photos)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    assert main([f"ckpt={run_dir}", "format=int8,fp16,ort", f"output_dir={out}", "parity.max_acc_drop=0.5"]) == 0
    return out


def _ck(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]


def test_onnx_parity_metadata_and_labels(exported, run_dir):
    hp = _ck(run_dir)
    rep = json.loads((exported / "parity.json").read_text())
    assert rep["passed"] and rep["n"] == 12 and rep["n_labelled"] == 12  # every valid photo of the demo set
    assert rep["top1_agreement"] == 1.0 and rep["max_abs_diff"] <= 1e-4
    assert rep["acc_torch"] == rep["acc_export"]
    meta = read_metadata(exported / "model.onnx")
    assert meta["classes"] == hp["classes"] and meta["preprocess"] == hp["preprocess"]
    assert meta["temperature"] == pytest.approx(1.5) and meta["manifest_digest"] == hp["manifest_digest"]
    assert meta["recipe"] == "test" and meta["birdvision_version"] and meta["input_kind"] == "uint8_nhwc_any"
    assert (exported / "labels.txt").read_text().splitlines() == hp["classes"]
    m = onnx.load(str(exported / "model.onnx"))
    assert next(o.version for o in m.opset_import if o.domain == "") >= 18  # Resize with antialias
    inp = m.graph.input[0].type.tensor_type
    assert inp.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inp.shape.dim] == ["batch", "height", "width", 3]
    bare_model = onnx.load(str(exported / "model.bare.onnx"))
    bare = bare_model.graph.input[0].type.tensor_type
    assert bare.elem_type == onnx.TensorProto.FLOAT and bare.shape.dim[1].dim_value == 3
    assert next(o.version for o in bare_model.opset_import if o.domain == "") == 17  # TensorRT 8.5 reads it
    assert json.loads((exported / "parity.bare.json").read_text())["top1_agreement"] == 1.0


def test_dynamic_batch_and_temperature_in_graph(exported, run_dir):
    """The exported graph runs any batch size and applies the stored temperature."""
    import onnxruntime as ort

    from birdvision.exporting.parity import net_inputs_of
    from birdvision.runs.checkpoint import load_classifier

    sess = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    model = load_classifier(run_dir)
    for shape in ((5, 32, 32, 3), (2, 7, 300, 3), (1, 1, 1, 3), (3, 100, 64, 3)):  # any photo size: resized in the graph
        x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        probs = sess.run(None, {"image": x})[0]
        assert probs.shape == (shape[0], 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
        with torch.no_grad():
            logits = model(torch.from_numpy(net_inputs_of(list(x), _ck(run_dir)["preprocess"])))
        assert np.abs(torch.softmax(logits / 1.5, -1).numpy() - probs).max() < 1e-5


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_in_graph_resize_equals_the_training_resize(interpolation):
    """The exported photo graph (ONNX Resize, antialias) and the eval transform (torch, antialias) agree on odd sizes."""
    import onnxruntime as ort

    from birdvision.data.photos.transforms import eval_transform, photo_tensor
    from birdvision.spec import ImageSpec

    spec = {"kind": "image", "size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "interpolation": interpolation}
    ref = onnx.helper.make_model(onnx.helper.make_graph([], "r", [], []), opset_imports=[onnx.helper.make_opsetid("", 17)])
    pre = graphs.image_pre_graph(spec, ref)
    sess = ort.InferenceSession(pre.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for h, w in ((1, 1), (7, 300), (1000, 640), (224, 224), (227, 227), (300, 7), (113, 450)):
        x = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        got = sess.run(None, {"image": x[None]})[0][0]
        want = photo_tensor([x], ImageSpec.from_dict(spec))[0].numpy()
        assert got.shape == want.shape == (3, 224, 224)
        grey_levels = np.abs(got - want) * np.asarray(spec["std"]).reshape(3, 1, 1) * 255
        assert grey_levels.max() < 0.02, (h, w, grey_levels.max())  # float rounding, not another filter
        if (h, w) == (7, 300):
            from PIL import Image

            via_eval = eval_transform(ImageSpec.from_dict(spec))(Image.fromarray(x)).numpy()
            assert np.abs(via_eval - want).max() == 0  # the eval transform is photo_tensor for one photo


def test_model_json_describes_the_model_and_sits_inside_it(exported, run_dir):
    """model.json beside the export = the card inside model.onnx's metadata + a files table; it matches the graph."""
    import onnxruntime as ort

    from birdvision.runs.artifacts import sha256_file

    hp = _ck(run_dir)
    card = json.loads((exported / "model.json").read_text())
    sess = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    assert card["labels"] == hp["classes"] and card["num_classes"] == len(hp["classes"])
    assert card["input"]["name"] == inp.name == "image" and inp.type == "tensor(uint8)"
    assert card["input"]["shape"] == inp.shape == ["batch", "height", "width", 3]
    assert card["input"]["dynamic_axes"] == ["batch", "height", "width"] and card["input"]["layout"] == "NHWC"
    assert card["output"]["name"] == out.name and out.shape[-1] == card["num_classes"]
    assert card["output"]["temperature_applied"] == pytest.approx(1.5) and "do not apply" in card["output"]["semantics"].lower()
    steps = card["preprocessing"]
    assert steps["resize"]["where"] == "in the graph" and steps["resize"]["to"] == [32, 32]
    assert steps["normalize"]["mean"] == hp["preprocess"]["mean"] and steps["spec"] == hp["preprocess"]
    assert any("EXIF" in s for s in steps["decode"]) and any("white" in s for s in steps["decode"])
    assert card["model"]["manifest_digest"] == hp["manifest_digest"]
    inside = json.loads(read_metadata(exported / "model.onnx")["model_json"])
    assert inside == {k: v for k, v in card.items() if k not in ("files", "app_parity")}
    files = card["files"]
    assert {"model.onnx", "model.bare.onnx", "model.int8.onnx", "model.fp16.onnx", "model.ort"} <= set(files)
    for name, entry in files.items():
        assert entry["sha256"] == sha256_file(exported / name) and entry["parity"]["passed"]
    assert files["model.bare.onnx"]["input"]["shape"] == ["batch", 3, 32, 32]
    assert json.loads(read_metadata(exported / "model.int8.onnx")["model_json"])["model"]["precision"] == "int8"


def test_loader_refuses_a_model_json_that_does_not_match(exported, tmp_path):
    import shutil

    from birdvision.prediction.api import load
    from birdvision.runs.checkpoint import CheckpointError

    def copy_with(edit) -> Path:
        d = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        for name in ("model.onnx", "model.bare.onnx"):
            shutil.copy(exported / name, d / name)
        card = json.loads((exported / "model.json").read_text())
        edit(card, d)
        (d / "model.json").write_text(json.dumps(card))
        return d

    assert load(copy_with(lambda c, d: None) / "model.onnx").classes == json.loads(
        (exported / "model.json").read_text())["labels"]
    cases = [
        (lambda c, d: c["labels"].pop(), "lists 2 labels, the model outputs 3"),
        (lambda c, d: c["labels"].reverse(), "labels differ"),
        (lambda c, d: c["model"].update(manifest_digest="0" * 16), "exported from another training run"),
        (lambda c, d: shutil.copy(d / "model.bare.onnx", d / "model.onnx"), "SHA-256 differs"),
        (lambda c, d: c["files"].pop("model.onnx"), "does not list model.onnx"),
    ]
    for edit, message in cases:
        with pytest.raises(CheckpointError, match="model.json") as e:
            load(copy_with(edit) / "model.onnx")
        assert message in str(e.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(exported / "model.onnx", bad / "model.onnx")
    (bad / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable model.json"):
        load(bad / "model.onnx")


def test_lanczos_cannot_be_exported(run_dir):
    from birdvision.data.photos.transforms import resize_mode
    from birdvision.exporting import ExportError

    with pytest.raises(ValueError, match="cannot be reproduced inside an ONNX graph"):
        resize_mode("lanczos")
    ref = onnx.helper.make_model(onnx.helper.make_graph([], "r", [], []))
    with pytest.raises(ExportError, match="lanczos"):
        graphs.image_pre_graph({"size": 8, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "lanczos"}, ref)


def test_variants_are_gated_and_quantized(exported):
    for name in ("parity.int8.json", "parity.fp16.json", "parity.ort.json", "parity.int8.ort.json"):
        rep = json.loads((exported / name).read_text())
        assert rep["passed"] and rep["n"] == 12 and {"acc_torch", "acc_export", "max_abs_diff"} <= set(rep)
    assert json.loads((exported / "parity.ort.json").read_text())["top1_agreement"] == 1.0
    q = onnx.load(str(exported / "model.int8.onnx"))
    ops = [n.op_type for n in q.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # Preprocessing and softmax stay float: no Q/DQ touches them.
    pre = [n for n in q.graph.node if n.name.startswith(("pre_", "post_"))]
    assert {n.op_type for n in pre} == {"Cast", "Resize", "Transpose", "Mul", "Add", "Div", "Softmax"}
    f16 = onnx.load(str(exported / "model.fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in f16.graph.initializer)
    assert read_metadata(exported / "model.int8.ort")["precision"] == "int8"
    summary = json.loads((exported / "export.json").read_text())
    assert summary["failures"] == [] and "int8" in summary["files"]


def test_failed_parity_exits_1_and_leaves_no_good_file(run_dir, tmp_path, monkeypatch, capsys):
    """A genuinely wrong export (temperature off by 3x in the graph) is caught and renamed."""
    real = graphs.post_graph
    monkeypatch.setattr(graphs, "post_graph", lambda t, n, ref: real(t * 3, n, ref))
    assert main([f"ckpt={run_dir}", "format=onnx", f"output_dir={tmp_path}"]) == 1
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "parity.json").exists()
    assert (tmp_path / "model.FAILED.onnx").is_file()
    rep = json.loads((tmp_path / "parity.FAILED.json").read_text())
    assert rep["passed"] is False and "max |dp|" in rep["failures"][0]
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: parity gate failed") and "model.FAILED.onnx" in err


def test_thresholds_are_configurable(run_dir, tmp_path):
    assert main([f"ckpt={run_dir}", "format=onnx", f"output_dir={tmp_path}", "parity.fp32_max_abs_diff=0"]) == 1
    assert (tmp_path / "model.FAILED.onnx").is_file() and (tmp_path / "model.bare.FAILED.onnx").is_file()


def test_tensorrt_bundle_without_tensorrt(run_dir, tmp_path):
    from birdvision.exporting.tensorrt import tensorrt_available

    assert main([f"ckpt={run_dir}", "format=tensorrt", f"output_dir={tmp_path}", "parity.max_acc_drop=0.5",
                 "calibration.batch_size=4"]) == 0
    script = (tmp_path / "trtexec.sh").read_text()
    assert "--onnx=model.trt.onnx --fp16" in script and "--onnx=model.trt.int8.onnx --int8" in script
    assert "--maxShapes=input:16x3x32x32" in script
    batches = sorted((tmp_path / "trt_calib").glob("batch_*.npy"))
    assert len(batches) == 3 and np.load(batches[0]).shape == (4, 3, 32, 32)
    assert json.loads((tmp_path / "parity.trt.json").read_text())["top1_agreement"] == 1.0
    if not tensorrt_available():
        notes = json.loads((tmp_path / "export.json").read_text())["notes"]
        assert any("TensorRT is not available" in n for n in notes)


def test_trtexec_script_names_only_files_that_passed(run_dir, tmp_path, monkeypatch):
    """A TensorRT file that failed its gate was renamed *.FAILED.onnx: the script must not call it."""
    from birdvision.exporting import pipeline
    from birdvision.exporting.parity import failed_name
    from birdvision.exporting.tensorrt import trtexec_script

    real = pipeline._gate_file

    def failing_int8(res, role, path, *a, **kw):
        if role != "trt_int8":
            return real(res, role, path, *a, **kw)
        path.replace(failed_name(path))
        res.failures.append(f"parity gate failed for {path.name}")
        return None

    monkeypatch.setattr(pipeline, "_gate_file", failing_int8)
    assert main([f"ckpt={run_dir}", "format=tensorrt", f"output_dir={tmp_path}", "calibration.batch_size=4"]) == 1
    assert (tmp_path / "model.trt.int8.FAILED.onnx").is_file() and not (tmp_path / "model.trt.int8.onnx").exists()
    script = (tmp_path / "trtexec.sh").read_text()
    assert "--onnx=model.trt.int8.onnx" not in script and "failed its parity gate" in script
    assert "--onnx=model.trt.onnx --fp16" in script and "python -m birdvision.exporting.tensorrt" in script
    neither = trtexec_script((3, 8, 8), 4, backbone="x", reason="r", input_note="n", fp32_passed=False,
                             int8_passed=False)
    assert "--onnx=" not in neither and "exit 1" in neither


@pytest.mark.gpu
def test_tensorrt_engine_build(run_dir, tmp_path):
    from birdvision.exporting.tensorrt import tensorrt_available

    if not tensorrt_available():
        pytest.skip("needs the tensorrt package and a CUDA device")
    assert main([f"ckpt={run_dir}", "format=tensorrt", f"output_dir={tmp_path}", "parity.max_acc_drop=0.5"]) == 0
    assert (tmp_path / "model.fp16.engine").stat().st_size > 0
    assert (tmp_path / "model.int8.engine").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ckpt=/nonexistent/x.ckpt"], "does not exist"),
        (["format=onnx"], "ckpt=PATH is required"),
        (["format=coreml"], "valid formats: onnx, int8, fp16, ort, tensorrt, tflite, pte, tflite_int8, pte_int8, all"),
        (["parity.data=EMPTY"], "parity set is empty"),
        (["format=int8", "calibration.data=EMPTY"], "calibration set is empty"),
        (["calibration.method=magic", "format=int8"], "unknown calibration.method"),
        (["parity.nn=3"], "Did you mean 'parity.n'"),
    ],
)
def test_user_errors_exit_2(run_dir, tmp_path, capsys, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.replace("EMPTY", str(empty)) for a in args]
    if not any(a.startswith("ckpt=") for a in args) and "ckpt=PATH" not in message:
        args.append(f"ckpt={run_dir}")
    assert main([*args, f"output_dir={tmp_path / 'out'}"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # the resolved config is printed first
    assert last.startswith("error:") and message in last


def test_foreign_checkpoints(tmp_path, capsys):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, foreign)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    for path, message in ((foreign, "is not a birdvision checkpoint"), (text, "is not a readable PyTorch checkpoint")):
        assert main([f"ckpt={path}", f"output_dir={tmp_path / 'out'}"]) == 2
        assert message in capsys.readouterr().err


def test_audio_graph_matches_torch(tmp_path):
    """Spectrogram models: raw waveform in, the MelFrontend inside the graph, same probabilities as PyTorch."""
    import onnxruntime as ort

    from birdvision.data.audio.mel import MelFrontend
    from birdvision.training.module import BirdClassifier

    mel = MelFrontend(sample_rate=8000, n_fft=256, hop_length=128, n_mels=32, f_min_hz=50, f_max_hz=4000).spec()
    spec = {"kind": "audio", "sample_rate": 8000, "clip_seconds": 1.0, "stereo": "mix", "highpass_hz": None,
            "mel": mel, "in_chans": 1}
    model = BirdClassifier("test_tiny", ["a", "b", "c"], in_chans=1, preprocess=spec, temperature=2.0).eval()
    shape = spec_from_dict(spec).net_input_shape(1)
    assert shape == (1, 32, 63)
    net = graphs.export_net(model.net, shape, 17)
    full = graphs.compose(graphs.audio_pre_graph(spec, net, 17), net, graphs.post_graph(2.0, 3, net))
    path = graphs.save_model(full, tmp_path / "m.onnx")
    wave = np.random.default_rng(0).standard_normal((3, 8000)).astype(np.float32) * 0.1
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"waveform": wave})[0]
    fe = spec_from_dict(spec).frontend()
    with torch.no_grad():
        want = model.predict_proba(fe(torch.from_numpy(wave))).numpy()
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.slow
def test_int8_and_fp16_files_are_smaller(tmp_path, demo_photos):
    """On a real backbone the INT8 file is about a quarter, FP16 about half the FP32 size."""
    run = make_run(tmp_path / "run", demo_photos, backbone="resnet18", size=32, head_scale=1.0)
    out = tmp_path / "out"
    assert main([f"ckpt={run}", "format=int8,fp16", f"output_dir={out}", "parity.max_acc_drop=1.0"]) == 0
    fp32 = (out / "model.onnx").stat().st_size
    assert (out / "model.int8.onnx").stat().st_size < 0.3 * fp32
    assert (out / "model.fp16.onnx").stat().st_size < 0.55 * fp32


@pytest.mark.slow
def test_calls_model_end_to_end(tmp_path):
    """A spectrogram run: fit, export (waveform in, mel inside), INT8, and the same answer from both engines."""
    from birdvision.data.audio.demo import make_demo_calls
    from birdvision.fit import main as fit
    from birdvision.prediction.api import load

    root = make_demo_calls(tmp_path / "calls", n_species=3, recordings_per_species=5, seconds=4)
    assert fit(["recipe=demo_calls", f"data.root={root}", f"output_dir={tmp_path / 'runs'}", "model.backbone=test_tiny",
                "trainer.max_epochs=1", "data.num_workers=0", "data.batch_size=8"]) == 0
    (run,) = list((tmp_path / "runs" / "demo_calls").iterdir())
    out = tmp_path / "export"
    assert main([f"ckpt={run}", "format=int8", f"output_dir={out}", "parity.max_acc_drop=0.5"]) == 0
    rep = json.loads((out / "parity.json").read_text())
    assert rep["input_kind"] == "waveform" and rep["top1_agreement"] == 1.0 and rep["max_abs_diff"] <= 1e-4
    assert json.loads((out / "parity.int8.json").read_text())["passed"]
    card = json.loads((out / "model.json").read_text())
    audio = card["preprocessing"]
    assert card["input"]["name"] == "waveform" and card["input"]["shape"] == ["batch", 64000]
    assert audio["window_samples"] == 64000 == audio["sample_rate"] * audio["window_seconds"]
    assert audio["hop_seconds"] == audio["window_seconds"]  # predict's default: back to back
    assert audio["channel_mix"].startswith("mean of all channels") and "zero-padded" in audio["last_window_padding"]
    assert "resample_poly" in audio["resampler"] and audio["mel_frontend"] == "in the graph" and audio["mel"]["n_mels"]
    assert not (out / "app_parity.json").exists()  # photo decoders only
    a, b = load(run), load(out / "model.onnx")
    assert b.is_audio and a.input_shape == b.input_shape == (64000,)
    w = (np.random.default_rng(0).standard_normal((2, 64000)) * 0.05).astype(np.float32)
    assert np.abs(a.predict_batch(w) - b.predict_batch(w)).max() < 1e-4


def _activation_zero_point_types(path: Path) -> set[int]:
    """ONNX element types of the zero points of every activation QuantizeLinear (weights are stored quantized)."""
    q = onnx.load(str(path))
    inits = {i.name: i for i in q.graph.initializer}
    return {inits[n.input[2]].data_type for n in q.graph.node
            if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits and n.input[0] not in inits}


def test_int8_activations_follow_the_backbone_spec_unless_asked(run_dir, exported, tmp_path, monkeypatch):
    import dataclasses

    import birdvision.exporting.pipeline as pipeline
    from birdvision.models import get_spec

    assert not get_spec("test_tiny").int8_symmetric_activations
    assert not get_spec("efficientnet_lite0").int8_symmetric_activations  # U8S8 fuses end to end once padding is constant
    assert _activation_zero_point_types(exported / "model.int8.onnx") == {onnx.TensorProto.UINT8}
    out = tmp_path / "sym"
    assert main([f"ckpt={run_dir}", "format=int8", f"output_dir={out}", "parity.max_acc_drop=0.5",
                 "calibration.symmetric_activations=true"]) == 0
    assert _activation_zero_point_types(out / "model.int8.onnx") == {onnx.TensorProto.INT8}
    # a backbone whose spec asks for signed activations gets them by default, and U8 when told
    monkeypatch.setattr(pipeline, "get_spec", lambda name: dataclasses.replace(get_spec(name), int8_symmetric_activations=True))
    assert main([f"ckpt={run_dir}", "format=int8", f"output_dir={tmp_path / 'spec'}", "parity.max_acc_drop=0.5"]) == 0
    assert _activation_zero_point_types(tmp_path / "spec" / "model.int8.onnx") == {onnx.TensorProto.INT8}
    assert main([f"ckpt={run_dir}", "format=int8", f"output_dir={tmp_path / 'u8'}", "parity.max_acc_drop=0.5",
                 "calibration.symmetric_activations=false"]) == 0
    assert _activation_zero_point_types(tmp_path / "u8" / "model.int8.onnx") == {onnx.TensorProto.UINT8}


def _dequantized_weights(path) -> list[bool]:
    """For each Conv/Gemm/MatMul in graph order: is its weight the output of a DequantizeLinear (quantized)?"""
    model = onnx.load(str(path))
    made_by = {o: n.op_type for n in model.graph.node for o in n.output}
    return [made_by.get(n.input[1]) == "DequantizeLinear" for n in model.graph.node
            if n.op_type in ("Conv", "Gemm", "MatMul")]


def test_int8_keeps_the_first_convolution_and_the_classifier_float_unless_asked(run_dir, exported, tmp_path):
    default = _dequantized_weights(exported / "model.int8.onnx")
    assert len(default) >= 3 and not default[0] and not default[-1] and all(default[1:-1])
    assert main([f"ckpt={run_dir}", "format=int8", f"output_dir={tmp_path / 'all'}", "parity.max_acc_drop=0.5",
                 "calibration.keep_ends_float=false"]) == 0
    assert all(_dequantized_weights(tmp_path / "all" / "model.int8.onnx"))
