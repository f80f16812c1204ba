"""Backbones declared as data, one factory that builds them, and the head/first-conv surgery."""

from birdvision.models.factory import create_model, split_parameters
from birdvision.models.registry import BACKBONES, BackboneSpec, get_spec
from birdvision.models.weights import WeightsUnavailableError

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "WeightsUnavailableError",
    "create_model",
    "get_spec",
    "split_parameters",
]
