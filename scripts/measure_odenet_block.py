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

from neuralode import Adjoint, ODEBlock, SolverConfig
from neuralode.models.mnist import ConvODEFunc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    for seminorm in (False, True):
        gradient = Adjoint(options={"norm": "seminorm"} if seminorm else None)
        block = ODEBlock(ConvODEFunc(), solver=SolverConfig(rtol=1e-3, atol=1e-3, gradient=gradient)).to(
            device
        )
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
