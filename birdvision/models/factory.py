"""Build a backbone from its spec: pretrained weights (see :mod:`.weights`), new head, 1-channel input."""

from __future__ import annotations

import copy
import importlib

import torch
import torchvision
from torch import nn

from birdvision.models.registry import BackboneSpec, get_spec
from birdvision.models.weights import WeightsUnavailableError, pretrained_state


def get_module(module: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path (``classifier.1``, ``features.0.0``)."""
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)  # type: ignore[index]
    return module


def _set(module: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = get_module(module, parent_path) if parent_path else module
    if leaf.isdigit():
        parent[int(leaf)] = new  # type: ignore[index]
    else:
        setattr(parent, leaf, new)


def _resolve(ref: str):
    """``"package.module:name"`` -> the object it names."""
    mod, fn = ref.split(":")
    return getattr(importlib.import_module(mod), fn)


def _builder(spec: BackboneSpec):
    return _resolve(spec.builder) if ":" in spec.builder else getattr(torchvision.models, spec.builder)


def _load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], spec: BackboneSpec,
                         *, with_head: bool = False) -> None:
    """Load everything but the classifier (all of it ``with_head``); a file of another architecture
    is refused, naming the first bad key."""
    if spec.remap:
        state = _resolve(spec.remap)(state, model)
    head = spec.classifier + "."

    def wanted(key: str) -> bool:
        return with_head or not key.startswith(head)

    own = model.state_dict()
    body = {k: v for k, v in state.items() if wanted(k)}
    missing = [k for k in own if wanted(k) and k not in body]
    unexpected = [k for k in body if k not in own]
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in body.items() if k in own and own[k].shape != v.shape]
    if missing or mismatched or unexpected:
        first = "; ".join(f"first {what}: {keys[0]}" for what, keys in
                          (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)) if keys)
        raise WeightsUnavailableError(
            f"the weights do not fit {spec.name}: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(mismatched)} mismatched tensors ({first}); is this a file for another backbone?"
        )
    model.load_state_dict(body, strict=False)


def adapt_first_conv(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """A copy of an RGB conv that takes ``in_chans`` channels.

    For 1 channel the RGB filters are summed: conv(x, sum_c W_c) = sum_c conv(x, W_c), so a
    grey input gives exactly what the RGB conv gives for that input repeated on 3 channels.
    For other counts the RGB filters are tiled and rescaled by 3/in_chans to keep the
    activation scale.
    """
    if in_chans == conv.in_channels:
        return conv
    w = conv.weight.detach()
    if in_chans == 1:
        new_w = w.sum(dim=1, keepdim=True)
    else:
        reps = -(-in_chans // w.shape[1])
        new_w = w.repeat(1, reps, 1, 1)[:, :in_chans] * (w.shape[1] / in_chans)
    # A copy keeps the conv's own class and settings (e.g. timm's TF "same" padding).
    new = copy.deepcopy(conv)
    new.in_channels = in_chans
    new.weight = nn.Parameter(new_w.clone())
    return new


def create_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights_path: str | None = None,
    in_chans: int = 3,
    drop_rate: float | None = None,
) -> nn.Module:
    """Build backbone ``name`` with a fresh ``num_classes`` head and ``in_chans`` input channels."""
    spec = get_spec(name)
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes to train a classifier, got {num_classes}")
    model = _builder(spec)(weights=None)
    if pretrained or weights_path:
        _load_backbone_state(model, pretrained_state(spec, weights_path), spec)
    old = get_module(model, spec.classifier)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{spec.name}: {spec.classifier} is {type(old).__name__}, not Linear; fix the spec")
    head = nn.Linear(old.in_features, num_classes)
    nn.init.zeros_(head.bias)
    nn.init.normal_(head.weight, std=0.01)
    _set(model, spec.classifier, head)
    if drop_rate is not None:
        if spec.dropout is None:
            _set(model, spec.classifier, nn.Sequential(nn.Dropout(drop_rate), head))
        else:
            get_module(model, spec.dropout).p = drop_rate
    if in_chans != 3:
        _set(model, spec.first_conv, adapt_first_conv(get_module(model, spec.first_conv), in_chans))
    return model


def imagenet_model(name: str, *, weights_path: str | None = None) -> nn.Module:
    """Backbone ``name`` with its pretrained weights and original ImageNet head, in eval mode.

    The proof that weights are loaded right, not merely loaded: its ImageNet predictions
    for bird photos must be bird classes.
    """
    spec = get_spec(name)
    model = _builder(spec)(weights=None)
    _load_backbone_state(model, pretrained_state(spec, weights_path), spec, with_head=True)
    return model.eval()


def split_parameters(model: nn.Module, name: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(head parameters, backbone parameters) of a model built by :func:`create_model`."""
    classifier = get_spec(name).classifier
    prefix = classifier.rpartition(".")[0] or classifier  # the module holding the Linear (e.g. "classifier")
    head, body = [], []
    for n, p in model.named_parameters():
        (head if n == prefix or n.startswith(prefix + ".") else body).append(p)
    return head, body
