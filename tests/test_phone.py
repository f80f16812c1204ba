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

    from birdvision.data.images import resize_photo

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
def test_tflite_and_pte_are_gated_in_their_own_runtimes(run_dir, tmp_path):
    assert main([f"ckpt={run_dir}", "format=tflite,pte", f"output_dir={tmp_path}"]) == 0
    card = json.loads((tmp_path / "model.json").read_text())
    for name in ("model.tflite", "model.pte"):
        rep = json.loads((tmp_path / f"parity.{name.split('.')[-1]}.json").read_text())
        assert rep["passed"] and rep["top1_agreement"] == 1.0 and rep["max_abs_diff"] <= 1e-4 and rep["n"] == 12
        entry = card["files"][name]
        assert entry["input"]["shape"] == [1, 32, 32, 3] and entry["input"]["dynamic_axes"] == []
        assert entry["input_kind"] == "uint8_nhwc" and entry["parity"]["passed"]
    # bench times both files next to ONNX Runtime (one photo per call, as on a phone), with their gated accuracy
    from birdvision.bench import benchmark_checkpoint

    res = benchmark_checkpoint(run_dir, engines=("ort_fp32", "tflite", "pte"), export_dir=tmp_path, batch=2,
                               iters=2, rounds=1, isolate=False)
    for engine in ("tflite", "pte"):
        row = res["engines"][engine]
        assert "skipped" not in row and row["median_ms"] > 0 and row["throughput_ips"] > 0
        assert row["acc"] == res["engines"]["ort_fp32"]["acc"]  # the same photos, the same answers
