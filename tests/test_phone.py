"""Phone formats: LiteRT .tflite and ExecuTorch .pte where their converters are installed, a clear note where not."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from birdvision.export import main
from birdvision.exporting.phone import fixed_size_photos, missing
from tests._bird_runs import make_run

HAS = {fmt: importlib.util.find_spec(mod) is not None for fmt, mod in (("tflite", "litert_torch"), ("pte", "executorch"))}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_photos) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), demo_photos)


def test_fixed_size_photos_are_the_rounded_training_resize():
    import torch

    from birdvision.data.photos.transforms import resize_photo

    pre = {"size": 24, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}
    photo = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    got = fixed_size_photos([photo, photo[:24, :24]], pre)
    want = resize_photo(torch.from_numpy(photo).permute(2, 0, 1), 24).round().permute(1, 2, 0).numpy()
    assert got.dtype == np.uint8 and got.shape == (2, 24, 24, 3)
    assert np.array_equal(got[0], want) and np.array_equal(got[1], photo[:24, :24])


@pytest.mark.skipif(all(HAS.values()), reason="both converters are installed here")
def test_without_the_extras_a_named_format_fails_and_all_says_so(run_dir, tmp_path, capsys):
    fmt = next(f for f, ok in HAS.items() if not ok)
    assert main([f"ckpt={run_dir}", f"format={fmt}", f"output_dir={tmp_path / 'a'}"]) == 2
    err = capsys.readouterr().err
    assert f"format={fmt}" in err and "not installed" in err and "pip install birdvision[" in err
    assert main([f"ckpt={run_dir}", "format=all", f"output_dir={tmp_path / 'c'}", "parity.max_acc_drop=0.5",
                 "calibration.batch_size=4"]) == 0
    notes = json.loads((tmp_path / "c" / "export.json").read_text())["notes"]
    name = {"tflite": "model.tflite", "pte": "model.pte"}[fmt]
    assert any(n.startswith(f"no {name}:") and "not installed" in n for n in notes)
    assert missing(fmt) and "pip install birdvision[" in missing(fmt)


@pytest.mark.skipif(not all(HAS.values()), reason="needs litert-torch and executorch (birdvision[litert,executorch])")
def test_tflite_and_pte_fp32_and_int8_are_gated_in_their_own_runtimes(run_dir, tmp_path):
    assert main([f"ckpt={run_dir}", "format=tflite,pte,tflite_int8,pte_int8", f"output_dir={tmp_path}",
                 "parity.max_acc_drop=0.5", "calibration.batch_size=4"]) == 0
    card = json.loads((tmp_path / "model.json").read_text())
    for name in ("model.tflite", "model.pte", "model.int8.tflite", "model.int8.pte"):
        rep = json.loads((tmp_path / f"parity{name.removeprefix('model')}.json").read_text())
        int8 = ".int8." in name
        assert rep["passed"] and rep["n"] == 12 and rep["precision"] == ("int8" if int8 else "fp32")
        if int8:  # the INT8 threshold: accuracy drop (opened for this untrained model), not probability equality
            assert rep["acc_drop"] <= 0.5 and rep["thresholds"]["max_acc_drop"] == 0.5
            fp32 = json.loads((tmp_path / f"parity.{name.split('.')[-1]}.json").read_text())
            assert rep["mean_abs_diff"] > 10 * fp32["mean_abs_diff"]  # really computed in INT8, not a float copy
        else:
            assert rep["top1_agreement"] == 1.0 and rep["max_abs_diff"] <= 1e-4
        entry = card["files"][name]
        assert entry["input"]["shape"] == [1, 32, 32, 3] and entry["input"]["dynamic_axes"] == []
        assert entry["input_kind"] == "uint8_nhwc" and entry["parity"]["passed"]
        assert entry["precision"] == ("int8" if int8 else "fp32")
    # the quantized convolution's 8x16x3x3 weights are stored in one byte instead of four
    for ext in ("tflite", "pte"):
        saved = (tmp_path / f"model.{ext}").stat().st_size - (tmp_path / f"model.int8.{ext}").stat().st_size
        assert saved >= 2 * 8 * 16 * 9, (ext, saved)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tmp_path / "model.int8.tflite"))
    assert any(d["dtype"] == np.int8 for d in it.get_tensor_details())
    # the uint8 photo in and the probabilities out: normalisation and softmax stay float around the INT8 network
    assert it.get_input_details()[0]["dtype"] == np.uint8 and it.get_output_details()[0]["dtype"] == np.float32
    # bench times the files next to ONNX Runtime (one photo per call, as on a phone), with their gated accuracy
    from birdvision.benchmarking.benchmark import benchmark_checkpoint

    engines = ("tflite", "pte", "tflite_int8", "pte_int8")
    stamp = (tmp_path / "model.int8.pte").stat().st_mtime_ns
    res = benchmark_checkpoint(run_dir, engines=("ort_fp32", *engines), export_dir=tmp_path, batch=2, iters=2,
                               rounds=1, isolate=False)
    assert (tmp_path / "model.int8.pte").stat().st_mtime_ns == stamp  # the gated files are reused, not re-exported
    for engine in engines:
        row = res["engines"][engine]
        assert "skipped" not in row and row["median_ms"] > 0 and row["throughput_ips"] > 0
        assert row["acc_torch"] == res["engines"]["ort_fp32"]["acc"]  # the same photos
        if "int8" not in engine:
            assert row["acc"] == res["engines"]["ort_fp32"]["acc"]  # the same answers


def _tiny_app():
    """(app module of a tiny 3-class photo model, its preprocessing, 4 uint8 calibration photos)."""
    from birdvision.exporting.phone import AppModule
    from birdvision.training.module import BirdClassifier

    pre = {"size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bilinear"}
    model = BirdClassifier("test_tiny", ["a", "b", "c"], preprocess=pre, manifest_digest="x", recipe="t").eval()
    calib = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    return AppModule(model.net, pre, 1.0), pre, calib


@pytest.mark.skipif(not all(HAS.values()), reason="needs litert-torch and executorch (birdvision[litert,executorch])")
@pytest.mark.parametrize("runtime", ["tflite", "pte"])
def test_int8_quantizes_the_network_only_and_keeps_its_ends_float_when_asked(runtime):
    import torch

    from birdvision.exporting.phone import example_input, quantize_module

    app, pre, calib = _tiny_app()

    def weights_int8(keep_ends_float: bool) -> int:
        gm = quantize_module(runtime, app, example_input(pre), calib, keep_ends_float=keep_ends_float)
        ops = [n for n in gm.graph.nodes if n.op == "call_function"]
        assert "softmax" in str(ops[-1].target)
        assert "dequantize" not in str(ops[-1].args[0].target)  # the softmax reads float: temperature, softmax float
        return sum("dequantize_per_channel" in str(n.target) for n in ops)  # per-channel weights

    assert weights_int8(True) == 1  # the second convolution; the first and the classifier stay float
    assert weights_int8(False) == 3  # both convolutions and the classifier
    with torch.no_grad():  # the module itself is untouched (the FP32 files are built from it too)
        assert app(torch.from_numpy(calib)).dtype == torch.float32


@pytest.mark.skipif(not all(HAS.values()), reason="needs litert-torch and executorch (birdvision[litert,executorch])")
@pytest.mark.parametrize("runtime", ["tflite", "pte"])
def test_int8_activations_follow_the_calibration_settings(runtime):
    import torch

    from birdvision.exporting.phone import example_input, quantize_module

    app, pre, calib = _tiny_app()

    def activation_zero_points(**kw) -> set[int]:
        gm = quantize_module(runtime, app, example_input(pre), calib, keep_ends_float=False, **kw)
        return {int(n.args[2]) for n in gm.graph.nodes
                if n.op == "call_function" and "quantize_per_tensor" in str(n.target)}

    assert activation_zero_points(method="minmax", symmetric_activations=True) == {0}  # centred on zero
    assert activation_zero_points(method="histogram", symmetric_activations=False) - {0}  # affine: shifted
    with torch.no_grad():
        assert app(torch.from_numpy(calib)).dtype == torch.float32


@pytest.mark.skipif(not all(HAS.values()), reason="needs litert-torch and executorch (birdvision[litert,executorch])")
@pytest.mark.parametrize("fmt", ["tflite", "pte"])
def test_call_model_fp32_builds_and_matches_with_its_mel_frontend(fmt, tmp_path):
    # the frontend's DFT kernels once had a zero stride on their channel axis, which ExecuTorch refused
    import torch

    from birdvision.exporting import phone
    from tests.conftest import tiny_calls_classifier

    m = tiny_calls_classifier()
    pre = dict(m.hparams.preprocess)
    module = phone.AppModule(m.net, pre, 1.0, 1)
    assert 0 not in module.frontend.dft_kernels.stride()
    path = phone.build(fmt, module, pre, tmp_path)
    x = np.random.default_rng(0).normal(0, 0.1, (3, int(pre["sample_rate"] * pre["clip_seconds"]))).astype(np.float32)
    got = phone.session(fmt, path).run(None, {"waveform": x})[0]
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() < 1e-4 and (got.argmax(1) == ref.argmax(1)).all()
