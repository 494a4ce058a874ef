"""Forward and backward NFE of one ODE-Net-sized conv block solve (dopri5, rtol=atol=1e-3).

The block is the paper's MNIST ODE-Net dynamics: two 3x3 convolutions of 64 channels with time as an
extra input channel and GroupNorm, on a batch of 128 feature maps of 6x6 (the reference code's shapes).
Untrained weights (PyTorch's default init, seed 0) and random input: NFE depends on both, so this is
a measurement of the solver on this block, not of a trained model.

    .venv/bin/python scripts/measure_odenet_block.py [--device cuda] [--batch 128]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from neuralode import ODEBlock


class ConcatConv2d(nn.Module):
    """3x3 convolution with t as an extra input channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([torch.ones_like(x[:, :1]) * t, x], dim=1))


class ConvODEFunc(nn.Module):
    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.GroupNorm(min(32, channels), channels) for _ in range(3))
        self.conv1, self.conv2 = ConcatConv2d(channels), ConcatConv2d(channels)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, torch.relu(self.norm1(x)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    for seminorm in (False, True):
        block = ODEBlock(ConvODEFunc(), rtol=1e-3, atol=1e-3, adjoint=True,
                         adjoint_options={"norm": "seminorm"} if seminorm else None).to(device)  # fmt: skip
        torch.manual_seed(0)
        x = torch.randn(args.batch, 64, 6, 6, device=device)
        start = time.perf_counter()
        block(x).square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        label = "seminorm" if seminorm else "default norm"
        print(f"{label:12s} device={device.type} batch={args.batch}: forward NFE {block.nfe_forward}, "
              f"backward NFE {block.nfe_backward}, forward+backward {elapsed:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
