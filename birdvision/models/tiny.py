"""A tiny CNN with the same head layout as torchvision's EfficientNet, for fast tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """``features`` -> global pool -> ``classifier`` (Dropout, Linear), like EfficientNet."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def build(*, weights: None = None, num_classes: int = 1000) -> nn.Module:
    """Build the test backbone; it has no pretrained weights."""
    if weights is not None:
        raise ValueError("test_tiny has no pretrained weights")
    return TinyNet(num_classes=num_classes)
