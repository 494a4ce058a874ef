"""Kvaerno ESDIRK tableaux: order conditions (all rooted trees), embedded order, L-stability."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from neuralode.solvers.esdirk_tableaux import KVAERNO3, KVAERNO5


def _trees(n: int) -> list[tuple]:
    """Rooted trees with n nodes, each a sorted tuple of child trees (canonical form)."""
    if n == 1:
        return [()]
    out: set[tuple] = set()

    def parts(remaining: int, smallest: int):
        if remaining == 0:
            yield []
            return
        for k in range(smallest, remaining + 1):
            for rest in parts(remaining - k, k):
                yield [k, *rest]

    for sizes in parts(n - 1, 1):
        for children in itertools.product(*(_trees(k) for k in sizes)):
            out.add(tuple(sorted(children)))
    return sorted(out)


def _order(t: tuple) -> int:
    return 1 + sum(_order(ch) for ch in t)


def _density(t: tuple) -> int:
    return _order(t) * math.prod(_density(ch) for ch in t)


def _stage_weights(t: tuple, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per-stage elementary weight of tree t (its root at the stage)."""
    w = np.ones(len(c))
    for ch in t:
        w = w * (a @ _stage_weights(ch, a, c))
    return w


def _satisfied(b, a, c, p: int) -> list[tuple[int, float]]:
    a, b, c = np.array(a), np.array(b), np.array(c)
    bad = []
    for n in range(1, p + 1):
        for t in _trees(n):
            r = b @ _stage_weights(t, a, c) - 1.0 / _density(t)
            if abs(r) > 1e-9:
                bad.append((n, r))
    return bad


@pytest.mark.parametrize("tab", [KVAERNO3, KVAERNO5], ids=lambda t: t.name)
def test_order_conditions(tab) -> None:
    assert len(_trees(5)) == 9 and len(_trees(4)) == 4  # the rooted-tree counts 1, 1, 2, 4, 9
    assert _satisfied(tab.b, tab.a, tab.c, tab.order) == []
    assert _satisfied(tab.b_hat, tab.a, tab.c, tab.embedded_order) == []
    # Orders are exact: the next order fails, so the error estimate is of order p - 1.
    assert _satisfied(tab.b, tab.a, tab.c, tab.order + 1) != []
    assert _satisfied(tab.b_hat, tab.a, tab.c, tab.embedded_order + 1) != []


@pytest.mark.parametrize("tab", [KVAERNO3, KVAERNO5], ids=lambda t: t.name)
def test_structure_and_l_stability(tab) -> None:
    a, b = np.array(tab.a), np.array(tab.b)
    np.testing.assert_allclose(a.sum(1), tab.c, atol=1e-12)
    np.testing.assert_array_equal(a[-1], b)  # stiffly accurate
    assert a[0, 0] == 0.0 and np.allclose(np.diag(a)[1:], tab.gamma)
    one = np.ones(len(b))

    def stability(z: complex) -> complex:
        return 1 + z * b @ np.linalg.solve(np.eye(len(b)) - z * a, one)

    assert abs(stability(-1e8)) < 1e-6
    for y in np.logspace(-3, 4, 200):  # A-stable: |R| <= 1 on the imaginary axis
        assert abs(stability(1j * y)) <= 1 + 1e-12
    for x in -np.logspace(-2, 6, 50):
        assert abs(stability(x)) <= 1 + 1e-12


def test_rejects_inconsistent_tableau() -> None:
    from neuralode.solvers.esdirk_tableaux import ESDIRKTableau

    with pytest.raises(ValueError, match="sum to c"):
        ESDIRKTableau("bad", 0.5, (0.0, 0.4), ((0.0, 0.0), (0.0, 0.5)), (0.0, 1.0), (0.5, 0.5), 1, 0)
