"""The timing harness: an NFE- and time-counting field wrapper, round-robin interleaved medians, and
what the machine was (so that every library is measured the same way and each run says where it ran)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Hashable

from torch import Tensor, nn


class Meter:
    """Calls and seconds inside a field (see ``Timed``)."""

    def __init__(self) -> None:
        self.calls, self.seconds = 0, 0.0


class Timed(nn.Module):
    """Wraps a field f(t, y): counts calls and accumulates the wall time spent inside them.

    For torchode, ``flat_shape`` un-flattens its (batch, features) state (or one sample's (features,),
    which its adjoint vmaps over) and reshapes its per-sample time, shape (batch,), to broadcast over
    the conv block's time channel.
    """

    def __init__(self, field: nn.Module, flat_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.field = field
        self.flat_shape = flat_shape
        self.meter = Meter()  # a plain object: nn.Module.__setattr__ would cost some us per call

    def reset(self) -> None:
        self.meter.calls, self.meter.seconds = 0, 0.0

    @property
    def calls(self) -> int:
        return self.meter.calls

    @property
    def seconds(self) -> float:
        return self.meter.seconds

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        start = time.perf_counter()
        if self.flat_shape is not None and y.dim() == 1:  # torchode's adjoint: one sample, vmapped
            out = self.field(t.reshape(()), y.view(1, *self.flat_shape)).reshape(-1)
        elif self.flat_shape is not None:  # torchode: y (batch, features), t (batch,)
            out = self.field(t.view(-1, 1, 1, 1), y.view(-1, *self.flat_shape)).flatten(1)
        else:
            out = self.field(t, y)
        meter = self.meter
        meter.seconds += time.perf_counter() - start
        meter.calls += 1
        return out


def round_robin(
    jobs: dict[Hashable, Callable[[], dict]], repeats: int, warmup: int = 1
) -> dict[Hashable, dict]:
    """Run every job ``warmup`` times, then ``repeats`` times interleaved, each round starting one job
    later (A B C, B C A, C A B, ...) so that no job always follows the same predecessor (whose freed
    memory and caches it would inherit); each job returns a dict with "seconds" and other per-run
    values; report medians of the numbers."""
    for _ in range(warmup):
        for job in jobs.values():
            job()
    names = list(jobs)
    runs: dict[Hashable, list[dict]] = {name: [] for name in jobs}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(jobs[name]())
    out = {}
    for name, rows in runs.items():
        summary = {}
        for key in rows[0]:
            values = [row[key] for row in rows]
            if all(isinstance(v, int | float) for v in values):
                summary[key] = statistics.median(values)
            else:
                summary[key] = values[-1]
        summary["repeats"] = repeats
        summary["seconds_all"] = [row["seconds"] for row in rows]
        out[name] = summary
    return out


def load_average() -> str:
    """The 1, 5 and 15-minute load averages (a shared machine inflates every time)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine() -> str:
    """Processor, logical CPU count and OS, for the results' header."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"{platform.system()} {platform.release()}"
    )
