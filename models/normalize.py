"""Input normalisation as the first module of a model: the preprocessing its weights expect.

Images reach the models as floats in [0, 1]. Pretrained weights were trained on inputs
normalised with their own per-channel mean and std (ImageNet's, or 0.5 for the original ViT),
so every classifier and segmenter starts with a `Normalize` holding its weights' constants,
pretrained or scratch alike (the two settings then differ only in weights). The constants are
persistent buffers: a checkpoint carries its preprocessing, and a checkpoint saved before
normalisation existed (trained on unnormalised inputs) fails a strict load instead of
silently seeing shifted inputs. torchvision detectors normalise inside their own transform.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """`(x - mean) / std` per channel, with constants stored as buffers (no parameters).

    Args:
        mean: Per-channel mean of the RGB inputs the weights were trained on.
        std: Per-channel standard deviation, same length.
        in_chans: 3, or 1 for grayscale input; one channel uses the average of the RGB
            constants (as for the first convolution's summed RGB kernels).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], in_chans: int = 3) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} differ in length")
        if in_chans == 1:
            mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
        elif in_chans != len(mean):
            raise ValueError(f"in_chans={in_chans} but {len(mean)} channel constants")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises images (B, C, H, W) in [0, 1]."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        if self.mean.is_meta:
            return f"channels={self.mean.shape[1]}"
        mean = ", ".join(f"{v:.4g}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4g}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"
