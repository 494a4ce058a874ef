"""Deterministic mini-batches of image tensors, with the random-crop augmentation done in one tensor op.

Each epoch's order and crops come from a generator seeded by (seed, epoch), so epoch k has the same
batches whether or not the run was interrupted before it: that is what makes resume exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..training.distributed import shard_bounds


class ImageBatches:
    """Batches ``(x float (b, 1, h, w) in [0, 1], y)`` from uint8 ``images`` (n, h, w) and ``labels``.

    Args:
        batch_size: images per batch; the last, smaller batch is kept unless ``drop_last``.
        shuffle: a new permutation every epoch.
        crop_padding: if > 0, zero-pad by this many pixels and crop back at a random offset (per image).
        max_batches: stop each epoch after this many batches (smoke runs).
        seed: base seed of the per-epoch generator.
        device: where batches are put.
        rank, world_size: data-parallel training: every global batch (the same on all ranks) is cut into
            ``world_size`` contiguous shards (sizes differ by at most one) and rank ``rank`` gets its own,
            so that N processes together see exactly the batches one process would.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        crop_padding: int = 0,
        drop_last: bool = False,
        max_batches: int | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.dim() != 3 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 of shape (n, h, w), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if batch_size < world_size:
            raise ValueError(f"batch_size {batch_size} < world_size {world_size}: some ranks would get nothing")
        self.images, self.labels = images, labels
        self.rank, self.world_size = rank, world_size
        self.batch_size, self.shuffle, self.crop_padding = batch_size, shuffle, crop_padding
        self.drop_last, self.max_batches, self.seed = drop_last, max_batches, seed
        self.device = torch.device(device)

    def __len__(self) -> int:
        n = self.images.shape[0]
        full = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return full if self.max_batches is None else min(full, self.max_batches)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of ``epoch`` (the same every time it is asked for)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = self.images.shape[0]
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        for index in range(len(self)):
            take = order[index * self.batch_size : (index + 1) * self.batch_size]
            images = self.images[take]
            if self.crop_padding:  # crops drawn for the global batch, so every rank's generator agrees
                images = random_crop(images, self.crop_padding, generator)
            if self.world_size > 1:
                start, stop = shard_bounds(take.numel(), self.rank, self.world_size)
                images, take = images[start:stop], take[start:stop]
            x = images.unsqueeze(1).to(self.device, torch.float32, non_blocking=True).div_(255.0)
            yield x, self.labels[take].to(self.device, non_blocking=True)

    __call__ = epoch


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad each (h, w) image by ``padding`` and crop it back at an offset drawn from ``generator``."""
    b, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    offset = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    rows = offset[0, :, None] + torch.arange(h)
    cols = offset[1, :, None] + torch.arange(w)
    return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
