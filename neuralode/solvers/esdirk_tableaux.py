"""Adaptive L-stable ESDIRK tableaux with embedded error estimates (Kvaerno 2004).

Kvaerno, "Singly diagonally implicit Runge-Kutta methods with an explicit first stage", BIT 44
(2004) 489-502; coefficients as published there and in diffrax (``Kvaerno3``, ``Kvaerno5``). Both
methods are stiffly accurate (b is the last row of a), L-stable, with an explicit first stage and the
same diagonal ``gamma`` on every implicit stage, so one factorisation of (I - dt*gamma*J) serves all
stages of a step. The embedded solution ``b_hat`` is the second-to-last row of ``a`` (order p - 1).
Only the tableaux live here; :mod:`esdirk` steps them and :mod:`esdirk_methods` registers them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_TOL = 1e-10


@dataclass(frozen=True, eq=False)
class ESDIRKTableau:
    """An explicit-first-stage singly diagonally implicit RK pair: full lower-triangular ``a``."""

    name: str
    gamma: float
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_hat: tuple[float, ...]
    order: int
    embedded_order: int

    def __post_init__(self) -> None:
        a = np.array(self.a)
        s = len(self.c)
        if a.shape != (s, s) or len(self.b) != s or len(self.b_hat) != s:
            raise ValueError(f"ESDIRK tableau {self.name!r}: a must be s x s and b, b_hat length s={s}")
        if np.any(np.abs(np.triu(a, 1)) > 0) or a[0, 0] != 0.0:
            raise ValueError(f"ESDIRK tableau {self.name!r}: a must be lower triangular, stage 1 explicit")
        if np.any(np.abs(np.diag(a)[1:] - self.gamma) > _TOL):
            raise ValueError(f"ESDIRK tableau {self.name!r}: every implicit stage needs diagonal gamma")
        if np.any(np.abs(a.sum(1) - np.array(self.c)) > _TOL):
            raise ValueError(f"ESDIRK tableau {self.name!r}: rows of a must sum to c")

    @property
    def num_stages(self) -> int:
        """Number of stages s (the first one explicit)."""
        return len(self.c)

    @property
    def b_error(self) -> tuple[float, ...]:
        """Weights of the error estimate y1 - y1_hat = dt * sum_i (b_i - b_hat_i) k_i."""
        return tuple(x - y for x, y in zip(self.b, self.b_hat))


def _stiffly_accurate(name, gamma, lower, c, order):
    s = len(lower) + 1
    a = np.zeros((s, s))
    for i, row in enumerate(lower, start=1):
        a[i, : len(row)] = row
        a[i, i] = gamma
    return ESDIRKTableau(
        name=name,
        gamma=gamma,
        c=tuple(float(x) for x in c),
        a=tuple(tuple(float(x) for x in r) for r in a),
        b=tuple(float(x) for x in a[-1]),
        b_hat=tuple(float(x) for x in a[-2]),
        order=order,
        embedded_order=order - 1,
    )


_G3 = 0.43586652150
KVAERNO3 = _stiffly_accurate(
    "kvaerno3",
    _G3,
    [
        [_G3],
        [(-4 * _G3**2 + 6 * _G3 - 1) / (4 * _G3), (-2 * _G3 + 1) / (4 * _G3)],
        [
            (6 * _G3 - 1) / (12 * _G3),
            -1 / ((24 * _G3 - 12) * _G3),
            (-6 * _G3**2 + 6 * _G3 - 1) / (6 * _G3 - 3),
        ],
    ],
    c=[0.0, 2 * _G3, 1.0, 1.0],
    order=3,
)
KVAERNO5 = _stiffly_accurate(
    "kvaerno5",
    0.26,
    [
        [0.26],
        [0.13, 0.84033320996790809],
        [0.22371961478320505, 0.47675532319799699, -0.06470895363112615],
        [0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998],
        [0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676],
        [
            0.13659751177640291,
            0.0,
            -0.05496908796538376,
            -0.04118626728321046,
            0.62993304899016403,
            0.06962479448202728,
        ],
    ],
    c=[0.0, 0.52, 1.230333209967908, 0.8957659843500759, 0.43639360985864756, 1.0, 1.0],
    order=5,
)
