"""One LightningDataModule for both modes: datasets per split plus optional on-device batch transforms.

In spectrogram mode the datasets yield waveform windows and the mel frontend runs here,
on the accelerator, after the batch is transferred; the model never knows the mode.
"""

from __future__ import annotations

import os

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler


class BirdDataModule(L.LightningDataModule):
    """Loaders for ``train``/``valid``/``test`` datasets built by :mod:`birdvision.data.pipeline`."""

    def __init__(
        self,
        datasets: dict[str, Dataset],
        *,
        batch_size: int,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        batch_transform: nn.Module | None = None,
        train_batch_transform: nn.Module | None = None,
        train_sampler: Sampler | None = None,
    ) -> None:
        super().__init__()
        self.datasets = datasets
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = min(num_workers, os.cpu_count() or 1) if num_workers > 0 else 0
        self.batch_transform = batch_transform
        self.train_batch_transform = train_batch_transform
        self.train_sampler = train_sampler
        self._train_loader: DataLoader | None = None
        self._train_loader_state: dict | None = None

    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = self.datasets[split]
        if getattr(ds, "streamed", False):  # shards: LitData's loader, whose position checkpoints keep
            from birdvision.data.photos.shards import shard_loader

            loader = shard_loader(ds, batch_size=self.batch_size if train else self.eval_batch_size,
                                  num_workers=self.num_workers, drop_last=train and len(ds) > self.batch_size)
            if train:
                if self._train_loader_state is not None:
                    loader.load_state_dict(self._train_loader_state)
                    self._train_loader_state = None
                self._train_loader = loader
            return loader
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and self.train_sampler is None,
            sampler=self.train_sampler if train else None,
            drop_last=train and len(ds) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    # The training loader's position, in every checkpoint, for a mid-epoch resume from shards. Lightning
    # keeps it too, but restores it only into a loader it builds after the restore, and our one-cycle
    # schedule has it build the loader before (to count steps), so the datamodule carries it.
    def state_dict(self) -> dict:
        loader = self._train_loader
        return {"train_loader": loader.state_dict()} if loader is not None and hasattr(loader, "state_dict") else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._train_loader_state = state_dict.get("train_loader")
        if self._train_loader_state is not None and self._train_loader is not None:
            self._train_loader.load_state_dict(self._train_loader_state)
            self._train_loader_state = None

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", False)

    def test_dataloader(self) -> DataLoader:
        # Never the valid split in its place: its numbers would be reported as test/*.
        return self._loader("test", False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y, *rest = batch  # shard batches also carry each item's index
        if self.batch_transform is not None:
            self.batch_transform.to(x.device)
            with torch.no_grad():
                x = self.batch_transform(x)
        if self.train_batch_transform is not None and self.trainer is not None and self.trainer.training:
            self.train_batch_transform.to(x.device)
            with torch.no_grad():
                x = self.train_batch_transform(x)
        return (x, y, *rest)
