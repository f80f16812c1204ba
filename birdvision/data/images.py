"""Photo decoding and transform presets driven by the backbone's spec."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from birdvision.data.image_io import IMAGE_SUFFIXES, MAX_PIXELS, ImageLoadError, load_rgb
from birdvision.data.manifest import Sample

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "ImageLoadError", "load_rgb"]  # decoding lives in image_io (no torch)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ImagePreprocess:
    """Everything needed to turn a photo into the model's input; stored with checkpoints."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def spec(self) -> dict[str, Any]:
        return {"kind": "image", "size": self.size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "resize": "squash", "layout": "RGB"}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ImagePreprocess:
        return cls(int(spec["size"]), tuple(spec["mean"]), tuple(spec["std"]), spec.get("interpolation", "bilinear"))


def _interp(name: str) -> InterpolationMode:
    return InterpolationMode(name.lower())


def eval_transform(pre: ImagePreprocess) -> T.Compose:
    """Resize to the square input size and normalise: nothing random."""
    return T.Compose(
        [
            T.Resize((pre.size, pre.size), interpolation=_interp(pre.interpolation), antialias=True),
            T.PILToTensor(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(pre.mean, pre.std),
        ]
    )


def train_transform(
    pre: ImagePreprocess,
    *,
    hflip: bool = True,
    perspective: float = 0.2,
    rotation_deg: float = 15.0,
    affine_translate: float = 0.1,
    affine_scale: float = 0.1,
) -> T.Compose:
    """The study's augmentations (flip, perspective, rotation, affine); each off at 0/False.

    Geometry runs on the uint8 tensor after resizing, where it is cheapest.
    """
    steps: list[Any] = [
        T.Resize((pre.size, pre.size), interpolation=_interp(pre.interpolation), antialias=True),
        T.PILToTensor(),
    ]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    if perspective > 0:
        steps.append(T.RandomPerspective(distortion_scale=perspective, p=0.5))
    if rotation_deg > 0:
        steps.append(T.RandomRotation(rotation_deg))
    if affine_translate > 0 or affine_scale > 0:
        steps.append(
            T.RandomAffine(
                degrees=0,
                translate=(affine_translate, affine_translate) if affine_translate > 0 else None,
                scale=(1 - affine_scale, 1 + affine_scale) if affine_scale > 0 else None,
            )
        )
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)]
    return T.Compose(steps)


class ImageDataset(Dataset):
    """Photos from manifest samples; a file that fails to decode is logged and replaced.

    Broken files are meant to be removed by the audit; one that slips through must not
    stop an epoch, so it is logged (once) and the next sample is served instead.
    """

    def __init__(self, samples: list[Sample], class_to_idx: dict[str, int], transform: Any, draft_size: int | None = None):
        self.samples = samples
        self.class_to_idx = class_to_idx
        self.transform = transform
        self.draft_size = draft_size
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        """The class index of every item, in order (for samplers)."""
        return [self.class_to_idx[s.label] for s in self.samples]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        for k in range(len(self.samples)):
            j = (i + k) % len(self.samples)
            s = self.samples[j]
            try:
                img = load_rgb(s.path, self.draft_size)
            except ImageLoadError as e:
                if j not in self._bad:
                    self._bad.add(j)
                    log.warning("skipping unreadable image (run birdvision.audit to remove it): %s", e)
                continue
            return self.transform(img), self.class_to_idx[s.label]
        raise ImageLoadError("no image of this dataset can be decoded")
