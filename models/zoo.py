"""Builders for the demo models named in `models/catalog.toml` (`builder = "models.zoo:..."`).

Each builder returns a freshly initialised `nn.Module`; the server loads the committed
`weights.safetensors` state_dict into it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ShapesCNN", "mlp", "shapes_cnn"]


def mlp(
    in_features: int,
    hidden: list[int],
    out_features: int,
    final: str | None = None,
) -> nn.Sequential:
    """A plain Linear/ReLU stack; `final` = "sigmoid" or "softmax" appends that activation.

    Layers are the bare `nn.Sequential` indices: Linear at 0, ReLU at 1, Linear at 2, ...
    """
    if in_features < 1 or out_features < 1 or any(h < 1 for h in hidden):
        raise ValueError("layer sizes must be positive")
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    if final == "sigmoid":
        layers.append(nn.Sigmoid())
    elif final == "softmax":
        layers.append(nn.Softmax(dim=1))
    elif final is not None:
        raise ValueError(f"final must be 'sigmoid', 'softmax' or None, not {final!r}")
    return nn.Sequential(*layers)


def _conv_block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


class ShapesCNN(nn.Module):
    """Small CNN for normalised 3x128x128 images (other sizes work too: global pooling).

    `features`: 3x3 conv blocks 3 -> w (stride 2) -> 2w -> 4w with BatchNorm, ReLU and two
    max-pools, then a 1x1 Conv2d 4w -> 4w and ReLU. That 1x1 conv, `features.11`, is the last
    Conv2d in `named_modules()` order: the layer GradCAM uses (16x16 map for 128x128 input).
    `pool` is a global max-pool and `classifier` the Linear head. About 12.3 M multiply-adds
    (~25 MFLOPs) per 128x128 image; 28 k parameters.
    """

    def __init__(self, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_block(3, w, stride=2),  # 0-2: 64x64
            nn.MaxPool2d(2),  # 3: 32x32
            *_conv_block(w, 2 * w),  # 4-6
            nn.MaxPool2d(2),  # 7: 16x16
            *_conv_block(2 * w, 4 * w),  # 8-10
            nn.Conv2d(4 * w, 4 * w, kernel_size=1),  # 11: the last Conv2d, GradCAM's layer
            nn.ReLU(),  # 12
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes)."""
        x = self.features(x)
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(x)


def shapes_cnn(num_classes: int = 4, width: int = 16) -> nn.Module:
    """The CNN behind the `shapes` demo model (see `ShapesCNN`)."""
    if num_classes < 1 or width < 1:
        raise ValueError("num_classes and width must be positive")
    return ShapesCNN(num_classes=num_classes, width=width)
