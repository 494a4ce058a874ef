"""Test problems with independent reference solutions (closed forms, SciPy)."""

from __future__ import annotations

import numpy as np
import scipy.integrate
import scipy.linalg
import torch
from torch import nn

# A damped rotation coupled to a decaying mode: y' = M y, exact solution expm(M t) y0.
LINEAR_M = np.array([[-0.5, 3.0, 0.0], [-3.0, -0.5, 1.0], [0.0, -1.0, -1.0]])
LINEAR_Y0 = np.array([1.0, 0.0, 0.5])


def linear_exact(t: float) -> np.ndarray:
    return scipy.linalg.expm(LINEAR_M * t) @ LINEAR_Y0


def linear_func(dtype=torch.float64):
    m = torch.tensor(LINEAR_M, dtype=dtype)
    return lambda t, y, perturb=0.0: y @ m.T  # engine-level signature (tests call rk_step directly)


def van_der_pol(mu: float = 1.0):
    def torch_f(t, y):
        return torch.stack([y[..., 1], mu * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], dim=-1)

    def np_f(t, y):
        return [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]

    return torch_f, np_f, np.array([2.0, 0.0])


def lotka_volterra(a=1.5, b=1.0, c=3.0, d=1.0):
    def torch_f(t, y):
        x, z = y[..., 0], y[..., 1]
        return torch.stack([a * x - b * x * z, -c * z + d * x * z], dim=-1)

    def np_f(t, y):
        return [a * y[0] - b * y[0] * y[1], -c * y[1] + d * y[0] * y[1]]

    return torch_f, np_f, np.array([1.0, 1.0])


def tanh_mlp(dim: int = 3, hidden: int = 16, seed: int = 0):
    """A small random time-dependent tanh MLP vector field, as torch and NumPy functions."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(hidden, dim + 1)) / np.sqrt(dim + 1)
    w2 = rng.normal(size=(dim, hidden)) / np.sqrt(hidden)
    b1 = rng.normal(size=hidden) * 0.1

    def np_f(t, y):
        y = np.asarray(y).reshape(-1, dim)
        h = np.tanh(np.concatenate([y, np.full((y.shape[0], 1), t)], axis=1) @ w1.T + b1)
        return (h @ w2.T).reshape(-1)

    tw1, tw2, tb1 = (torch.tensor(x) for x in (w1, w2, b1))

    def torch_f(t, y):
        tt = torch.ones_like(y[..., :1]) * t
        return torch.tanh(torch.cat([y, tt], dim=-1) @ tw1.T + tb1) @ tw2.T

    return torch_f, np_f


def scipy_reference(np_f, y0: np.ndarray, t: np.ndarray) -> np.ndarray:
    """DOP853 at rtol=1e-12 (forwards or backwards in time); shape (T, *y0.shape)."""
    sol = scipy.integrate.solve_ivp(
        np_f, (t[0], t[-1]), y0.reshape(-1), method="DOP853", t_eval=t, rtol=1e-12, atol=1e-14
    )
    assert sol.success, sol.message
    return sol.y.T.reshape(len(t), *y0.shape)


class Oscillator(nn.Module):
    """A damped oscillator with a tuple state (x, v) and one parameter, for tuple-state gradient tests."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(1.3, dtype=torch.float64))

    def forward(self, t, state):
        x, v = state
        return v, -self.k * x - 0.1 * v
