"""Running the network once over a dataset (logits and labels), and the images shown for the top losses."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from birdvision.config import ConfigError
from birdvision.spec import Spec

log = logging.getLogger("birdvision.evaluate")


# ----------------------------------------------------------------------------- running the model


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={name!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: CUDA is not available on this machine")
    return dev


@torch.no_grad()
def compute_logits(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    batch_transform: torch.nn.Module | None,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits (temperature 1) and integer labels for every item of ``dataset``, in order."""
    model = model.to(device).eval()
    if batch_transform is not None:
        batch_transform = batch_transform.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    out, ys = [], []
    for x, y in loader:
        x = x.to(device)
        if batch_transform is not None:
            x = batch_transform(x)
        out.append(model(x).float().cpu())
        ys.append(torch.as_tensor(y))
    if not out:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return torch.cat(out).numpy(), torch.cat(ys).numpy().astype(np.int64)


def item_name(dataset: Dataset, i: int) -> str:
    """A file name for item ``i`` when the dataset can tell (image datasets map items to samples 1:1)."""
    describe = getattr(dataset, "describe", None)
    if callable(describe):
        return str(describe(i))
    samples = getattr(dataset, "samples", None)
    if samples is not None and len(samples) == len(dataset):  # type: ignore[arg-type]
        s = samples[i]
        name = Path(s.path).name
        return f"{name}@{s.start_s:g}s" if getattr(s, "start_s", None) is not None else name
    return f"#{i}"


def _display_image(x: torch.Tensor, spec: Spec) -> np.ndarray:
    """Undo the normalisation of a photo (to HWC in [0, 1]); show a spectrogram's first channel as is."""
    if spec.is_audio:
        return x[0].cpu().numpy()
    mean = torch.tensor(spec.mean).view(-1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1)
    return (x.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


@torch.no_grad()
def top_loss_images(dataset: Dataset, idx: list[int], spec: Spec,
                     batch_transform: torch.nn.Module | None) -> list[np.ndarray]:
    images = []
    for i in idx:
        x = dataset[i][0]
        if batch_transform is not None:
            x = batch_transform.cpu()(x.unsqueeze(0))[0]
        images.append(_display_image(x, spec))
    return images
