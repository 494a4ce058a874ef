"""Step callbacks on func, as in torchdiffeq: counts, arguments, the adjoint versions and warnings."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch import nn

from neuralode import SolveStats, odeint, odeint_adjoint

from .conftest import ADAMS_METHODS, IMPLICIT_METHODS

F64 = torch.float64


class Recording(nn.Module):
    """dy/dt = -w y, recording every callback as (name, t, dt)."""

    def __init__(self, names=("step", "accept", "reject"), adjoint=False) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.5, dtype=F64))
        self.log = []
        for name in names:
            attr = f"callback_{name}" if name == "step" else f"callback_{name}_step"
            setattr(self, attr, self._recorder(name))
            if adjoint:
                setattr(self, attr + "_adjoint", self._recorder(name + "_adjoint"))

    def _recorder(self, name):
        def record(t0, y0, dt):
            assert isinstance(t0, torch.Tensor) and isinstance(dt, torch.Tensor)
            self.log.append((name, float(t0), float(dt), y0))

        return record

    def forward(self, t, y):
        return -self.w * y

    def names(self, name):
        return [entry for entry in self.log if entry[0] == name]


@pytest.mark.parametrize(
    "method", ["euler", "rk4", "explicit_adams", "implicit_adams", "radauIIA5", "trbdf2"]
)
def test_fixed_step_of_a_tenth_on_the_unit_interval_calls_callback_step_ten_times(method):
    f = Recording(names=("step",))
    odeint(f, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method=method,
           options={"step_size": 0.1})  # fmt: skip
    steps = f.names("step")
    assert len(steps) == 10
    assert [s[1] for s in steps] == pytest.approx([0.1 * i for i in range(10)])
    assert all(s[2] == pytest.approx(0.1) for s in steps)


def test_adaptive_callbacks_match_the_step_counts():
    f, stats = Recording(), SolveStats()
    odeint(
        f,
        torch.ones(2, dtype=F64),
        torch.tensor([0.0, 3.0], dtype=F64),
        rtol=1e-8,
        atol=1e-10,
        options={"first_step": 1.0},
        stats=stats,
    )  # fmt: skip  (a first step too large: a rejection)
    assert len(f.names("step")) == stats.forward.n_steps
    assert len(f.names("accept")) == stats.forward.n_accepted
    assert len(f.names("reject")) == stats.forward.n_rejected >= 1
    accepted = f.names("accept")
    for (_, t0, dt, _), (_, t1, _, _) in itertools.pairwise(accepted):
        assert t0 + dt == pytest.approx(t1)  # each accepted step starts where the previous ended
    y = f.names("step")[0][3]
    assert y.shape == (2,) and torch.equal(y, torch.ones(2, dtype=F64))


def test_adjoint_backward_calls_the_adjoint_callbacks_with_the_augmented_state():
    f, stats = Recording(adjoint=True), SolveStats()
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    ys = odeint_adjoint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-6, atol=1e-8, stats=stats)
    forward_steps = len(f.names("step"))
    ys[-1].sum().backward()
    assert len(f.names("step")) == forward_steps  # the backward solve calls only the _adjoint ones
    back = f.names("step_adjoint")
    assert len(back) == stats.backward.n_steps
    assert len(f.names("accept_adjoint")) == stats.backward.n_accepted
    assert back[0][1] == pytest.approx(1.0) and back[0][2] < 0  # backwards from t=1
    y, a, a_w = back[0][3]
    assert y.shape == a.shape == (2,) and a_w.shape == ()
    torch.testing.assert_close(a, torch.ones(2, dtype=F64))  # dL/dy(1) for L = sum(y(1))


@pytest.mark.parametrize("method", ["rk4", *ADAMS_METHODS, *IMPLICIT_METHODS[:1]])
def test_fixed_grid_method_warns_once_that_it_cannot_accept_or_reject(method):
    f = Recording()
    with pytest.warns(UserWarning, match=rf"method='{method}' cannot honour func.callback_") as rec:
        odeint(f, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method=method,
               options={"step_size": 0.1})  # fmt: skip
    assert len([w for w in rec if "callback_accept_step" in str(w.message)]) == 1
    assert len([w for w in rec if "callback_reject_step" in str(w.message)]) == 1
    assert len(f.names("step")) == 10 and not f.names("accept")


def test_adaptive_method_with_every_callback_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        odeint(Recording(), torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))


def test_non_callable_callback_attribute_raises_type_error():
    f = Recording(names=())
    f.callback_step = 3
    with pytest.raises(TypeError, match=r"^func.callback_step must be callable"):
        odeint(f, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
