"""The Predictor: same answers from a checkpoint and its exports, clear errors for wrong inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from birdvision.export import main as export_main
from birdvision.prediction.api import InferenceError, load
from birdvision.runs.checkpoint import CheckpointError
from birdvision.spec import from_dict as spec_from_dict
from tests._bird_runs import make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_photos) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), demo_photos)


@pytest.fixture(scope="module")
def export_dir(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    assert export_main([f"ckpt={run_dir}", "format=ort", f"output_dir={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def photos(demo_photos) -> list[Path]:
    return sorted((demo_photos / "test").rglob("*.jpg"))[:6]


@pytest.mark.parametrize("name", ["model.onnx", "model.bare.onnx", "model.ort"])
def test_checkpoint_and_export_agree(run_dir, export_dir, photos, name):
    torch_p, onnx_p = load(run_dir), load(export_dir / name)
    assert torch_p.engine == "torch" and onnx_p.engine == "onnxruntime"
    assert torch_p.classes == onnx_p.classes and torch_p.preprocess == onnx_p.preprocess
    a, b = torch_p.predict_batch(photos), onnx_p.predict_batch(photos)
    assert a.shape == (len(photos), 3) and np.abs(a - b).max() < 1e-5
    top = torch_p.predict(photos[0], top_k=2)
    assert [c for c, _ in top] == [c for c, _ in onnx_p.predict(photos[0], top_k=2)]
    assert len(top) == 2 and top[0][1] >= top[1][1] and top[0][0] in torch_p.classes


def test_accepts_paths_pil_and_arrays(export_dir, photos):
    p = load(export_dir / "model.onnx")
    img = Image.open(photos[0])
    by_path = p.predict_batch([photos[0]])
    by_pil = p.predict_batch([img])
    big = np.asarray(img.resize((64, 48)))  # any size: the graph resizes it
    assert np.allclose(by_path, by_pil)
    assert p.predict_batch([big]).shape == (1, 3) and p.predict_batch(big[None]).shape == (1, 3)
    ready = np.stack([p.prepare(x) for x in photos])
    assert ready.dtype == np.uint8 and ready.shape == (6, 32, 32, 3)  # the decoded photos, at their own size
    assert np.allclose(p.predict_batch(ready), p.predict_batch(photos))
    assert p.predict_batch([]).shape == (0, 3)


@pytest.mark.parametrize("name", ["model.onnx", "model.bare.onnx"])
def test_photos_of_mixed_sizes_in_one_batch(run_dir, export_dir, photos, name):
    """Every engine takes photos at their own sizes (the resize is the model's), batched or one by one."""
    img = np.asarray(Image.open(photos[0]).convert("RGB"))
    mixed = [img, np.asarray(Image.fromarray(img).resize((301, 7))), np.asarray(Image.fromarray(img).resize((90, 1000))),
             img[:1, :1], img]
    torch_p, onnx_p = load(run_dir), load(export_dir / name)
    a, b = torch_p.predict_batch(mixed), onnx_p.predict_batch(mixed)
    one_by_one = np.concatenate([onnx_p.predict_batch([x]) for x in mixed])
    assert a.shape == (5, 3) and np.abs(a - b).max() < 1e-4 and np.abs(b - one_by_one).max() < 1e-6
    assert np.allclose(b[0], b[4])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, 32, 32, 3), np.float32), "got dtype float32"),
        (np.zeros((2, 64, 64, 4), np.uint8), "got an array of shape (2, 64, 64, 4)"),
        (np.zeros((2, 3, 32, 32), np.uint8), "expected uint8 RGB photos [B, H, W, 3]"),
        (np.zeros((2, 0, 32, 3), np.uint8), "got an array of shape (2, 0, 32, 3)"),
        ([np.zeros((32, 32), np.uint8)], "expected a uint8 RGB photo [H, W, 3]"),
        ([3.5], "got float"),
    ],
)
def test_wrong_inputs_are_named(export_dir, run_dir, bad, message):
    for p in (load(export_dir / "model.onnx"), load(run_dir)):
        with pytest.raises(InferenceError, match=None) as e:
            p.predict_batch(bad)
        assert message in str(e.value)


def test_foreign_files(tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "other.onnx"
    onnx.save(helper.make_model(g), str(foreign))
    with pytest.raises(CheckpointError, match="not a birdvision export"):
        load(foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not onnx")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        load(garbage)
    ck = tmp_path / "x.ckpt"
    torch.save({"a": 1}, ck)
    with pytest.raises(CheckpointError, match="not a birdvision checkpoint"):
        load(ck)


def test_audio_predictor_batch_both_engines(tmp_path):
    """Spectrogram models take float32 windows [B, T] on both engines (what birdvision.predict builds on)."""
    from birdvision.data.audio.mel import MelFrontend
    from birdvision.exporting import graphs
    from birdvision.exporting.metadata import build_metadata, set_metadata
    from birdvision.training.module import BirdClassifier

    mel = MelFrontend(sample_rate=8000, n_fft=256, hop_length=128, n_mels=32, f_min_hz=50, f_max_hz=4000).spec()
    spec = {"kind": "audio", "sample_rate": 8000, "clip_seconds": 1.0, "stereo": "mix", "highpass_hz": None,
            "mel": mel, "in_chans": 1}
    model = BirdClassifier("test_tiny", ["a", "b"], in_chans=1, preprocess=spec).eval()
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)},
               tmp_path / "checkpoints" / "best.ckpt")
    net = graphs.export_net(model.net, spec_from_dict(spec).net_input_shape(1), 17)
    full = graphs.compose(graphs.audio_pre_graph(spec, net, 17), net, graphs.post_graph(1.0, 2, net))
    set_metadata(full, build_metadata(dict(model.hparams), input_kind="waveform", precision="fp32"))
    graphs.save_model(full, tmp_path / "model.onnx")
    a, b = load(tmp_path), load(tmp_path / "model.onnx")
    assert a.is_audio and b.input_shape == (8000,)
    w = (np.random.default_rng(1).standard_normal((4, 8000)) * 0.1).astype(np.float32)
    assert np.abs(a.predict_batch(w) - b.predict_batch(w)).max() < 1e-4
    assert b.predict(w[0], top_k=1)[0][0] in ("a", "b")
    with pytest.raises(InferenceError, match="use birdvision.predict for long recordings"):
        b.predict_batch(np.zeros((1, 16000), np.float32))
    with pytest.raises(InferenceError, match="got dtype int16"):
        b.predict_batch(np.zeros((1, 8000), np.int16))


def test_fixed_size_uint8_export_gets_photos_resized_by_pillow(export_dir, photos, tmp_path):
    """A graph that takes uint8 photos at the model's size only (exports made before the resize moved into the
    graph): the predictor squashes photos with Pillow's bilinear filter before feeding it."""
    from onnx import TensorProto, compose, helper, numpy_helper

    from birdvision.exporting.metadata import build_metadata, read_metadata, set_metadata

    bare = onnx.load(str(export_dir / "model.bare.onnx"))
    pre = read_metadata(export_dir / "model.bare.onnx")["preprocess"]
    scale = (1 / (255 * np.asarray(pre["std"]))).astype(np.float32).reshape(1, 3, 1, 1)
    bias = (-np.asarray(pre["mean"]) / np.asarray(pre["std"])).astype(np.float32).reshape(1, 3, 1, 1)
    g = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2]),
         helper.make_node("Mul", ["t", "s"], ["m"]), helper.make_node("Add", ["m", "b"], ["input"])], "pre",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", 32, 32, 3])],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(bias, "b")])
    pre_model = helper.make_model(g, opset_imports=list(bare.opset_import))
    pre_model.ir_version = bare.ir_version
    fixed = compose.merge_models(pre_model, bare, io_map=[("input", "input")])
    hp = read_metadata(export_dir / "model.bare.onnx")
    set_metadata(fixed, build_metadata(hp, input_kind="uint8_nhwc", precision="fp32"))
    onnx.save(fixed, str(tmp_path / "fixed.onnx"))
    p = load(tmp_path / "fixed.onnx")
    assert not p.resizes and p.input_shape == (32, 32, 3)
    big = np.asarray(Image.open(photos[0]).convert("RGB").resize((64, 48)))
    assert p.prepare(big).shape == (32, 32, 3)
    assert np.abs(p.predict_batch(photos) - load(export_dir / "model.onnx").predict_batch(photos)).max() < 1e-5
    with pytest.raises(InferenceError, match=r"uint8 RGB photos \[B, 32, 32, 3\]"):
        p.predict_batch(big[None])
