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
