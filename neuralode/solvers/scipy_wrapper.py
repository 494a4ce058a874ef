"""``scipy_solver``: the solve runs in SciPy (``scipy.integrate``'s step-by-step solvers) on the CPU.

``func`` is still called with tensors on the caller's device and dtype; the result comes back there.
SciPy cannot backpropagate, so gradients need ``odeint_adjoint`` (whose backward solve may use SciPy
too). Radau, BDF and LSODA get the Jacobian of ``func`` from autograd (states up to 4096 entries;
larger ones leave it to SciPy's finite differences). SciPy is imported only when this method is used.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from .._setup.flat_func import FlatFunc
from ..errors import MaxStepsExceededError, NonFiniteStateError, SolverError, event_not_found
from .base import FlatProblem, Solver
from .event_search import bisect
from .implicit import jacobian
from .observer import StepObserver
from .options import ScipyOptions, resolve_max_num_steps

_ORDERS = {"RK45": 5, "RK23": 3, "DOP853": 8, "Radau": 5, "BDF": 5, "LSODA": 12}
_EVENT_SPAN = 1e12  # SciPy needs a bound; an event search runs towards it
_MAX_JACOBIAN_SIZE = 4096  # larger states leave the Jacobian to SciPy (LSODA starts non-stiff)
_MAX_STIFF_SIZE = 10_000  # SciPy's Radau, BDF and LSODA allocate dense N x N arrays


class ScipySolver(Solver):
    """Wraps SciPy's OdeSolver classes; counts SciPy's steps and evaluations like our own engines."""

    options_class: ClassVar[type] = ScipyOptions
    supported_callbacks: ClassVar[tuple[str, ...]] = ()

    @property
    def order(self) -> int:
        return _ORDERS[self.options.solver]

    def _start(self, problem: FlatProblem, t_bound: float):
        import scipy.integrate

        opts: ScipyOptions = self.options
        y0 = problem.y0
        dtype, device = y0.dtype, y0.device
        if torch.is_grad_enabled() and y0.requires_grad:
            warnings.warn(
                "scipy_solver does not backpropagate: the result is detached. Use odeint_adjoint for "
                "gradients (its backward solve can use scipy_solver too).",
                stacklevel=5,
            )

        def fun(t: float, y: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = problem.func(float(t), torch.as_tensor(y, dtype=dtype).to(device))
            values = out.detach().cpu().double().numpy()
            if self._nonfinite_t is None and not np.all(np.isfinite(values)):
                self._nonfinite_t = float(t)  # SciPy may step on for a while; report where it began
            return values

        kwargs: dict = {**scipy_tolerances(problem, opts.solver), "max_step": opts.max_step}
        if opts.solver == "LSODA":
            kwargs["min_step"] = opts.min_step
        if opts.first_step is not None:
            kwargs["first_step"] = opts.first_step
        if opts.solver in ("Radau", "BDF", "LSODA") and y0.numel() > _MAX_STIFF_SIZE:
            n = y0.numel()
            raise ValueError(
                f"options['solver']={opts.solver!r} allocates dense {n} x {n} arrays in SciPy "
                f"({n * n * 8 / 2**30:.3g} GiB) for this state: use 'RK45' or 'DOP853', or our fixed-grid "
                "'implicit_adams'"
            )
        small = y0.numel() <= _MAX_JACOBIAN_SIZE
        if opts.solver in ("Radau", "BDF", "LSODA") and isinstance(problem.func, FlatFunc) and small:

            def jac(t: float, y: np.ndarray) -> np.ndarray:
                _, j = jacobian(problem.func, float(t), torch.as_tensor(y, dtype=dtype).to(device), 0.0)
                return j.cpu().double().numpy()

            kwargs["jac"] = jac
        solver_class = getattr(scipy.integrate, opts.solver)
        y0_np = y0.detach().cpu().double().numpy()
        self._nonfinite_t: float | None = None  # the first time func returned NaN or inf
        self._steps = 0
        return solver_class(fun, problem.times[0], y0_np, t_bound, **kwargs)

    def _advance(
        self, solver, problem: FlatProblem, max_steps: int, observer: StepObserver, event: bool = False
    ) -> None:
        if self._steps >= max_steps:
            if event:
                raise event_not_found(f"SciPy's {self.options.solver}", problem.times[0], float(solver.t),
                                      f"max_num_steps={max_steps:,} steps")  # fmt: skip
            raise MaxStepsExceededError(
                f"max_num_steps={max_steps:,} steps reached at t={solver.t!r} before t={solver.t_bound!r}; "
                "try looser tolerances (rtol/atol) or raise options['max_num_steps'].",
                float(solver.t),
            )
        self._steps += 1
        t_good, y_good = float(solver.t), solver.y.copy()
        message = solver.step()
        observer.counts.n_steps += 1  # SciPy reports accepted steps only
        observer.counts.n_accepted += 1
        failed = solver.status == "failed" or message is not None
        if (failed or not np.all(np.isfinite(solver.y))) and self._nonfinite_t is not None:
            began = _locate_nonfinite(problem, t_good, y_good, self._nonfinite_t)
            raise NonFiniteStateError(
                f"func returns NaN or inf from about t={began!r} on (located by bisection between SciPy's "
                f"last finite state at t={t_good!r} and its first non-finite evaluation at "
                f"t={self._nonfinite_t!r}); "
                f"SciPy's {self.options.solver} stopped at t={float(solver.t)!r}. Check func for overflow or "
                "division by zero there.",
                began,
            )
        if failed:
            raise SolverError(
                f"SciPy's {self.options.solver} failed at t={solver.t!r}: {message}. Try other tolerances, "
                "options['solver'], or check func for non-finite values there.",
                float(solver.t),
            )
        if not np.all(np.isfinite(solver.y)):
            raise NonFiniteStateError(
                f"SciPy's {self.options.solver}: the state became non-finite at t={solver.t!r}",
                float(solver.t),
            )

    def integrate(self, problem: FlatProblem, observer: StepObserver, controller=None) -> Tensor:
        times = problem.times
        y0 = problem.y0
        solver = self._start(problem, times[-1])
        max_steps = resolve_max_num_steps(self.options.max_num_steps, event=False)
        direction = 1.0 if times[-1] > times[0] else -1.0
        outputs = [y0.detach().cpu().double().numpy()]
        next_out = 1
        while next_out < len(times):
            t_old = solver.t
            self._advance(solver, problem, max_steps, observer)
            dense = None
            while next_out < len(times) and direction * (times[next_out] - solver.t) <= 0:
                if times[next_out] == solver.t:
                    outputs.append(solver.y.copy())
                else:
                    dense = dense or solver.dense_output()
                    outputs.append(np.asarray(dense(times[next_out])))
                next_out += 1
            if solver.status == "finished" and next_out < len(
                times
            ):  # pragma: no cover - SciPy ends at t_bound
                raise SolverError(f"SciPy's {self.options.solver} stopped early at t={t_old!r}", t_old)
        return torch.as_tensor(np.stack(outputs), dtype=y0.dtype).to(y0.device)

    def integrate_until_event(
        self, problem: FlatProblem, event, observer: StepObserver
    ) -> tuple[float, Tensor, int]:
        """Step until ``event`` crosses zero; locate it on SciPy's dense output."""
        times, y0 = problem.times, problem.y0
        direction = 1.0 if times[-1] > times[0] else -1.0
        solver = self._start(problem, times[0] + direction * _EVENT_SPAN)
        dtype, device = y0.dtype, y0.device
        event.start(times[0], y0)

        def as_tensor(y: np.ndarray) -> Tensor:
            return torch.as_tensor(np.asarray(y), dtype=dtype).to(device)

        max_steps = resolve_max_num_steps(self.options.max_num_steps, event=True)
        while solver.status == "running":
            t_old = solver.t
            self._advance(solver, problem, max_steps, observer, event=True)
            if event.crossed(solver.t, as_tensor(solver.y)):
                dense = solver.dense_output()
                tau, k = bisect(event, lambda s, d=dense: as_tensor(d(s)), t_old, solver.t)
                return tau, as_tensor(dense(tau)), k
        raise event_not_found(
            f"SciPy's {self.options.solver}", times[0], float(solver.t), "the search span ended"
        )


@torch.no_grad()
def scipy_tolerances(problem: FlatProblem, solver: str) -> dict:
    """rtol/atol for SciPy: floats, or per element as float64 NumPy arrays. Radau and BDF take only a
    scalar rtol (their Newton tolerance is computed from it): they get the smallest entry, which is
    never looser than asked (atol stays per element)."""

    def to_numpy(tol):
        return tol.detach().cpu().double().numpy() if isinstance(tol, Tensor) else tol

    rtol, atol = to_numpy(problem.rtol), to_numpy(problem.atol)
    if isinstance(rtol, np.ndarray) and solver in ("Radau", "BDF"):
        rtol = float(rtol.min())
    return {"rtol": rtol, "atol": atol}


def _locate_nonfinite(problem: FlatProblem, t_good: float, y_good: np.ndarray, t_bad: float) -> float:
    """Where func starts returning NaN or inf between t_good (finite) and t_bad: bisection on func along
    the Euler extrapolation of the last finite state (exact for a NaN that depends on t only)."""
    y0 = problem.y0
    y = torch.as_tensor(y_good, dtype=y0.dtype).to(y0.device)
    f = problem.func(t_good, y)
    if not bool(torch.isfinite(f).all()):
        return t_good
    lo, hi = t_good, t_bad
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if bool(torch.isfinite(problem.func(mid, y + (mid - t_good) * f)).all()):
            lo = mid
        else:
            hi = mid
    return hi
