"""One point of a tolerance sweep of an ODE block: error, forward time, forward and backward NFE.

The block's input features are computed once; the block is then solved at the tolerance under study and
compared with a reference solve of the same inputs at a much tighter tolerance in float64. Backward NFE
comes from the adjoint's augmented solve of a real loss (the classifier's cross-entropy).

The block under study is never changed: each measurement solves with a copy of its frozen
:class:`~neuralode.SolverConfig` (``ODEBlock.with_solver``) that shares its parameters.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..gradients import Adjoint
from ..models.ode_block import ODEBlock
from ..solver_config import SolverConfig


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


def at_tolerance(solver: SolverConfig, rtol: float) -> SolverConfig:
    """``solver`` with rtol = atol = ``rtol`` (a new config; ``solver`` itself is frozen)."""
    return solver.replace(rtol=rtol, atol=rtol)


def adjoint_variants(solver: SolverConfig) -> dict[str, SolverConfig]:
    """``solver`` with the adjoint gradient under the default norm and under the seminorm.

    The backward solve keeps ``solver``'s own adjoint rtol/atol/method when it has an adjoint gradient;
    only its "norm" option differs between the two."""
    gradient = solver.gradient if isinstance(solver.gradient, Adjoint) else Adjoint()
    options = {k: v for k, v in (gradient.options or {}).items() if k != "norm"}
    default = Adjoint(gradient.rtol, gradient.atol, gradient.method, options or None)
    seminorm = Adjoint(gradient.rtol, gradient.atol, gradient.method, {**options, "norm": "seminorm"})
    return {"default": solver.replace(gradient=default), "seminorm": solver.replace(gradient=seminorm)}


def reference_outputs(block: ODEBlock, inputs: Sequence[Tensor], rtol: float) -> list[Tensor]:
    """The block's outputs for ``inputs`` solved in float64 at ``rtol`` = ``atol`` (the error's yardstick)."""
    func = copy.deepcopy(block.func)  # its own float64 parameters; ``block`` keeps its dtype
    times = tuple(block.t.tolist())
    reference = ODEBlock(func, times, at_tolerance(block.solver, rtol)).to(block.t.device).double()
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
    the test error of the whole model at that tolerance. ``block`` and its solver are left as they were.
    """
    if not inputs or len(inputs) != len(labels) or len(inputs) != len(references):
        raise ValueError("inputs, labels and references must be non-empty sequences of the same length")
    solver = at_tolerance(block.solver, rtol)
    variants = {norm: block.with_solver(config) for norm, config in adjoint_variants(solver).items()}
    measured = variants["default"]  # the forward solve does not depend on the gradient
    device = inputs[0].device
    nfe_forward, errors, seconds = [], [], []
    with torch.no_grad():
        for x, reference in zip(inputs, references, strict=True):
            out = measured(x)
            nfe_forward.append(measured.nfe_forward)
            errors.append(((out.double() - reference).norm() / reference.norm()).item())
            seconds.append(_median_seconds(lambda x=x: measured(x), repeats, device))
    backward = {}
    for norm, variant in variants.items():
        counts = []
        for x, y in zip(inputs, labels, strict=True):
            loss = nn.functional.cross_entropy(head(variant(x)), y)
            loss.backward()
            counts.append(variant.nfe_backward)
        backward[norm] = statistics.fmean(counts)
    block.zero_grad(set_to_none=True)  # the variants share its parameters
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
