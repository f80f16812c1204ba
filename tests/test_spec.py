"""The typed preprocessing spec: the stored format round-trips, old files read, impossible fields are refused,
and what the spec builds (input shapes, network inputs, frontend, datasets) is what the data edge computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from birdvision.data.audio.mel import MelFrontend
from birdvision.data.manifest import Sample
from birdvision.data.photos.transforms import photo_tensor
from birdvision.spec import AudioSpec, ImageSpec, from_dict

IMAGE = {"kind": "image", "size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
         "interpolation": "bilinear", "resize": "squash", "layout": "RGB"}
MEL = MelFrontend(sample_rate=8000, n_fft=256, hop_length=128, n_mels=16, f_max_hz=4000.0).spec()
AUDIO = {"kind": "audio", "sample_rate": 8000, "clip_seconds": 0.5, "stereo": "mix", "highpass_hz": None,
         "mel": MEL, "in_chans": 1}


def test_stored_dicts_round_trip_unchanged():
    assert from_dict(IMAGE).to_dict() == IMAGE
    assert from_dict(AUDIO).to_dict() == AUDIO
    assert isinstance(from_dict(IMAGE), ImageSpec) and isinstance(from_dict(AUDIO), AudioSpec)


def test_a_spec_written_before_kind_existed_is_an_image_spec():
    old = {k: v for k, v in IMAGE.items() if k not in ("kind", "resize", "layout", "interpolation")}
    spec = from_dict(old)
    assert isinstance(spec, ImageSpec) and spec.interpolation == "bilinear" and spec.size == 32


@pytest.mark.parametrize("change, field", [
    ({"size": 10**6}, "preprocess.size"),
    ({"std": [0.2, 0.0, 0.2]}, "preprocess.std"),
    ({"mean": [0.5, 0.5]}, "preprocess.mean"),
    ({"interpolation": "area"}, "preprocess.interpolation"),
    ({"kind": "video"}, "preprocess.kind"),
])
def test_impossible_image_fields_name_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        from_dict({**IMAGE, **change})


@pytest.mark.parametrize("change, field", [
    ({"sample_rate": 10}, "preprocess.sample_rate"),
    ({"clip_seconds": 0}, "preprocess.clip_seconds"),
    ({"stereo": "surround"}, "preprocess.stereo"),
    ({"mel": None}, "preprocess.mel"),
    ({"mel": {**MEL, "n_fft": 1 << 20}}, "preprocess.mel.n_fft"),
    ({"mel": {**MEL, "sample_rate": 16000}}, "preprocess.mel.sample_rate"),
])
def test_impossible_audio_fields_name_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        from_dict({**AUDIO, **change})


def test_image_spec_makes_the_evaluation_transform_s_input():
    spec = from_dict(IMAGE)
    photos = [np.random.default_rng(i).integers(0, 256, (40 + i, 50, 3), dtype=np.uint8) for i in range(3)]
    got = spec.input_maker()(photos)
    assert got.shape == (3, *spec.net_input_shape()) == (3, 3, 32, 32)
    torch.testing.assert_close(got, photo_tensor(photos, spec))
    assert spec.frontend() is None and spec.raw_dtype == "uint8" and spec.raw_input_shape() == (None, None, 3)


def test_audio_spec_builds_the_frontend_and_its_shapes(tmp_path):
    spec = from_dict(AUDIO)
    assert spec.clip_samples == 4000 and spec.raw_input_shape() == (4000,) == spec.frontend_input_shape()
    waves = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32) * 0.1
    got = spec.input_maker()(waves)
    with torch.no_grad():
        want = MelFrontend.from_spec(MEL)(torch.from_numpy(waves))
    torch.testing.assert_close(got, want)
    assert tuple(got.shape[1:]) == spec.net_input_shape()


def test_eval_datasets_follow_the_spec(tmp_path):
    for i, label in enumerate(("a", "b")):
        Image.new("RGB", (20 + i, 30), (200 * i, 10, 10)).save(tmp_path / f"{label}.png")
    samples = [Sample(str(tmp_path / f"{c}.png"), c, "test") for c in ("a", "b")]
    ds = from_dict(IMAGE).eval_dataset(samples, ["a", "b"])
    x, y = ds[1]
    assert tuple(x.shape) == (3, 32, 32) and y == 1
