"""Builders for dense-output weight matrices (see ``tableau.py`` for the convention)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.polynomial import polynomial as P


def _power_row(poly: np.ndarray, degree: int) -> np.ndarray:
    """Coefficients of theta^1..theta^degree of a polynomial with no constant term."""
    poly = np.trim_zeros(np.asarray(poly, dtype=np.float64), "b")
    if poly.size and abs(poly[0]) > 1e-14:
        raise ValueError("a dense-output polynomial must vanish at theta=0")
    out = np.zeros(degree)
    out[: max(poly.size - 1, 0)] = poly[1:]
    return out


def hermite_weights(b: Sequence[float], fsal: bool) -> np.ndarray:
    """Cubic Hermite interpolation through (y0, f0) and (y1, f1), written over the stages.

    y(theta) = y0 + h01 (y1 - y0) + dt (h10 f0 + h11 f1) with y1 - y0 = dt sum_i b_i k_i and f0 = k_0.
    Third-order accurate: enough for methods of order <= 3.
    """
    s = len(b)
    h01 = np.array([0.0, 0.0, 3.0, -2.0])  # 3 theta^2 - 2 theta^3
    h10 = np.array([0.0, 1.0, -2.0, 1.0])  # theta - 2 theta^2 + theta^3
    h11 = np.array([0.0, 0.0, -1.0, 1.0])  # -theta^2 + theta^3
    rows = s if fsal else s + 1
    w = np.zeros((rows, 3))
    for i, bi in enumerate(b):
        w[i] += bi * _power_row(h01, 3)
    w[0] += _power_row(h10, 3)
    w[rows - 1] += _power_row(h11, 3)  # f1 is the FSAL stage, or the appended f(t1, y1)
    return w


def weights_from_polynomials(polys: Sequence[Sequence[float]]) -> np.ndarray:
    """Stack per-stage b_i(theta) polynomials (ascending power coefficients) into a weight matrix."""
    degree = max(len(np.trim_zeros(np.asarray(p, dtype=np.float64), "b")) for p in polys) - 1
    return np.stack([_power_row(p, degree) for p in polys])


def poly_product(scale: float, theta_power: int, *factors: Sequence[float]) -> np.ndarray:
    """scale * theta^theta_power * prod(factors), factors in ascending powers: Tsit5's published form."""
    poly = np.zeros(theta_power + 1)
    poly[theta_power] = scale
    for factor in factors:
        poly = P.polymul(poly, factor)
    return poly


def nested_weights(f_rows: np.ndarray) -> np.ndarray:
    """Weights for Hairer's nested DOP853 interpolant.

    Hairer's ``CONTD8`` evaluates y0 + x(F0 + (1-x)(F1 + x(F2 + (1-x)(F3 + ...)))) with the F_j
    linear in the stages (``f_rows[j]`` = coefficients of F_j / dt). Expanding the nest gives the
    multiplier polynomial of each F_j; the stage weights are their combination.
    """
    x, one_minus_x = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    multiplier = np.array([1.0])
    polys = []
    for j in range(f_rows.shape[0]):
        multiplier = P.polymul(multiplier, x if j % 2 == 0 else one_minus_x)
        polys.append(multiplier)
    degree = len(polys[-1]) - 1
    power = np.stack([_power_row(p, degree) for p in polys])  # (n_F, degree)
    return f_rows.T @ power
