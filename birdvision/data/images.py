"""Photo decoding and transform presets driven by the backbone's spec."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from birdvision.data.files import file_problem
from birdvision.data.manifest import Sample

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Refuse to decode images larger than this many pixels (a 16k x 16k PNG is 256 Mpx):
# Pillow's own limit only warns up to twice its value.
MAX_PIXELS = 89_478_485


class ImageLoadError(ValueError):
    """An image file that cannot be decoded."""


def load_rgb(path: str | Path | io.BytesIO, draft_size: int | None = None) -> Image.Image:
    """Decode any image as RGB with its EXIF orientation applied.

    Grayscale, CMYK, palette and 16-bit images are converted; transparency is composited
    on white (a bird cut-out on black would teach the model a black background). For
    JPEGs, ``draft_size`` lets libjpeg decode at a reduced scale, much faster for photos
    far larger than the training size. Only regular files are opened: a FIFO named like a
    photo would block the first read forever. ``path`` may also be the encoded bytes in memory (shards).
    """
    problem = None if isinstance(path, io.BytesIO) else file_problem(path)
    if problem:
        raise ImageLoadError(f"{path}: {problem}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            if img.width * img.height > MAX_PIXELS:
                raise ImageLoadError(f"{path}: {img.width}x{img.height} exceeds {MAX_PIXELS} pixels")
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
                bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(bg, img)
            elif img.mode == "I;16" or img.mode == "I":
                img = img.point(lambda v: v / 256).convert("L")
            return img.convert("RGB")
    except ImageLoadError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None


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
