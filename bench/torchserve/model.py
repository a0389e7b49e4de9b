"""TorchServe's model file for the comparison (packed into the model archive as `model.py`).

torchvision's resnet18 with the catalog's normalisation as its first step, as our service runs
a catalog model (`app.inference.served.Standardized`: `net((x - mean) / std)`): the input is
the image's pixels in [0, 1], so integrated gradients' zero baseline is a black image in both
servers. Its state dict has resnet18's own keys (the normalisation constants are not saved), so
the one seeded initialisation serves both. TorchServe's loader wants exactly one class here.
"""

import torch
from torchvision.models.resnet import BasicBlock, ResNet

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class NormalizedResNet18(ResNet):
    def __init__(self) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2])
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward((x - self.mean) / self.std)
