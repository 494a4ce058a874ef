"""The latent ODE's baseline: an RNN that reads observations with their time gaps and predicts what follows.

At each step the RNN reads (x_i, t_i - t_{i-1}); from its state and the gap to the next time it predicts
the change of x. Trained with teacher forcing on next-observation prediction, by one of the BPTT strategies
of :mod:`neuralode.models.bptt`; it extrapolates by feeding its own predictions back.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .bptt import BPTT
from .latent_ode import time_gaps

CELLS = {"rnn": nn.RNNCell, "gru": nn.GRUCell}
FULL_BPTT = BPTT("full")


class GapRNN(nn.Module):
    """A recurrent forecaster of irregularly sampled series (``cell`` "gru" or "rnn"; the paper: 25 units)."""

    def __init__(self, obs_dim: int = 2, hidden: int = 25, cell: str = "gru") -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.hidden = hidden
        self.cell = CELLS[cell](obs_dim + 1, hidden)
        self.head = nn.Linear(hidden + 1, obs_dim)

    def _next(self, h: Tensor, x: Tensor, gap: Tensor) -> Tensor:
        return x + self.head(torch.cat([h, gap.unsqueeze(-1)], dim=-1))

    def teacher_forced(
        self,
        x: Tensor,
        times: Tensor,
        bptt: BPTT = FULL_BPTT,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Predictions of ``x[:, 1:]`` from the observations before each: ``(b, n - 1, obs_dim)``.

        Where ``mask`` (b, n) is False the RNN reads its own previous prediction instead of the observation,
        so a mask that keeps a prefix trains it to forecast the rest free-running.
        """
        gaps = time_gaps(times)
        h = x.new_zeros(x.shape[0], self.hidden)
        predictions: list[Tensor] = []
        for i in range(x.shape[1] - 1):
            inputs = x[:, i]
            if mask is not None and i > 0:
                inputs = torch.where(mask[:, i : i + 1], inputs, predictions[-1])
            h = self.cell(torch.cat([inputs, gaps[:, i : i + 1]], dim=-1), bptt.carry(h, i, generator))
            predictions.append(self._next(h, inputs, times[:, i + 1] - times[:, i]))
        return torch.stack(predictions, dim=1)

    @torch.no_grad()
    def forecast(self, x: Tensor, times: Tensor, targets: Tensor) -> Tensor:
        """Read every observation, then predict ``targets`` (increasing, (m,) or (b, m)) one after another.

        Each prediction is fed back in as the next input. Returns ``(b, m, obs_dim)``.
        """
        b = x.shape[0]
        targets = targets.expand(b, -1) if targets.dim() == 1 else targets
        gaps = time_gaps(times)
        h = x.new_zeros(b, self.hidden)
        for i in range(x.shape[1]):
            h = self.cell(torch.cat([x[:, i], gaps[:, i : i + 1]], dim=-1), h)
        last_x, last_t = x[:, -1], times[:, -1]
        out = []
        for j in range(targets.shape[1]):
            gap = targets[:, j] - last_t
            last_x = self._next(h, last_x, gap)
            out.append(last_x)
            h = self.cell(torch.cat([last_x, gap.unsqueeze(-1)], dim=-1), h)
            last_t = targets[:, j]
        return torch.stack(out, dim=1)
