"""Backbones declared as data, one factory that builds them, and the head/first-conv surgery."""

from birdvision.models.factory import WeightsUnavailableError, create_model, split_parameters
from birdvision.models.registry import BACKBONES, BackboneSpec, get_spec

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "WeightsUnavailableError",
    "create_model",
    "get_spec",
    "split_parameters",
]
