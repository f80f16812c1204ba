"""INT8 call models: the network quantised, the mel frontend float; "same" padding made constant and folded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
from torch import nn

from birdvision.exporting import graphs
from tests.conftest import tiny_calls_classifier

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def test_same_padding_is_constant_in_the_exported_graph():
    """timm's Conv2dSame computes its padding from the input shape; the exported network pads by constants."""
    from timm.layers.conv2d_same import Conv2dSame

    torch.manual_seed(0)
    net = nn.Sequential(Conv2dSame(1, 4, 3, stride=2), nn.ReLU6(), Conv2dSame(4, 4, 3, stride=2, groups=4),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    shape = (1, 37, 50)  # odd and even sides: asymmetric padding on one of them
    fixed = graphs.static_same_padding(net, shape)
    assert fixed is not net and sum(isinstance(m, graphs._StaticPadConv) for m in fixed.modules()) == 2
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert torch.allclose(net(x), fixed(x), atol=1e-6)  # same numbers at this size
    model = graphs.export_net(net, shape, 17)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Shape", "Gather", "Ceil", "Pad"}  # constant padding, folded into the convolutions
    pads = [list(a.ints) for n in model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    assert any(p[0] != p[2] or p[1] != p[3] for p in pads)  # TF "same" padding is asymmetric at stride 2
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(s.run(None, {"input": x.numpy()})[0], net(x).detach().numpy(), atol=1e-5)
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    assert graphs.static_same_padding(plain, shape) is plain  # nothing to fix: the network itself


@pytest.fixture(scope="module")
def calls_run(tmp_path_factory) -> Path:
    """A tiny spectrogram checkpoint with a manifest of labelled windows beside it (a run folder)."""
    from birdvision.data.manifest import Sample, write_manifest

    run = tmp_path_factory.mktemp("calls_run")
    m = tiny_calls_classifier(SR)
    (run / "checkpoints").mkdir()
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict()}, run / "checkpoints" / "best.ckpt")
    samples = []
    rng = np.random.default_rng(0)
    for i in range(12):
        label = "abc"[i % 3]
        p = run / "clips" / label / f"c{i}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(1.2 * 22050)) / 22050
        f0 = {"a": 900, "b": 2500, "c": 5000}[label] * (1 + 0.05 * i)
        sf.write(p, (0.3 * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32), 22050)
        samples.append(Sample(path=str(p), label=label, split="valid" if i < 8 else "test", group=str(p)))
    write_manifest(run / "manifest.csv", samples)
    return run


def test_int8_call_model_quantises_the_network_and_keeps_the_frontend_float(tmp_path, calls_run):
    from birdvision.export import main as export_main

    out = tmp_path / "export"
    # an untrained net: the gate's thresholds are opened so the test is about the graph, not accuracy
    assert export_main([f"ckpt={calls_run}", "format=int8", f"output_dir={out}", "parity.max_acc_drop=1.0",
                        "calibration.n=8"]) == 0
    model = onnx.load(str(out / "model.int8.onnx"))
    assert model.graph.input[0].name == "waveform"  # raw windows in, like model.onnx
    q_nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert q_nodes and not any(n.name.startswith("pre_") for n in q_nodes)  # the mel frontend stays float
    frontend = [n for n in model.graph.node if n.name.startswith("pre_")]
    assert frontend and all(n.op_type not in ("QLinearConv", "QLinearMatMul") for n in frontend)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "int8" and meta["input_kind"] == "waveform"
    report = json.loads((out / "parity.int8.json").read_text())
    assert report["n"] == 8 and report["passed"]  # gated on the run's real (here: generated) windows

    # predict runs it without torch, over a recording, like the fp32 file
    rec = tmp_path / "rec.wav"
    sf.write(rec, (0.1 * np.random.default_rng(1).standard_normal(5 * 22050)).astype(np.float32), 22050)
    code = (f"import sys; from birdvision.predict import main; "
            f"rc = main(['model={out / 'model.int8.onnx'}', 'input={rec}', 'output={tmp_path / 'p.csv'}']); "
            f"print('RC', rc, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "RC 0 False" in r.stdout, r.stderr[-2000:]
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + 5  # five 1 s windows


def test_bench_times_int8_call_models_in_real_time_units(tmp_path, calls_run):
    from birdvision.benchmarking.benchmark import benchmark_checkpoint
    from birdvision.benchmarking.table import engine_table
    from birdvision.export import main as export_main

    out = tmp_path / "export"
    assert export_main([f"ckpt={calls_run}", "format=onnx,int8", f"output_dir={out}", "parity.max_acc_drop=1.0",
                        "calibration.n=8"]) == 0
    res = benchmark_checkpoint(calls_run, engines=("ort_fp32", "ort_int8"), export_dir=out, threads=1, batch=4,
                               iters=2, rounds=1, isolate=False)
    for e in ("ort_fp32", "ort_int8"):
        row = res["engines"][e]
        assert row["x_real_time"] == pytest.approx(row["throughput_ips"] * 1.0)  # 1 s windows
    from rich.console import Console

    c = Console(record=True, width=200)
    c.print(engine_table(res))
    assert "x real time" in c.export_text()
