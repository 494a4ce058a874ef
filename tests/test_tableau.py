"""Tableaux validate themselves, and the engine evaluates stages where the tableau says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralode import SOLVERS, odeint
from neuralode.solvers import ButcherTableau

from .conftest import EXPLICIT_ADAPTIVE_METHODS


def test_row_sum_mismatch_is_rejected():
    with pytest.raises(ValueError, match="row 1 of a sums"):
        ButcherTableau.from_lists("bad", c=[0.0, 0.5], a=[[], [0.4]], b=[0.0, 1.0], order=2)


def test_weights_not_summing_to_one_are_rejected():
    with pytest.raises(ValueError, match="weights b sum"):
        ButcherTableau.from_lists("bad", c=[0.0, 0.5], a=[[], [0.5]], b=[0.1, 1.0], order=2)


def test_error_weights_must_sum_to_zero():
    with pytest.raises(ValueError, match="b_err sums"):
        ButcherTableau.from_lists(
            "bad", c=[0.0, 1.0], a=[[], [1.0]], b=[0.5, 0.5], b_err=[0.1, 0.0], order=2, embedded_order=1
        )


@pytest.mark.parametrize("method", EXPLICIT_ADAPTIVE_METHODS)
def test_registered_dense_output_reproduces_the_step_end(method):
    tableau = SOLVERS[method].tableau
    at_one = tableau.dense.weights.sum(axis=1)[: tableau.num_stages]
    np.testing.assert_allclose(at_one, tableau.b, atol=1e-9)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dopri8", "rk4", "heun3"])
def test_stages_are_evaluated_at_t0_plus_c_dt(method):
    """One step from t0=0.25 with dt=0.5: func sees exactly t0 + c_i dt, in order (torchode's check)."""
    tableau = SOLVERS[method].tableau
    seen = []

    def f(t, y):
        seen.append(float(t))
        return -y

    y0 = torch.ones(1, dtype=torch.float64)
    t = torch.tensor([0.25, 0.75], dtype=torch.float64)
    if tableau.adaptive:
        odeint(f, y0, t, method=method, rtol=1e3, atol=1e3, options={"first_step": 0.5})
        seen = seen[: tableau.num_stages]  # one accepted step (huge tolerance), then nothing more
    else:
        odeint(f, y0, t, method=method, options={"step_size": 0.5})
    expected = [0.25 + c * 0.5 for c in tableau.c]
    assert seen[: len(expected)] == pytest.approx(expected, abs=1e-15)


def test_fixed_grid_step_count_for_a_step_that_divides_the_interval():
    calls = []
    odeint(lambda t, y: calls.append(1) or -y, torch.ones(1), torch.tensor([0.0, 1.0]), method="euler",
           options={"step_size": 0.1})  # fmt: skip
    assert len(calls) == 10
