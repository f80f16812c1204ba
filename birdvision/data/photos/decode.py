"""Photo decoding without PyTorch: any image file -> the RGB pixels every model sees.

Training, evaluation, the export's parity samples and prediction all decode with
:func:`load_rgb` (a full decode: no reduced-scale JPEG ``draft``, which changes pixels
against the plain decode an app does) and then resize with one function,
:func:`birdvision.data.photos.transforms.resize_photo`, whose arithmetic the exported graph repeats
(ONNX ``Resize``, antialiased). :data:`DECODE_STEPS` writes the decode down for apps
(it goes into ``model.json``). Only Pillow and numpy are imported here, so an ONNX predict
run decodes photos without loading PyTorch.
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


# What load_rgb does, as steps an app can follow (written into model.json). Measured against plain
# decodes: Pillow's Image.open(f).convert("RGB") skips 1-3 and clips 16-bit grey at 255; OpenCV's
# imread(IMREAD_COLOR) does 1 and 3 but drops alpha (2) and gives BGR; both equal 4 and 5.
DECODE_STEPS = (
    "1. EXIF orientation: rotate/flip the photo as its EXIF Orientation tag says (Pillow "
    "ImageOps.exif_transpose; OpenCV imread and browsers (createImageBitmap, <img>) do it by default).",
    "2. Transparency (RGBA, LA, palette with a transparent colour): composite on opaque white (255, 255, 255).",
    "3. 16-bit greyscale: v >> 8 (v / 256 rounded down) to 8 bits, then grey to RGB (OpenCV imread does the same; "
    "Pillow's plain convert('RGB') clips at 255 instead). 16-bit RGB PNGs: the high byte (Pillow and OpenCV).",
    "4. CMYK JPEG: Pillow's CMYK->RGB conversion (R = round((255 - C) * (255 - K) / 255), likewise G from M "
    "and B from Y; no ICC profile); "
    "OpenCV's libjpeg conversion differs by 1 level.",
    "5. Greyscale and palette: expanded to RGB. Channel order R, G, B (OpenCV decodes B, G, R: convert).",
)


def to_rgb(img: Image.Image) -> Image.Image:
    """An opened PIL image -> RGB, as :data:`DECODE_STEPS` says (EXIF orientation, white under transparency,
    16-bit grey scaled to 8 bits)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    elif img.mode.startswith("I;16") or img.mode == "I":
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def load_rgb(path: str | Path | io.BytesIO, draft_size: int | None = None) -> Image.Image:
    """Decode any image in full as RGB (:func:`to_rgb`: EXIF orientation, transparency on white, 16-bit scaled).

    Grayscale, CMYK, palette and 16-bit images are converted; transparency is composited
    on white (a bird cut-out on black would teach the model a black background). Only
    regular files are opened: a FIFO named like a photo would block the first read
    forever. ``path`` may also be the encoded bytes in memory (shards).

    ``draft_size`` lets libjpeg decode a JPEG at a reduced scale. It is for checks that only ask
    whether a file decodes: its pixels differ from a full decode (what apps do), so nothing that
    feeds a model passes it.
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
            return to_rgb(img)
    except ImageLoadError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None


def as_rgb_array(img: Image.Image) -> np.ndarray:
    """A decoded RGB image as ``uint8 [H, W, 3]`` (a copy the caller owns)."""
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def batches_by_size(items: np.ndarray | list[np.ndarray], batch_size: int) -> list[tuple[int, np.ndarray]]:
    """``(start, batch)`` pairs over photos: consecutive items of one shape stacked, at most ``batch_size`` per batch
    (a graph that takes photos of any size still needs one size per batch). An array is cut into plain batches."""
    batch_size = max(1, int(batch_size))
    if isinstance(items, np.ndarray):
        return [(i, items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    out, i = [], 0
    while i < len(items):
        j = i + 1
        while j < len(items) and j - i < batch_size and items[j].shape == items[i].shape:
            j += 1
        out.append((i, np.stack(items[i:j])))
        i = j
    return out


def resize_uint8(img: Image.Image, size: int, interpolation: str) -> np.ndarray:
    """A PIL image squashed to ``size x size`` with Pillow's filter, as ``uint8 [H, W, 3]``.

    Only for graphs with a fixed input size (exports from before the resize moved into the graph):
    it is the resize a Pillow app does itself. Models of this version resize in float with
    :func:`birdvision.data.photos.transforms.resize_photo`, inside their exported graph.
    """
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), PIL_FILTERS.get(interpolation, Image.Resampling.BILINEAR))
    return np.asarray(img, dtype=np.uint8).copy()
