"""One point of a tolerance sweep of an ODE block: error, forward time, forward and backward NFE.

The block's input features are computed once; the block is then solved at the tolerance under study and
compared with a reference solve of the same inputs at a much tighter tolerance in float64. Backward NFE
comes from the adjoint's augmented solve of a real loss (the classifier's cross-entropy).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..models.ode_block import ODEBlock


@dataclass
class SweepPoint:
    """Means over the measured batches at one tolerance (rtol = atol)."""

    rtol: float
    nfe_forward: float
    nfe_backward: float
    nfe_backward_seminorm: float
    relative_error: float
    forward_seconds: float
    test_error: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def reference_outputs(block: ODEBlock, inputs: Sequence[Tensor], rtol: float) -> list[Tensor]:
    """The block's outputs for ``inputs`` solved in float64 at ``rtol`` = ``atol`` (the error's yardstick)."""
    reference = copy.deepcopy(block).double()
    reference.rtol = reference.atol = rtol
    with torch.no_grad():
        return [reference(x.double()) for x in inputs]


def _median_seconds(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    run()  # warm-up
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure_tolerance(
    block: ODEBlock,
    head: nn.Module,
    inputs: Sequence[Tensor],
    labels: Sequence[Tensor],
    references: Sequence[Tensor],
    rtol: float,
    classify: Callable[[float], float],
    repeats: int = 5,
) -> SweepPoint:
    """Measure ``block`` at ``rtol`` on ``inputs`` (block inputs) and ``labels``; see the module docstring.

    ``head`` maps the block's output to logits (for the backward pass's loss); ``classify(rtol)`` returns
    the test error of the whole model at that tolerance.
    """
    if not inputs or len(inputs) != len(labels) or len(inputs) != len(references):
        raise ValueError("inputs, labels and references must be non-empty sequences of the same length")
    block.rtol = block.atol = rtol
    device = inputs[0].device
    nfe_forward, errors, seconds = [], [], []
    with torch.no_grad():
        for x, reference in zip(inputs, references, strict=True):
            out = block(x)
            nfe_forward.append(block.nfe_forward)
            errors.append(((out.double() - reference).norm() / reference.norm()).item())
            seconds.append(_median_seconds(lambda x=x: block(x), repeats, device))
    backward = {}
    saved_options = block.adjoint_options
    for norm in ("default", "seminorm"):
        block.adjoint_options = {"norm": "seminorm"} if norm == "seminorm" else None
        counts = []
        for x, y in zip(inputs, labels, strict=True):
            loss = nn.functional.cross_entropy(head(block(x)), y)
            loss.backward()
            counts.append(block.nfe_backward)
        backward[norm] = statistics.fmean(counts)
    block.adjoint_options = saved_options
    block.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    return SweepPoint(
        rtol=rtol,
        nfe_forward=statistics.fmean(nfe_forward),
        nfe_backward=backward["default"],
        nfe_backward_seminorm=backward["seminorm"],
        relative_error=statistics.fmean(errors),
        forward_seconds=statistics.fmean(seconds),
        test_error=classify(rtol),
    )


def fit_ratio(forward: Sequence[float], backward: Sequence[float]) -> float:
    """Least-squares slope of ``backward = ratio * forward`` through the origin."""
    numerator = sum(f * b for f, b in zip(forward, backward, strict=True))
    denominator = sum(f * f for f in forward)
    if denominator == 0:
        raise ValueError("forward NFE are all zero")
    return numerator / denominator
