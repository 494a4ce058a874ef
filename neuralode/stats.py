"""Solver statistics returned as data: nothing on the user's module needs resetting.

Pass a :class:`SolveStats` to ``odeint``/``odeint_adjoint`` (``stats=``); each call overwrites its
``forward`` counts, and the adjoint's backward pass overwrites ``backward`` when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PassCounts:
    """Counts of one pass: a forward solve, or a backward pass (all interval solves of the adjoint,
    all replayed pieces of a checkpointed gradient)."""

    nfe: int = 0  # calls of the user's func
    n_steps: int = 0  # attempted steps, accepted + rejected
    n_accepted: int = 0
    n_rejected: int = 0
    n_checkpoints: int = 0  # states stored for the backward pass (odeint_checkpoint's forward)
    n_newton_iters: int = 0  # Newton iterations of the implicit stages (adaptive ESDIRK methods)
    n_factorizations: int = 0  # LU factorisations of Newton's matrix (adaptive ESDIRK methods)
    n_krylov_iters: int = 0  # GMRES matrix-vector products (ESDIRK with linear_solver='krylov')

    def add(self, other: PassCounts) -> None:
        """Add another part of the same pass (a backward pass's time gradient and its solves)."""
        self.nfe += other.nfe
        self.n_steps += other.n_steps
        self.n_accepted += other.n_accepted
        self.n_rejected += other.n_rejected
        self.n_checkpoints += other.n_checkpoints
        self.n_newton_iters += other.n_newton_iters
        self.n_factorizations += other.n_factorizations
        self.n_krylov_iters += other.n_krylov_iters


@dataclass
class SolveStats:
    """Forward and backward statistics of the last call it was passed to."""

    forward: PassCounts = field(default_factory=PassCounts)
    backward: PassCounts = field(default_factory=PassCounts)
    # per_sample solves: how each sample ended ("success", "max_num_steps", "step_underflow", ...)
    status: tuple[str, ...] | None = None

    @property
    def nfe_forward(self) -> int:
        return self.forward.nfe

    @property
    def nfe_backward(self) -> int:
        return self.backward.nfe


class LastSolveStats:
    """For a module that solves in its forward pass: ``nfe_forward``/``nfe_backward`` of the last call,
    read from the :class:`SolveStats` it keeps in ``last_stats``."""

    last_stats: SolveStats

    @property
    def nfe_forward(self) -> int:
        return self.last_stats.nfe_forward

    @property
    def nfe_backward(self) -> int:
        return self.last_stats.nfe_backward
