"""Convolutional encoders for pixel observations: the Nature DQN CNN and MinAtar's.

One class, ``ConvEncoder``; the two networks are its YAML presets (values live in YAML):
``conf/arch/encoder/nature_cnn.yaml`` (Mnih et al., 2015: 32 8x8 /4, 64 4x4 /2, 64 3x3 /1,
fc 512, frames scaled by 1/255) and ``conf/arch/encoder/minatar_cnn.yaml`` (Young and Tian,
2019, and MinAtar's ``examples/dqn.py``: 16 3x3 /1, fc 128, channels-last booleans). Both follow the encoder contract of ``rl_lightning.networks.encoders`` (keyword-only
constructor, runtime ``obs_shape``, ``out_features``) and compose with any head
(``arch/head=linear|dueling|distributional|quantile``). Observations arrive as stored
(``uint8`` frames, MinAtar's booleans); ``QNetwork.features`` casts them to float and the
encoder scales them (``scale``: 1/255 for frames), so the replay buffer never holds floats.

Layouts: ``channels_last=False`` reads ``(C, H, W)``, a single frame ``(H, W)`` (C = 1) or a
frame stack of those ``(N, H, W)`` -- the N frames are the channels, the Nature DQN input.
``channels_last=True`` reads ``(H, W, C)`` (MinAtar) and a stack of them ``(N, H, W, C)``
(N * C channels). The permutation is done inside ``forward``, so acting and learning see the
observations exactly as the env gives them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rl_lightning.networks.encoders import Encoder
from rl_lightning.networks.noisy import linear_layer

#: ``arch.encoder.memory_format`` values
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def image_layout(obs_shape: Sequence[int], channels_last: bool) -> tuple[int, int, int]:
    """``(C, H, W)`` of an observation shape (see the module docstring)."""
    shape = tuple(int(d) for d in obs_shape)
    if channels_last:
        if len(shape) not in (3, 4):
            raise ValueError(f"channels-last images are (H, W, C) or (N, H, W, C), got {shape}")
        *stack, h, w, c = shape
        return c * math.prod(stack), h, w
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) != 3:
        raise ValueError(f"channels-first images are (H, W) or (C, H, W), got {shape}")
    return shape[0], shape[1], shape[2]


class ConvEncoder(Encoder):
    """Conv layers (ReLU after each), flatten, one fully connected ReLU layer.

    Args:
        obs_shape: the observation shape (runtime fact).
        channels: output channels of each conv layer.
        kernels: kernel size of each conv layer.
        strides: stride of each conv layer.
        hidden: width of the fully connected layer (``out_features``).
        scale: observations are multiplied by this first (1/255 for 8-bit frames).
        channels_last: ``(H, W, C)`` observations (MinAtar); else ``(C, H, W)`` / ``(H, W)``.
        memory_format: how the conv layers hold their weights and inputs in memory:
            ``channels_last`` (NHWC; faster convolutions on 84x84 frames with oneDNN on CPU and
            cuDNN on GPU) or ``contiguous`` (NCHW). The numbers are the same either way.
        noisy: the fully connected layer is a noisy linear layer (exploration=noisy).
    """

    def __init__(
        self,
        *,
        obs_shape: Sequence[int],
        channels: Sequence[int],
        kernels: Sequence[int],
        strides: Sequence[int],
        hidden: int,
        scale: float = 1.0,
        channels_last: bool = False,
        memory_format: str = "contiguous",
        noisy: bool = False,
    ) -> None:
        super().__init__()
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(
                f"arch.encoder.memory_format={memory_format!r}: one of {', '.join(MEMORY_FORMATS)}"
            )
        if not len(channels) == len(kernels) == len(strides) >= 1:
            raise ValueError(
                f"arch.encoder: channels {list(channels)}, kernels {list(kernels)} and strides "
                f"{list(strides)} must have the same length >= 1"
            )
        in_channels, height, width = image_layout(obs_shape, channels_last)
        self.channels_last = channels_last
        self.in_channels = in_channels
        self.scale = float(scale)
        layers: list[nn.Module] = []
        for out, kernel, stride in zip(channels, kernels, strides, strict=True):
            layers += [nn.Conv2d(in_channels, out, kernel, stride=stride), nn.ReLU()]
            in_channels = out
            height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
            if height < 1 or width < 1:
                raise ValueError(f"arch.encoder: {tuple(obs_shape)} is too small for the convs")
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.memory_format = MEMORY_FORMATS[memory_format]
        self.conv.to(memory_format=self.memory_format)  # type: ignore[call-overload]  # 4-D weights
        self.fc = linear_layer(in_channels * height * width, hidden, noisy=noisy)
        self.out_features = hidden

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, *obs_shape)`` float -> ``(B, hidden)``."""
        batch = obs.shape[0]
        if self.channels_last:  # (B, [N,] H, W, C) -> (B, [N,] C, H, W) -> (B, N*C, H, W)
            obs = obs.movedim(-1, -3)
        obs = obs.reshape(batch, self.in_channels, *obs.shape[-2:])
        if self.scale != 1.0:
            obs = obs * self.scale
        obs = obs.contiguous(memory_format=self.memory_format)
        return torch.relu(self.fc(self.conv(obs)))
