"""Why neuralode's fehlberg2/adaptive_heun take more evaluations than torchdiffeq's: a measurement.

Run ``python -m tests.parity_nfe_study``. It solves a few problems with torchdiffeq and with neuralode
under four variants, patched in this process only (the library is not changed): "base"; "noshrink"
(the controller never shrinks a step after accepting it, as torchdiffeq's ``_optimal_step_size``);
"pseudo_fsal" (the last stage is reused as f(t1, y1), as torchdiffeq's ``_runge_kutta_step`` does for
every tableau, although for these two it is evaluated at the embedded solution, not at y1); both.
"""

from __future__ import annotations

import inspect
import textwrap
import warnings

import torch
import torchdiffeq

import neuralode
import neuralode.solvers.adaptive as adaptive
import neuralode.solvers.controllers as step_size

ORIGINAL_RUN = adaptive.AdaptiveRKSolver._run
ORIGINAL_NEXT = step_size.IntegralController.next_step
FSAL_LINE = "f1 = K[-1] if dtab.fsal else func(t1, y1)"


def _pseudo_fsal_run():
    src = textwrap.dedent(inspect.getsource(ORIGINAL_RUN))
    assert FSAL_LINE in src, "adaptive.py changed: update the study"
    namespace = dict(vars(adaptive))
    exec(src.replace(FSAL_LINE, "f1 = K[-1]"), namespace)  # a patched copy, in this process only
    return namespace["_run"]


def _no_shrink_next(self, h: float, ratio: float, accepted: bool) -> float:
    if ratio == 0.0:
        return h * self.ifactor
    factor = self.safety * ratio ** (-self.exponent)
    return h * min(self.ifactor, max(1.0 if accepted else self.dfactor, factor))


class Count(torch.nn.Module):
    def __init__(self, f) -> None:
        super().__init__()
        self.f, self.nfe = f, 0

    def forward(self, t, y):
        self.nfe += 1
        return self.f(t, y)


PROBLEMS = {
    "decay": (lambda t, y: -y, torch.tensor([1.0, 2.0]), torch.linspace(0, 2, 5)),
    "nonlinear": (
        lambda t, y: torch.sin(y) - 0.5 * y + 0.7 * torch.cos(t) * torch.tanh(y.mean()),
        torch.tensor([0.7, 1.2, 0.9]),
        torch.linspace(0, 2, 5),
    ),
    "vdp": (
        lambda t, y: torch.stack([y[1], (1 - y[0] ** 2) * y[1] - y[0]]),
        torch.tensor([2.0, 0.0]),
        torch.linspace(0, 5, 6),
    ),
}


def main() -> None:
    warnings.simplefilter("ignore")
    pseudo_fsal = _pseudo_fsal_run()

    def variant(name: str) -> None:
        adaptive.AdaptiveRKSolver._run = pseudo_fsal if "fsal" in name else ORIGINAL_RUN
        step_size.IntegralController.next_step = _no_shrink_next if "noshrink" in name else ORIGINAL_NEXT

    for pname, (f, y0, t) in PROBLEMS.items():
        variant("base")
        ref = neuralode.odeint(f, y0.double(), t.double(), rtol=1e-12, atol=1e-12, method="dopri8")
        for dtype in (torch.float64, torch.float32):
            tols = ((1e-5, 1e-7), (1e-6, 1e-8)) if dtype == torch.float64 else ((1e-5, 1e-7), (1e-4, 1e-6))
            for method in ("adaptive_heun", "fehlberg2"):
                for rtol, atol in tols:
                    print(pname, dtype, method, f"rtol={rtol}")
                    func = Count(f)
                    sol = torchdiffeq.odeint(
                        func, y0.to(dtype), t.to(dtype), rtol=rtol, atol=atol, method=method
                    )
                    err = float((sol.double() - ref).abs().max())
                    print(f"    {'torchdiffeq':22s} nfe {func.nfe:5d}  err {err:.2e}")
                    for name in ("base", "noshrink", "pseudo_fsal", "pseudo_fsal+noshrink"):
                        variant(name)
                        func, stats = Count(f), neuralode.SolveStats()
                        sol = neuralode.odeint(
                            func, y0.to(dtype), t.to(dtype), rtol=rtol, atol=atol, method=method, stats=stats
                        )
                        err = float((sol.double() - ref).abs().max())
                        print(
                            f"    {name:22s} nfe {func.nfe:5d}  err {err:.2e}  accepted "
                            f"{stats.forward.n_accepted} rejected {stats.forward.n_rejected}"
                        )
                    variant("base")


if __name__ == "__main__":
    main()
