"""Photo decoding without PyTorch: any image file -> RGB, and the one resize every model input goes through.

Training (:mod:`birdvision.data.images`), the export's parity samples and prediction all
decode with :func:`load_rgb`; the exported models and the predict path size photos with
:func:`resize_uint8`. Only Pillow and numpy are imported here, so an ONNX predict run
decodes photos without loading PyTorch.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from birdvision.data.files import file_problem

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Refuse to decode images larger than this many pixels (a 16k x 16k PNG is 256 Mpx):
# Pillow's own limit only warns up to twice its value.
MAX_PIXELS = 89_478_485
PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


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


def resize_uint8(img: Image.Image, size: int, interpolation: str) -> np.ndarray:
    """A PIL image squashed to ``size x size`` with the checkpoint's filter, as ``uint8 [H, W, 3]``.

    Same call torchvision's ``Resize`` makes on PIL input, so the training-time eval
    transform and this array agree.
    """
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), PIL_FILTERS.get(interpolation, Image.Resampling.BILINEAR))
    return np.asarray(img, dtype=np.uint8).copy()
