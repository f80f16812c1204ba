"""Build a backbone from its spec: weights (torchvision cache or a local file), new head, 1-channel input."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from birdvision.models.registry import BackboneSpec, get_spec


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be had (offline, missing file, wrong file)."""


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)  # type: ignore[index]
    return module


def _set(module: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = _get(module, parent_path) if parent_path else module
    if leaf.isdigit():
        parent[int(leaf)] = new  # type: ignore[index]
    else:
        setattr(parent, leaf, new)


def _builder(spec: BackboneSpec):
    if ":" in spec.builder:
        mod, fn = spec.builder.split(":")
        return getattr(importlib.import_module(mod), fn)
    return getattr(torchvision.models, spec.builder)


def weights_enum(spec: BackboneSpec):
    """The torchvision weights enum member of a spec (None for backbones without weights)."""
    if spec.weights is None:
        return None
    enum_name, member = spec.weights.split(".")
    return getattr(getattr(torchvision.models, enum_name), member)


def weights_cache_file(spec: BackboneSpec) -> Path | None:
    """Where torchvision caches the spec's weights: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    w = weights_enum(spec)
    if w is None:
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)


def _unavailable(spec: BackboneSpec, reason: str) -> WeightsUnavailableError:
    cache = weights_cache_file(spec)
    where = f"put the torchvision file at {cache} (TORCH_HOME={torch.hub.get_dir().rsplit('/hub', 1)[0]})" if cache else ""
    return WeightsUnavailableError(
        f"pretrained weights for {spec.name} are not available: {reason}. To use them, {where} "
        f"or pass model.weights_path=FILE (a state_dict of torchvision's {spec.builder}). "
        "To train from scratch instead, pass model.pretrained=false."
    )


def _pretrained_state(spec: BackboneSpec, weights_path: str | None) -> dict[str, torch.Tensor]:
    if weights_path:
        p = Path(weights_path).expanduser()
        if not p.is_file():
            raise _unavailable(spec, f"model.weights_path={p} does not exist")
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for foreign files
            raise _unavailable(spec, f"{p} is not a readable torch state_dict ({type(e).__name__}: {e})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        return state
    w = weights_enum(spec)
    if w is None:
        raise WeightsUnavailableError(
            f"{spec.name} has no pretrained weights; pass model.pretrained=false or model.weights_path=FILE"
        )
    cache = weights_cache_file(spec)
    if cache is not None and not cache.is_file() and os.environ.get("BIRDVISION_OFFLINE", "") == "1":
        raise _unavailable(spec, f"{cache} is missing and BIRDVISION_OFFLINE=1")
    try:
        return w.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # URLError, socket errors, hash mismatch ...
        raise _unavailable(spec, f"{cache} is missing and downloading it failed ({type(e).__name__}: {e})") from None


def _load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], spec: BackboneSpec) -> None:
    """Load everything but the classifier; a file of another architecture is refused."""
    head = spec.classifier + "."
    own = model.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith(head)}
    missing = [k for k in own if not k.startswith(head) and k not in body]
    mismatched = [k for k, v in body.items() if k in own and own[k].shape != v.shape]
    unexpected = [k for k in body if k not in own]
    if missing or mismatched or unexpected:
        raise WeightsUnavailableError(
            f"the weights do not fit {spec.name}: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(mismatched)} mismatched tensors (first: {(missing + unexpected + mismatched)[:3]}); "
            "is this a file for another backbone?"
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
    new = nn.Conv2d(
        in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(new_w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
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
        _load_backbone_state(model, _pretrained_state(spec, weights_path), spec)
    old = _get(model, spec.classifier)
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
            _get(model, spec.dropout).p = drop_rate
    if in_chans != 3:
        _set(model, spec.first_conv, adapt_first_conv(_get(model, spec.first_conv), in_chans))
    return model


def split_parameters(model: nn.Module, name: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(head parameters, backbone parameters) of a model built by :func:`create_model`."""
    classifier = get_spec(name).classifier
    prefix = classifier.rpartition(".")[0] or classifier  # the module holding the Linear (e.g. "classifier")
    head, body = [], []
    for n, p in model.named_parameters():
        (head if n == prefix or n.startswith(prefix + ".") else body).append(p)
    return head, body
