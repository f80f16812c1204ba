"""From a decoded photo to the network's input: one resize, one normalisation, everywhere.

Training, evaluation, the export's parity reference and prediction on PyTorch all call
:func:`resize_photo` on the full decode (:func:`~birdvision.data.photos.decode.load_rgb`), and
the exported ``model.onnx`` repeats it inside the graph (ONNX ``Resize`` with
``antialias=1``, see :mod:`birdvision.exporting.graphs`), so an app only decodes.

The resize: the photo is squashed to ``size x size`` (no crop, aspect ratio not kept) by an
antialiased filter over float pixels: ``torch.nn.functional.interpolate(mode="bilinear"
| "bicubic", antialias=True, align_corners=False)``. That is the filter Pillow's
``resize(BILINEAR | BICUBIC)`` applies (a triangle / Keys a=-0.5 kernel stretched by the
scale factor when shrinking, taps outside the image dropped and the weights renormalised)
without Pillow's rounding to uint8 between the two passes; ONNX ``Resize(mode=linear |
cubic, antialias=1, exclude_outside=1, cubic_coeff_a=-0.5, half_pixel)`` computes the same
numbers (tested to 0.01 grey levels on odd sizes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from birdvision.data.manifest import Sample
from birdvision.data.photos.decode import ImageLoadError, load_rgb

if TYPE_CHECKING:
    from birdvision.spec import ImageSpec

log = logging.getLogger(__name__)

# interpolation name -> torch.nn.functional.interpolate mode. Lanczos has no ONNX Resize (nor torch) equivalent;
# "nearest" is left out too: torch's floor(dst * (in / out)) and ONNX's floor(dst / (out / in)) round differently
# where dst * in / out is a whole number (4.4 normalised units apart on a 1000 x 640 photo), and no backbone uses it.
RESIZE_MODES = {"bilinear": "bilinear", "bicubic": "bicubic"}


def resize_mode(interpolation: str) -> str:
    """The ``F.interpolate`` mode of a spec's interpolation; a clear error for one no export can repeat."""
    mode = RESIZE_MODES.get(str(interpolation).lower())
    if mode is None:
        raise ValueError(f"interpolation={interpolation!r} cannot be reproduced inside an ONNX graph; "
                         f"use one of {', '.join(RESIZE_MODES)}")
    return mode


def resize_photo(x: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Float photos ``[..., C, H, W]`` (any H, W) squashed to ``[..., C, size, size]`` with the antialiased filter.

    The one resize of every model input (module docstring). Integer input is converted to float32 first
    (never resized in uint8: that would round between passes as Pillow does).
    """
    mode = resize_mode(interpolation)
    if not x.is_floating_point():
        x = x.float()
    if tuple(x.shape[-2:]) == (size, size):
        return x
    lead = x.shape[:-3]
    x4 = x.reshape(-1, *x.shape[-3:])
    out = F.interpolate(x4, size=(size, size), mode=mode, antialias=True, align_corners=False)
    return out.reshape(*lead, *out.shape[-3:])


class PhotoResize(torch.nn.Module):
    """:func:`resize_photo` as a transform (float tensors ``[C, H, W]`` in, ``[C, size, size]`` out)."""

    def __init__(self, size: int, interpolation: str = "bilinear") -> None:
        super().__init__()
        resize_mode(interpolation)
        self.size, self.interpolation = int(size), interpolation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_photo(x, self.size, self.interpolation)


def _to_float(img: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """A decoded RGB photo (PIL, ``uint8 [H, W, 3]`` or a ``[3, H, W]`` tensor) as float32 ``[3, H, W]`` in [0, 1]."""
    if isinstance(img, Image.Image):
        img = np.array(img.convert("RGB"))
    if isinstance(img, np.ndarray):
        if not (img.flags.writeable and img.flags.c_contiguous):
            img = np.array(img)  # torch.from_numpy wants memory it may write (a read-only view warns)
        t = torch.from_numpy(img).permute(2, 0, 1)
    else:
        t = img
    return t.float() / 255.0 if not t.is_floating_point() else t


def photo_tensor(photos: Sequence[Any] | np.ndarray, pre: ImageSpec) -> torch.Tensor:
    """Decoded photos (any sizes) -> the network's input ``float32 [B, 3, size, size]``: resize, then (x - mean) / std.

    The PyTorch side of every parity check and prediction; the eval transform is this for one photo.
    """
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(3, 1, 1)
    out = [(resize_photo(_to_float(p), pre.size, pre.interpolation) - mean) / std for p in photos]
    if not out:
        return torch.zeros((0, 3, pre.size, pre.size))
    return torch.stack(out).contiguous()


class EvalTransform:
    """Decoded photo -> normalised ``[3, size, size]`` tensor: :func:`photo_tensor` for one photo (nothing random)."""

    def __init__(self, pre: ImageSpec) -> None:
        resize_mode(pre.interpolation)
        self.pre = pre

    def __call__(self, img: Any) -> torch.Tensor:
        return photo_tensor([img], self.pre)[0]

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.pre.size}, interpolation={self.pre.interpolation}, antialias=True)"


def eval_transform(pre: ImageSpec) -> EvalTransform:
    """Resize to the square input size and normalise: nothing random."""
    return EvalTransform(pre)


def train_transform(
    pre: ImageSpec,
    *,
    hflip: bool = True,
    perspective: float = 0.2,
    rotation_deg: float = 15.0,
    affine_translate: float = 0.1,
    affine_scale: float = 0.1,
) -> T.Compose:
    """The study's augmentations (flip, perspective, rotation, affine); each off at 0/False.

    The photo is resized first with the eval resize (:func:`resize_photo`, float), so a model
    never learns from a resampling it will not meet after export; geometry then runs on the
    small float image, where it is cheapest.
    """
    steps: list[Any] = [_to_float, PhotoResize(pre.size, pre.interpolation)]
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
    steps.append(T.Normalize(pre.mean, pre.std))
    return T.Compose(steps)


class ImageDataset(Dataset):
    """Photos from manifest samples; a file that fails to decode is logged and replaced.

    Broken files are meant to be removed by the audit; one that slips through must not
    stop an epoch, so it is logged (once) and the next sample is served instead.
    """

    def __init__(self, samples: list[Sample], class_to_idx: dict[str, int], transform: Any):
        self.samples = samples
        self.class_to_idx = class_to_idx
        self.transform = transform
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
                img = load_rgb(s.path)
            except ImageLoadError as e:
                if j not in self._bad:
                    self._bad.add(j)
                    log.warning("skipping unreadable image (run birdvision.audit to remove it): %s", e)
                continue
            return self.transform(img), self.class_to_idx[s.label]
        raise ImageLoadError("no image of this dataset can be decoded")
