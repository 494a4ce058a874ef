"""Prototype adaptive Kvaerno loop on Robertson's kinetics to t=1e5 against SciPy Radau (rtol=1e-10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralode.solvers.esdirk import solve_to
from neuralode.solvers.esdirk_tableaux import KVAERNO3, KVAERNO5

scipy_integrate = pytest.importorskip("scipy.integrate")


def _robertson(t, y, perturb=0.0):
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2])


def _robertson_np(t, y):
    return _robertson(t, torch.as_tensor(y)).numpy()


@pytest.mark.parametrize("tab", [KVAERNO3, KVAERNO5], ids=lambda t: t.name)
def test_robertson_against_radau(tab) -> None:
    y0 = np.array([1.0, 0.0, 0.0])
    ref = scipy_integrate.solve_ivp(_robertson_np, (0.0, 1e5), y0, method="Radau", rtol=1e-10, atol=1e-14).y[
        :, -1
    ]
    rtol, atol = 1e-6, 1e-10
    y, acc, rej = solve_to(_robertson, tab, 0.0, 1e5, torch.tensor(y0), rtol, atol, dt0=1e-6)
    err = np.abs(y.numpy() - ref) / (atol + rtol * np.abs(ref))
    print(tab.name, "accepted", acc, "rejected", rej, "max scaled error", err.max())
    assert err.max() < 10.0


def _vdp(t, y, perturb=0.0):
    return torch.stack([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])


@pytest.mark.parametrize("tab", [KVAERNO5], ids=lambda t: t.name)
def test_van_der_pol_mu1000_against_radau(tab) -> None:
    y0, t1 = np.array([2.0, 0.0]), 1000.0
    ref = scipy_integrate.solve_ivp(
        lambda t, y: _vdp(t, torch.as_tensor(y)).numpy(),
        (0.0, t1),
        y0,
        method="Radau",
        rtol=1e-10,
        atol=1e-12,
    ).y[:, -1]
    rtol, atol = 1e-6, 1e-9
    y, acc, rej = solve_to(_vdp, tab, 0.0, t1, torch.tensor(y0), rtol, atol, dt0=1e-4)
    err = np.abs(y.numpy() - ref) / (atol + rtol * np.abs(ref))
    print(tab.name, "vdp accepted", acc, "rejected", rej, "max scaled error", err.max())
    assert err.max() < 10.0


def test_robertson_float32() -> None:
    y0 = np.array([1.0, 0.0, 0.0])
    ref = scipy_integrate.solve_ivp(_robertson_np, (0.0, 1e3), y0, method="Radau", rtol=1e-10, atol=1e-14).y[
        :, -1
    ]
    rtol, atol = 1e-4, 1e-7
    y, _, _ = solve_to(
        _robertson, KVAERNO5, 0.0, 1e3, torch.tensor(y0, dtype=torch.float32), rtol, atol, 1e-5
    )
    assert y.dtype == torch.float32
    err = np.abs(y.double().numpy() - ref) / (atol + rtol * np.abs(ref))
    assert err.max() < 10.0
