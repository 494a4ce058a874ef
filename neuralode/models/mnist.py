"""The four MNIST classifiers of the paper's Table 1: 1-layer MLP, ResNet, RK-Net and ODE-Net.

Shapes follow the widely used reference implementation (the paper says only "downsample twice, then 6
residual blocks"): a conv stem 28 -> 26 -> 13 -> 6 with 64 channels, GroupNorm(32), pre-activation
residual blocks, and a norm-ReLU-pool-linear head. ODE-Net and RK-Net are one network and differ only in
their solver's gradient: the adjoint method (O(1) memory) or backpropagation through the solver's
operations (memory grows with the number of function evaluations); the builder takes it from the
:class:`~neuralode.SolverConfig` it is given, never from the model's name.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..solver_config import SolverConfig
from .ode_block import ODEBlock

MODEL_NAMES = ("mlp", "resnet", "rknet", "odenet")
"""Names accepted by :func:`build_mnist_model` (Table 1's rows)."""
ODE_MODELS = ("rknet", "odenet")
"""The rows with an ODE block: the same network, told apart only by their solver's gradient."""


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with at most 32 groups, as in the reference code."""
    return nn.GroupNorm(min(32, channels), channels)


class ConcatConv2d(nn.Module):
    """A convolution whose input gets time ``t`` as one extra constant channel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, kernel_size, padding=padding)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        time_channel = torch.ones_like(x[:, :1]) * t
        return self.conv(torch.cat([time_channel, x], dim=1))


class ConvODEFunc(nn.Module):
    """ODE-Net dynamics: norm-ReLU-conv(t)-norm-ReLU-conv(t)-norm, mapping (t, z) to dz/dt."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = group_norm(channels), group_norm(channels), group_norm(channels)
        self.conv1 = ConcatConv2d(channels, channels)
        self.conv2 = ConcatConv2d(channels, channels)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        out = self.conv1(t, torch.relu(self.norm1(z)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(ReLU(norm(conv(ReLU(norm(x))))))."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.norm1, self.norm2 = group_norm(channels), group_norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(torch.relu(self.norm1(x)))
        out = self.conv2(torch.relu(self.norm2(out)))
        return x + out


def downsampling_stem(channels: int = 64) -> nn.Sequential:
    """28x28x1 -> 6x6xC: a 3x3 conv and two stride-2 4x4 convs."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, 1),
        group_norm(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 4, 2, 1),
        group_norm(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 4, 2, 1),
    )


def classifier_head(channels: int = 64, classes: int = 10) -> nn.Sequential:
    """norm-ReLU-global average pool-linear."""
    return nn.Sequential(
        group_norm(channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, classes),
    )


class MLP(nn.Module):
    """The 1-layer MLP baseline: 784 -> hidden (ReLU) -> 10."""

    def __init__(self, hidden: int = 300, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvClassifier(nn.Module):
    """Stem, feature layers (residual blocks or one ODE block), head (``stem``/``head``: new ones if None)."""

    def __init__(
        self,
        features: nn.Module,
        channels: int = 64,
        stem: nn.Module | None = None,
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.stem = downsampling_stem(channels) if stem is None else stem
        self.features = features
        self.head = classifier_head(channels) if head is None else head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(self.stem(x)))

    def with_solver(self, solver: SolverConfig) -> ConvClassifier:
        """This model (same parameters) with its ODE block solving by ``solver``; ``self`` is unchanged."""
        if not isinstance(self.features, ODEBlock):
            raise TypeError("with_solver needs a model whose features are an ODEBlock (rknet, odenet)")
        model = ConvClassifier(self.features.with_solver(solver), stem=self.stem, head=self.head)
        model.training = self.training
        return model


def build_mnist_model(
    name: str,
    *,
    channels: int = 64,
    hidden: int = 300,
    num_blocks: int = 6,
    solver: SolverConfig | None = None,
) -> nn.Module:
    """One of ``MODEL_NAMES``; ``solver`` (default ``SolverConfig()``) is the ODE block's, for ``ODE_MODELS``.

    ``rknet`` and ``odenet`` build the same network: it is the solver's gradient that makes one RK-Net
    (``Direct()``, backprop through the solver) or ODE-Net (``Adjoint()``); configs/model/ sets it.
    """
    if name == "mlp":
        return MLP(hidden)
    if name == "resnet":
        return ConvClassifier(nn.Sequential(*(ResBlock(channels) for _ in range(num_blocks))), channels)
    if name in ODE_MODELS:
        return ConvClassifier(ODEBlock(ConvODEFunc(channels), solver=solver), channels)
    raise ValueError(f"model name must be one of {MODEL_NAMES}, got {name!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
