"""What training needs from the data edge, whichever the mode: the :class:`Pipeline` record.

A leaf: the photo and audio builders (:mod:`birdvision.data.photos.pipeline`,
:mod:`birdvision.data.audio.pipeline`) both return one, and :mod:`birdvision.data.build` picks the
builder, so neither imports the other nor the dispatcher back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from torch.utils.data import Dataset

from birdvision.data.manifest import Sample
from birdvision.spec import Spec


@dataclass
class Pipeline:
    """What training needs from the data edge."""

    samples: list[Sample]
    classes: list[str]
    datasets: dict[str, Dataset]
    preprocess: Spec  # stored in every checkpoint as preprocess.to_dict()
    in_chans: int = 3
    skipped: list[tuple[str, str]] = field(default_factory=list)
    origin: str = ""
    batch_transform: nn.Module | None = None
    train_batch_transform: nn.Module | None = None
    background_class: str | None = None  # the no-call class of spectrogram mode (never a prediction), if any
