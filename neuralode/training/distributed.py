"""Data-parallel helpers for ``torchrun``: process group set-up, rank queries and metric reductions.

Single-process use needs nothing: without torchrun's environment (``WORLD_SIZE`` > 1) every helper is
a no-op (rank 0 of 1). Under ``torchrun --nproc_per_node=N`` :func:`init_distributed` joins the process
group (gloo on the CPU, nccl on CUDA, one GPU per local rank) once per process; it is left at exit.

Reductions: :func:`reduce_metrics` gives the mean over ranks of each scalar (with equal shards of a
batch whose loss is a mean, the mean of the shards' losses is the global batch's loss). NFE differ
between ranks when an adaptive solver adapts to each rank's shard, so :func:`reduce_nfe` gives both the
mean over ranks (what ``nfe_forward``/``nfe_backward`` report, the process's own NFE on one process) and
the maximum (``*_max``: the slowest rank, which sets the step's wall time).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist


def env_world_size() -> int:
    """The world size torchrun announced (``WORLD_SIZE``), 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's global rank from torchrun's environment (``RANK``), 0 without torchrun."""
    return int(os.environ.get("RANK", "0"))


def env_local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK``), 0 without torchrun."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    """True when a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Processes in the active group (1 when none)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the active group (0 when none)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the process that writes files and prints (rank 0)."""
    return rank() == 0


def init_distributed(device: torch.device) -> torch.device:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1; returns the device this rank should use.

    CUDA runs use nccl and ``cuda:LOCAL_RANK``; CPU runs use gloo. Calling it again is a no-op, so a
    Hydra multirun of several jobs in one process keeps one group.
    """
    if env_world_size() <= 1:
        return device
    if device.type == "cuda":
        if env_local_rank() >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise RuntimeError(
                f"LOCAL_RANK {env_local_rank()} but only {count} GPU(s) here: run at most one process per "
                "GPU (torchrun --nproc_per_node), or device=cpu for gloo on the CPU"
            )
        device = torch.device("cuda", env_local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        atexit.register(cleanup)
    return device


def cleanup(synchronize: bool = False) -> None:
    """Leave the process group (no-op when none); ``synchronize`` waits for every rank first.

    Call it with ``synchronize=True`` at the end of a successful run: a rank that tears gloo down while
    another is still talking to it can abort at exit ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        if synchronize and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if is_distributed():
        dist.barrier()


def _reduce(values: Sequence[float], op: Any, device: torch.device) -> list[float]:
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def _device() -> torch.device:
    """Where collectives run: the current GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The mean over ranks of each value (every rank must pass the same keys); unchanged on one process."""
    if not is_distributed():
        return {k: float(v) for k, v in metrics.items()}
    keys = sorted(metrics)
    sums = _reduce([float(metrics[k]) for k in keys], dist.ReduceOp.SUM, _device())
    return {k: s / world_size() for k, s in zip(keys, sums, strict=True)}


def reduce_max(metrics: Mapping[str, float]) -> dict[str, float]:
    """The maximum over ranks of each value (every rank must pass the same keys)."""
    if not is_distributed():
        return {k: float(v) for k, v in metrics.items()}
    keys = sorted(metrics)
    maxima = _reduce([float(metrics[k]) for k in keys], dist.ReduceOp.MAX, _device())
    return dict(zip(keys, maxima, strict=True))


def reduce_nfe(forward: float, backward: float) -> dict[str, float]:
    """NFE over ranks: ``nfe_forward``/``nfe_backward`` the mean, ``*_max`` the maximum (see the module)."""
    values = {"nfe_forward": forward, "nfe_backward": backward}
    mean, maximum = reduce_metrics(values), reduce_max(values)
    return {**mean, **{f"{k}_max": v for k, v in maximum.items()}}


def broadcast_object(value: Any, src: int = 0) -> Any:
    """``value`` as rank ``src`` has it, on every rank (unchanged on one process)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src, device=_device())
    return box[0]


def shard_bounds(size: int, part: int, parts: int) -> tuple[int, int]:
    """[start, stop) of part ``part`` of ``parts`` of ``size`` items; sizes differ by at most one."""
    if not 0 <= part < parts:
        raise ValueError(f"part must be in [0, {parts}), got {part}")
    base, extra = divmod(size, parts)
    start = part * base + min(part, extra)
    return start, start + base + (1 if part < extra else 0)


def shard_batch(batch: Any, part: int, parts: int) -> Any:
    """Part ``part`` of ``parts`` of a batch: tensors (also inside tuples, lists, dicts) cut along dim 0.

    Every tensor must have the same leading size; anything that is not a tensor is passed through.
    """
    sizes = {t.shape[0] for t in _tensors(batch)}
    if len(sizes) != 1:
        raise ValueError(f"batch tensors must share one leading size to be sharded, got {sorted(sizes)}")
    start, stop = shard_bounds(sizes.pop(), part, parts)
    return _map_tensors(batch, lambda t: t[start:stop])


def shard_batches(
    batches: Callable[[int], Iterable[Any]], part: int | None = None, parts: int | None = None
) -> Callable[[int], Iterator[Any]]:
    """A batch source giving this rank's shard of each of ``batches``' global batches (default: this rank)."""
    part = rank() if part is None else part
    parts = world_size() if parts is None else parts

    def epoch(index: int) -> Iterator[Any]:
        for batch in batches(index):
            yield batch if parts == 1 else shard_batch(batch, part, parts)

    return epoch


def _tensors(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, tuple | list):
        return [t for item in batch for t in _tensors(item)]
    if isinstance(batch, Mapping):
        return [t for item in batch.values() for t in _tensors(item)]
    return []


def _map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, tuple | list):
        return type(batch)(_map_tensors(item, fn) for item in batch)
    if isinstance(batch, Mapping):
        return {key: _map_tensors(item, fn) for key, item in batch.items()}
    return batch
