"""Butcher tableaux: a Runge-Kutta method as data, checked for consistency when it is built.

A method is ``c``, the strictly lower-triangular ``a``, the solution weights ``b`` and, for adaptive
methods, the error weights ``b_err = b - b_low`` of an embedded lower-order solution. Dense output
(continuous extension) is a matrix ``weights`` such that, over one step of size ``dt``,

    y(t0 + theta * dt) = y0 + dt * sum_i b_i(theta) k_i,    b_i(theta) = sum_j weights[i, j] theta^(j+1)

where ``k`` are the stages, then ``f(t1, y1)`` for methods that are not FSAL, then any extra stages
that only the interpolant needs (DOP853 has three).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

_TOL = 1e-10  # consistency tolerance; published coefficients carry 16+ digits


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"Butcher tableau {name!r} is inconsistent: {message}")


@dataclass(frozen=True, eq=False)
class DenseOutput:
    """A continuous extension of a Runge-Kutta method (see the module docstring).

    Attributes:
        weights: (n_dense_stages, degree) power-basis coefficients of b_i(theta), no constant term.
        order: the interpolant's order of accuracy.
        extra_c, extra_a: stages evaluated only when a step must be interpolated; row j of
            ``extra_a`` has one entry per earlier dense stage.
    """

    weights: np.ndarray
    order: int
    extra_c: tuple[float, ...] = ()
    extra_a: tuple[tuple[float, ...], ...] = ()

    @property
    def degree(self) -> int:
        return self.weights.shape[1]


@dataclass(frozen=True, eq=False)
class ButcherTableau:
    """An explicit Runge-Kutta method; validated on construction.

    Build one with :meth:`from_lists`, which accepts the textbook form (``b_low``) or ``b_err``.
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_err: tuple[float, ...] | None = None
    embedded_order: int | None = None
    # DOP853 combines its 5th-order error with a 3rd-order one (Hairer et al., Solving ODEs I, II.10).
    b_err_secondary: tuple[float, ...] | None = None
    dense: DenseOutput | None = None
    fsal: bool = field(init=False)

    @classmethod
    def from_lists(
        cls,
        name: str,
        *,
        c: Sequence[float],
        a: Sequence[Sequence[float]],
        b: Sequence[float],
        order: int,
        b_low: Sequence[float] | None = None,
        b_err: Sequence[float] | None = None,
        embedded_order: int | None = None,
        b_err_secondary: Sequence[float] | None = None,
        dense: DenseOutput | None = None,
    ) -> ButcherTableau:
        """Build a tableau; ``a`` may be given as ragged rows (row i has i entries)."""
        if b_low is not None and b_err is not None:
            raise ValueError("give either b_low or b_err, not both")
        if b_low is not None:
            b_err = [bi - bl for bi, bl in zip(b, b_low, strict=True)]
        return cls(
            name=name,
            c=tuple(float(x) for x in c),
            a=tuple(tuple(float(x) for x in row) for row in a),
            b=tuple(float(x) for x in b),
            order=order,
            b_err=None if b_err is None else tuple(float(x) for x in b_err),
            embedded_order=embedded_order,
            b_err_secondary=None if b_err_secondary is None else tuple(float(x) for x in b_err_secondary),
            dense=dense,
        )

    def __post_init__(self) -> None:
        s, name = len(self.c), self.name
        _check(s >= 1 and self.c[0] == 0.0, name, "c must start with 0 (first stage is f(t0, y0))")
        _check(len(self.a) == s, name, f"a has {len(self.a)} rows, c has {s} entries")
        for i, row in enumerate(self.a):
            _check(len(row) == i, name, f"row {i} of a must have {i} entries (explicit method)")
            _check(abs(sum(row) - self.c[i]) < _TOL, name, f"row {i} of a sums to {sum(row)}, c={self.c[i]}")
        _check(len(self.b) == s, name, f"b has {len(self.b)} entries, expected {s}")
        _check(abs(sum(self.b) - 1.0) < _TOL, name, f"weights b sum to {sum(self.b)}, not 1")
        for label, err in (("b_err", self.b_err), ("b_err_secondary", self.b_err_secondary)):
            if err is not None:
                _check(len(err) == s, name, f"{label} has {len(err)} entries, expected {s}")
                _check(abs(sum(err)) < _TOL, name, f"{label} sums to {sum(err)}, not 0")
        _check((self.b_err is None) == (self.embedded_order is None), name, "b_err needs embedded_order")
        fsal = (
            s > 1
            and self.c[-1] == 1.0
            and self.b[-1] == 0.0
            and all(abs(x - y) < _TOL for x, y in zip(self.a[-1], self.b[:-1]))
        )
        object.__setattr__(self, "fsal", fsal)
        if self.dense is not None:
            self._check_dense()

    @property
    def num_stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None

    @property
    def num_dense_stages(self) -> int:
        """Stages the interpolant combines: k, then f(t1, y1) unless FSAL, then the extra stages."""
        extra = 0 if self.dense is None else len(self.dense.extra_c)
        return self.num_stages + (0 if self.fsal else 1) + extra

    def _check_dense(self) -> None:
        dense, name = self.dense, self.name
        n = self.num_dense_stages
        _check(
            dense.weights.shape[0] == n, name, f"dense weights need {n} rows, got {dense.weights.shape[0]}"
        )
        at_one = dense.weights.sum(axis=1)  # b_i(1): the interpolant must reproduce y1
        target = np.zeros(n)
        target[: self.num_stages] = self.b
        _check(np.allclose(at_one, target, atol=1e-9), name, "dense output at theta=1 does not equal y1")
        first = self.num_stages + (0 if self.fsal else 1)
        for j, (cj, row) in enumerate(zip(dense.extra_c, dense.extra_a, strict=True)):
            _check(len(row) == first + j, name, f"extra dense stage {j} needs {first + j} coefficients")
            _check(abs(sum(row) - cj) < _TOL, name, f"extra dense stage {j} row sum differs from c")
