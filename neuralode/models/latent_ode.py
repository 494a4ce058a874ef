"""The latent ODE of Section 5 of the paper: a generative model of irregularly sampled time series.

An RNN run backwards in time over the observations (with the time gaps as input) gives q(z_t0 | x); one
ODE solve from z_t0 gives the latent state at every requested time; a decoder maps each latent state to
the observation space. Training maximises the ELBO. An optional event-rate head lambda(z(t)) adds the
Poisson process likelihood of Section 5.1, its integral carried as one more state of the same solve.
How that solve runs and is differentiated is one frozen :class:`~neuralode.SolverConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..solver_config import SolverConfig
from ..stats import LastSolveStats, SolveStats

PAPER_SOLVER = SolverConfig(rtol=1.5e-8, atol=1.5e-8)  # dopri5 with the adjoint, the paper's tolerance


def time_gaps(times: Tensor) -> Tensor:
    """``(b, n)`` gaps: each observation's time minus the previous one's (the first minus t0 = 0)."""
    return times - torch.cat([torch.zeros_like(times[:, :1]), times[:, :-1]], dim=1)


ENCODER_CELLS = {"rnn": nn.RNNCell, "gru": nn.GRUCell}


class RecognitionRNN(nn.Module):
    """Encoder: an RNN over (x_i, gap_i) from the last observation to the first; gives (mean, logvar).

    ``cell="rnn"`` is the reference code's tanh RNN; ``"gru"`` trains more stably over long sequences.
    """

    def __init__(self, latent_dim: int = 4, obs_dim: int = 2, hidden: int = 25, cell: str = "rnn") -> None:
        super().__init__()
        if cell not in ENCODER_CELLS:
            raise ValueError(f"encoder cell must be one of {sorted(ENCODER_CELLS)}, got {cell!r}")
        self.hidden = hidden
        self.cell = ENCODER_CELLS[cell](obs_dim + 1, hidden)
        self.out = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x: Tensor, times: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x`` (b, n, obs_dim) observed at ``times`` (b, n) -> mean, logvar of z_t0, each (b, latent_dim).

        ``mask`` (b, n) bool hides observations from the encoder (a hidden step leaves the state unchanged);
        it must hide a suffix of each series, so that the gaps between the visible ones stay right.
        """
        gaps = time_gaps(times)
        h = x.new_zeros(x.shape[0], self.hidden)
        for i in reversed(range(x.shape[1])):
            new = self.cell(torch.cat([x[:, i], gaps[:, i : i + 1]], dim=-1), h)
            h = new if mask is None else torch.where(mask[:, i : i + 1], new, h)
        mean, logvar = self.out(h).chunk(2, dim=-1)
        return mean, logvar


class LatentDynamics(nn.Module):
    """Time-invariant dynamics dz/dt = f(z): one hidden layer (ELU)."""

    def __init__(self, latent_dim: int = 4, hidden: int = 20) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ELU(), nn.Linear(hidden, latent_dim))

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.net(z)


class RateAugmentedDynamics(nn.Module):
    """Dynamics of [z, Lambda] with dLambda/dt = lambda(z): the intensity's integral rides along the solve."""

    def __init__(self, dynamics: nn.Module, log_rate: nn.Module) -> None:
        super().__init__()
        self.dynamics, self.log_rate = dynamics, log_rate

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        z = state[..., :-1]
        return torch.cat([self.dynamics(t, z), self.log_rate(z).exp()], dim=-1)


ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}


def mlp(inputs: int, hidden: int, outputs: int, activation: str = "relu") -> nn.Sequential:
    """One hidden layer with ``activation`` ("relu", "elu" or "tanh")."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return nn.Sequential(nn.Linear(inputs, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, outputs))


def gaussian_log_likelihood(x: Tensor, mean: Tensor, std: float) -> Tensor:
    """Elementwise log N(x | mean, std^2)."""
    return -0.5 * (((x - mean) / std) ** 2 + 2 * math.log(std) + math.log(2 * math.pi))


def kl_standard_normal(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per row, summed over the last dimension (always >= 0)."""
    return 0.5 * (logvar.exp() + mean**2 - 1.0 - logvar).sum(dim=-1)


@dataclass
class ElboTerms:
    """Per-series means: the ELBO and its parts (the event term is 0 without the rate head)."""

    elbo: Tensor
    log_likelihood: Tensor
    kl: Tensor
    event_log_likelihood: Tensor

    def scalars(self) -> dict[str, float]:
        return {
            "elbo": self.elbo.item(), "log_likelihood": self.log_likelihood.item(), "kl": self.kl.item(),
            "event_log_likelihood": self.event_log_likelihood.item(),
        }  # fmt: skip


class LatentODE(LastSolveStats, nn.Module):
    """Encoder, ODE dynamics and decoder (the paper's sizes are the defaults: 4 / 25 / 20 / 20).

    Observations are given as values ``x`` (b, n, obs_dim) and their positions ``index`` (b, n) on a time
    grid ``times`` (T,) shared by the batch, with ``times[0] = t0``; one solve serves the whole batch,
    by ``solver`` (method, tolerances, gradient strategy; the paper's by default). ``last_stats`` holds
    the last solve's :class:`SolveStats` (for NFE logging). With a regularization in ``solver``, its
    penalties are integrated along the latent solve (of the whole state, the intensity's integral
    included when ``event_rate``): ``last_regularization`` is the last solve's weighted penalty
    (differentiable, 0 without one) and ``last_penalties`` its terms; the training loss adds it.
    """

    def __init__(
        self,
        latent_dim: int = 4,
        obs_dim: int = 2,
        encoder_hidden: int = 25,
        dynamics_hidden: int = 20,
        decoder_hidden: int = 20,
        *,
        solver: SolverConfig = PAPER_SOLVER,
        event_rate: bool = False,
        rate_hidden: int = 20,
        encoder_cell: str = "rnn",
        decoder_activation: str = "relu",
    ) -> None:
        super().__init__()
        if not isinstance(solver, SolverConfig):
            raise TypeError(
                f"solver must be a neuralode.SolverConfig, got {type(solver).__name__} "
                "(from a config mapping: SolverConfig.from_dict)"
            )
        self.solver = solver
        self.latent_dim = latent_dim
        self.encoder = RecognitionRNN(latent_dim, obs_dim, encoder_hidden, encoder_cell)
        self.dynamics = LatentDynamics(latent_dim, dynamics_hidden)
        self.decoder = mlp(latent_dim, decoder_hidden, obs_dim, decoder_activation)
        self.log_rate = mlp(latent_dim, rate_hidden, 1) if event_rate else None
        self.ode_func: nn.Module = (
            self.dynamics if self.log_rate is None else RateAugmentedDynamics(self.dynamics, self.log_rate)
        )
        self.last_stats = SolveStats()
        self.last_regularization: Tensor = torch.zeros(())
        self.last_penalties: dict[str, Tensor] = {}

    def posterior(
        self, x: Tensor, index: Tensor, times: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z_t0 | x) (of the observations ``mask`` keeps, if given)."""
        return self.encoder(x, times[index], mask)

    def solve(self, z0: Tensor, times: Tensor) -> Tensor:
        """``(T, b, latent_dim [+1])``: the latent state (and the intensity's integral) at every time."""
        state = z0 if self.log_rate is None else torch.cat([z0, z0.new_zeros(z0.shape[0], 1)], dim=-1)
        stats = SolveStats()
        solution = self.solver.solve_regularized(self.ode_func, state, times, stats=stats)
        self.last_stats, self.last_penalties = stats, solution.penalties
        self.last_regularization = solution.total
        return solution.ys

    def elbo(
        self,
        x: Tensor,
        index: Tensor,
        times: Tensor,
        likelihood_std: float,
        events: Tensor | None = None,
        encoder_mask: Tensor | None = None,
    ) -> ElboTerms:
        """The ELBO with one sample of z_t0 (reparameterised), plus the Poisson term when ``events`` is given.

        ``times`` only needs to reach the last observation. ``events`` (b, T) counts the events at each grid
        time; the process is observed over [times[0], times[-1]]. With ``encoder_mask`` the encoder sees only
        a prefix of each series while the likelihood scores all of it: a lower bound on log p(x) all the
        same (any q is allowed), and one that rewards dynamics that forecast.
        """
        mean, logvar = self.posterior(x, index, times, encoder_mask)
        z0 = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        path = self.solve(z0, times)
        z = path[..., : self.latent_dim]
        predicted = self.decoder(z).transpose(0, 1)  # (b, T, obs_dim)
        chosen = predicted.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        log_likelihood = gaussian_log_likelihood(x, chosen, likelihood_std).sum(dim=(1, 2))
        kl = kl_standard_normal(mean, logvar)
        event_ll = torch.zeros_like(kl)
        if events is not None:
            event_ll = self.event_log_likelihood(path, events)
        elbo = log_likelihood + event_ll - kl
        return ElboTerms(elbo.mean(), log_likelihood.mean(), kl.mean(), event_ll.mean())

    def event_log_likelihood(self, path: Tensor, events: Tensor) -> Tensor:
        """Poisson process log-likelihood per series: sum of log lambda at the events minus its integral."""
        if self.log_rate is None:
            raise ValueError("events need the event-rate head: build LatentODE(..., event_rate=True)")
        log_rate = self.log_rate(path[..., : self.latent_dim]).squeeze(-1).transpose(0, 1)  # (b, T)
        integral = path[-1, :, -1]
        return (events * log_rate).sum(dim=1) - integral

    @torch.no_grad()
    def predict(self, x: Tensor, index: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
        """Decoded trajectory ``(b, T, obs_dim)`` from the posterior mean, and the latent path."""
        mean, _ = self.posterior(x, index, times)
        path = self.solve(mean, times)
        return self.decoder(path[..., : self.latent_dim]).transpose(0, 1), path

    @torch.no_grad()
    def intensity(self, path: Tensor) -> Tensor:
        """lambda(z(t)) along a solved ``path`` -> (b, T)."""
        if self.log_rate is None:
            raise ValueError("intensity needs the event-rate head: build LatentODE(..., event_rate=True)")
        return self.log_rate(path[..., : self.latent_dim]).exp().squeeze(-1).transpose(0, 1)

    def extra_repr(self) -> str:
        return self.solver.describe()
